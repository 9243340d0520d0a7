// The tokenizer against ids derived by hand for tiny tokenizers (each expectation explained), the
// golden fixtures Hugging Face `tokenizers` wrote (scripts/make_tokenizer_fixtures.py), GGUF
// vocabularies written with the library's own writer, bad input, and streaming decoding.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "core/text.h"
#include "io/io_test_util.h"
#include "io/json_util.h"
#include "mlxn/io/gguf.h"
#include "mlxn/tokenizer/tokenizer.h"
#include "support/support.h"
#include "tokenizer/unicode.h"

using namespace mlxn;
using json = nlohmann::ordered_json;
using mlxn::test::TestDir;
using mlxn::test::throws_error;
using mlxn::text::cat;
using Ids = std::vector<int32_t>;

namespace {

// ---- tiny tokenizers ----

// GPT-2's byte -> character table, written out here independently of the library: printable
// Latin-1 bytes stand for themselves, the other 68 for U+0100.. in byte order.
std::string byte_char(int b) {
  static const std::vector<int> kCode = [] {
    std::vector<int> code(256);
    int next = 0x100;
    for (int i = 0; i < 256; ++i) {
      const bool printable = (i >= 0x21 && i <= 0x7e) || (i >= 0xa1 && i <= 0xac) || i >= 0xae;
      code[static_cast<size_t>(i)] = printable ? i : next++;
    }
    return code;
  }();
  std::string out;
  tokenizer_detail::append_utf8(out, static_cast<char32_t>(kCode[static_cast<size_t>(b)]));
  return out;
}

// Tokenizer A: GPT-2-style byte-level BPE. Ids 0-255 are the byte characters in byte order
// (id = byte value: 'h' = 104, space = 'Ġ' = 32), then one id per merge in rank order:
//   256 he, 257 ll, 258 hell, 259 hello, 260 Ġw, 261 or, 262 Ġwor, 263 ld, 264 Ġworld,
// and the special added token 265 <|endoftext|>, which the template puts first.
constexpr const char* kByteLevelSpec = R"({
  "version": "1.0", "truncation": null, "padding": null,
  "added_tokens": [{"id": 265, "content": "<|endoftext|>", "single_word": false, "lstrip": false,
                    "rstrip": false, "normalized": false, "special": true}],
  "normalizer": null,
  "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true,
                    "use_regex": true},
  "post_processor": {"type": "TemplateProcessing",
    "single": [{"SpecialToken": {"id": "<|endoftext|>", "type_id": 0}},
               {"Sequence": {"id": "A", "type_id": 0}}],
    "pair": [],
    "special_tokens": {"<|endoftext|>": {"id": "<|endoftext|>", "ids": [265],
                                         "tokens": ["<|endoftext|>"]}}},
  "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true,
              "use_regex": true},
  "model": {"type": "BPE", "dropout": null, "unk_token": null, "fuse_unk": false,
            "byte_fallback": false, "ignore_merges": false, "vocab": {},
            "merges": [["h", "e"], ["l", "l"], ["he", "ll"], ["hell", "o"], ["Ġ", "w"],
                       ["o", "r"], ["Ġw", "or"], ["l", "d"], ["Ġwor", "ld"]]}
})";

json byte_level_spec() {
  json spec = json::parse(kByteLevelSpec);
  json& vocab = spec["model"]["vocab"];
  for (int b = 0; b < 256; ++b) vocab[byte_char(b)] = b;
  int id = 256;
  for (const json& merge : spec["model"]["merges"]) {
    vocab[merge[0].get<std::string>() + merge[1].get<std::string>()] = id++;
  }
  return spec;
}

Tokenizer byte_level_tokenizer() { return Tokenizer::from_json(byte_level_spec().dump(), "A"); }

// Tokenizer B: SentencePiece-style BPE with byte fallback, as Llama 2 converted files have it.
//   0 <unk>, 1 <s>, 2 </s> (special added tokens), 3-258 <0x00>..<0xFF> (id = 3 + byte),
//   259 ▁, 260 h, 261 i, 262 t, 263 e, 264 r, then the merges' results in rank order:
//   265 ▁h, 266 ▁hi, 267 he, 268 ▁t, 269 re, 270 ▁the, 271 ▁there.
// Metaspace with prepend_scheme "first": "▁" is prepended only to the piece that starts the
// text. The decoder is Llama 2's: ▁ -> space, byte runs -> text, fuse, strip one leading space.
constexpr const char* kMetaspaceSpec = R"({
  "added_tokens": [
    {"id": 0, "content": "<unk>", "special": true, "normalized": false},
    {"id": 1, "content": "<s>", "special": true, "normalized": false},
    {"id": 2, "content": "</s>", "special": true, "normalized": false}],
  "normalizer": null,
  "pre_tokenizer": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first",
                    "split": true},
  "post_processor": {"type": "TemplateProcessing",
    "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
               {"Sequence": {"id": "A", "type_id": 0}}],
    "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}},
  "decoder": {"type": "Sequence", "decoders": [
    {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
    {"type": "ByteFallback"}, {"type": "Fuse"},
    {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
  "model": {"type": "BPE", "unk_token": "<unk>", "fuse_unk": true, "byte_fallback": true,
            "vocab": {}, "merges": ["▁ h", "▁h i", "h e", "▁ t", "r e", "▁t he", "▁the re"]}
})";

std::vector<std::string> metaspace_tokens() {
  std::vector<std::string> tokens = {"<unk>", "<s>", "</s>"};
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof(name), "<0x%02X>", b);
    tokens.push_back(name);
  }
  for (const char* t :
       {"▁", "h", "i", "t", "e", "r", "▁h", "▁hi", "he", "▁t", "re", "▁the", "▁there"}) {
    tokens.push_back(t);
  }
  return tokens;
}

json metaspace_spec() {
  json spec = json::parse(kMetaspaceSpec);
  const std::vector<std::string> tokens = metaspace_tokens();
  for (size_t id = 0; id < tokens.size(); ++id) spec["model"]["vocab"][tokens[id]] = id;
  return spec;
}

Tokenizer metaspace_tokenizer() { return Tokenizer::from_json(metaspace_spec().dump(), "B"); }

Ids encode(const Tokenizer& t, std::string_view text, bool add_special = false,
           bool parse_special = true) {
  return t.encode(text, EncodeOptions{add_special, parse_special});
}

// Each push() output, and finish()'s last.
std::vector<std::string> stream_pieces(const Tokenizer& t, const Ids& ids, bool skip_special) {
  StreamingDecoder decoder(t, DecodeOptions{skip_special});
  std::vector<std::string> pieces;
  for (int32_t id : ids) pieces.push_back(decoder.push(id));
  pieces.push_back(decoder.finish());
  return pieces;
}

std::string stream(const Tokenizer& t, const Ids& ids, bool skip_special = false) {
  std::string out;
  for (const std::string& piece : stream_pieces(t, ids, skip_special)) {
    // Never a broken character: every piece is valid UTF-8 by itself.
    size_t bad = 0;
    EXPECT_TRUE(mlxn::io::json_util::valid_utf8(piece, &bad)) << "piece '" << piece << "'";
    out += piece;
  }
  return out;
}

std::string read_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

}  // namespace

// ---- byte-level BPE (tokenizer A) ----

TEST(TokenizerByteLevel, EncodesByMergeRank) {
  const Tokenizer t = byte_level_tokenizer();
  // GPT-2's regex splits "hello world" into "hello" and " world" ("Ġworld" after the byte map).
  // "hello": h e l l o -> he (rank 0) -> ll (rank 1) -> hell (2) -> hello (3) = 259.
  // "Ġworld": Ġw (4), or (5), Ġwor (6), ld (7), Ġworld (8) = 264.
  EXPECT_EQ(encode(t, "hello world"), (Ids{259, 264}));
  EXPECT_EQ(encode(t, "hello world", true), (Ids{265, 259, 264}));
  // "  hi": \s+(?!\S) takes one space (the second is followed by 'h'), then " hi" = Ġ h i with
  // no merge for (Ġ, h) or (h, i).
  EXPECT_EQ(encode(t, "  hi"), (Ids{32, 32, 104, 105}));
  // "'s" is its own pre-token; no merges apply.
  EXPECT_EQ(encode(t, "it's"), (Ids{105, 116, 39, 115}));
  // é = C3 A9: the characters Ã (U+00C3) and © (U+00A9) stand for themselves; 😀 = F0 9F 98 80,
  // of which 9F, 98 and 80 map into U+0100.. but keep their byte value as id.
  EXPECT_EQ(encode(t, "é😀"), (Ids{195, 169, 240, 159, 152, 128}));
  EXPECT_EQ(encode(t, ""), Ids{});
  EXPECT_EQ(encode(t, "", true), Ids{265});
}

TEST(TokenizerByteLevel, SpecialTokensOnlyWhenParsed) {
  const Tokenizer t = byte_level_tokenizer();
  // The added token is cut out of the raw text before the regex sees it.
  EXPECT_EQ(encode(t, "hello<|endoftext|> world"), (Ids{259, 265, 264}));
  // Not parsed: "<|" and "|>" are punctuation runs, "endoftext" a letter run with no merges.
  EXPECT_EQ(encode(t, "hello<|endoftext|>", false, false),
            (Ids{259, 60, 124, 101, 110, 100, 111, 102, 116, 101, 120, 116, 124, 62}));
}

TEST(TokenizerByteLevel, DecodesAndSkipsSpecial) {
  const Tokenizer t = byte_level_tokenizer();
  const Ids ids{265, 259, 265, 264};
  EXPECT_EQ(t.decode(ids), "<|endoftext|>hello<|endoftext|> world");
  EXPECT_EQ(t.decode(ids, DecodeOptions{true}), "hello world");
  // A lone C3 is an incomplete sequence: one U+FFFD; C3 followed by 'h' likewise, then 'h'.
  EXPECT_EQ(t.decode(Ids{195}), "\xef\xbf\xbd");
  EXPECT_EQ(t.decode(Ids{195, 104}), "\xef\xbf\xbdh");
  // E0 80: E0 needs A0..BF next, so E0 and 80 are two maximal invalid subparts.
  EXPECT_EQ(t.decode(Ids{224, 128, 104}), "\xef\xbf\xbd\xef\xbf\xbdh");
}

TEST(TokenizerByteLevel, VocabularyQueries) {
  const Tokenizer t = byte_level_tokenizer();
  EXPECT_EQ(t.vocab_size(), 266);
  EXPECT_EQ(t.token_to_id("hello"), 259);
  EXPECT_EQ(t.token_to_id("Ġworld"), 264);
  EXPECT_EQ(t.token_to_id("<|endoftext|>"), 265);
  EXPECT_EQ(t.token_to_id("nope"), std::nullopt);
  EXPECT_EQ(t.id_to_token(260), "Ġw");
  EXPECT_EQ(t.id_to_token(32), "Ġ");
  EXPECT_TRUE(t.is_special(265));
  EXPECT_FALSE(t.is_special(259));
  // BOS from the template; EOS from the conventional name <|endoftext|>.
  EXPECT_EQ(t.bos_id(), 265);
  EXPECT_EQ(t.eos_id(), 265);
}

TEST(TokenizerByteLevel, AddedTokenOptions) {
  json spec = byte_level_spec();
  json& added = spec["added_tokens"];
  // "ll" is already in the vocabulary, so it keeps id 257 whatever the file says;
  // single_word: only where neither neighbour is a word character.
  added.push_back({{"id", 999}, {"content", "ll"}, {"single_word", true}, {"normalized", false}});
  // New contents take the next ids: 266, 267.
  added.push_back({{"id", 266}, {"content", "<mask>"}, {"lstrip", true}});
  added.push_back({{"id", 267}, {"content", "<r>"}, {"rstrip", true}});
  const Tokenizer t = Tokenizer::from_json(spec.dump(), "A+");
  EXPECT_EQ(t.token_to_id("ll"), 257);
  EXPECT_EQ(t.token_to_id("<r>"), 267);
  EXPECT_EQ(t.vocab_size(), 268);
  // Inside "hello" "ll" is no single word: BPE as before.
  EXPECT_EQ(encode(t, "hello"), (Ids{259}));
  // "he ll": the token matches after the space; "he " = he (256) + Ġ (32).
  EXPECT_EQ(encode(t, "he ll"), (Ids{256, 32, 257}));
  // lstrip: the token takes the space before it, so no Ġ token appears.
  EXPECT_EQ(encode(t, "hello <mask>"), (Ids{259, 266}));
  EXPECT_EQ(encode(t, "hello<mask>"), (Ids{259, 266}));
  // rstrip: the token takes the spaces after it.
  EXPECT_EQ(encode(t, "<r>  hi"), (Ids{267, 104, 105}));
  // Not special: matched even when special tokens are not parsed.
  EXPECT_EQ(encode(t, "hello <mask>", false, false), (Ids{259, 266}));
  EXPECT_FALSE(t.is_special(266));
}

// ---- SentencePiece-style BPE with byte fallback (tokenizer B) ----

TEST(TokenizerMetaspace, EncodesWithByteFallback) {
  const Tokenizer t = metaspace_tokenizer();
  // "hi there" -> "▁hi▁there" -> pieces "▁hi", "▁there" (split before each ▁).
  // "▁hi": (▁,h) rank 0 -> ▁h, then (▁h,i) rank 1 -> ▁hi = 266.
  // "▁there": he (rank 2) first, then ▁t (3), re (4), ▁the (5), ▁there (6) = 271.
  EXPECT_EQ(encode(t, "hi there"), (Ids{266, 271}));
  EXPECT_EQ(encode(t, "hi there", true), (Ids{1, 266, 271}));
  // 😀 has no token: its bytes F0 9F 98 80 become <0xF0>.. = 3 + byte.
  EXPECT_EQ(encode(t, "hi 😀"), (Ids{266, 259, 243, 162, 155, 131}));
  // 'x' (0x78) likewise: 3 + 0x78 = 123.
  EXPECT_EQ(encode(t, "x"), (Ids{259, 123}));
  // prepend_scheme "first": the piece after <s> does not start the text, so no ▁ and "h", "i"
  // stay apart (there is no "hi" token).
  EXPECT_EQ(encode(t, "<s>hi"), (Ids{1, 260, 261}));
  EXPECT_EQ(t.bos_id(), 1);
  EXPECT_EQ(t.eos_id(), 2);
}

TEST(TokenizerMetaspace, Decodes) {
  const Tokenizer t = metaspace_tokenizer();
  // " hi" + " there", one leading space stripped.
  EXPECT_EQ(t.decode(Ids{266, 271}), "hi there");
  EXPECT_EQ(t.decode(Ids{266, 259, 243, 162, 155, 131}), "hi 😀");
  // The strip only looks at the very first character: here '<'.
  EXPECT_EQ(t.decode(Ids{1, 266, 271}), "<s> hi there");
  EXPECT_EQ(t.decode(Ids{1, 266, 271}, DecodeOptions{true}), "hi there");
  // A byte run that is not valid UTF-8 gives one U+FFFD per byte token: F0 9F, then 'h'.
  EXPECT_EQ(t.decode(Ids{243, 162, 260}), "\xef\xbf\xbd\xef\xbf\xbdh");
}

// ---- streaming ----

TEST(TokenizerStreaming, ByteLevelHoldsSplitCharacters) {
  const Tokenizer t = byte_level_tokenizer();
  // é arrives as C3 then A9; 😀 as four byte tokens. Nothing is emitted mid-character.
  EXPECT_EQ(stream_pieces(t, Ids{195, 169, 240, 159, 152, 128}, false),
            (std::vector<std::string>{"", "é", "", "", "", "😀", ""}));
  // An incomplete tail becomes U+FFFD at finish().
  EXPECT_EQ(stream_pieces(t, Ids{259, 240, 159}, false),
            (std::vector<std::string>{"hello", "", "", "\xef\xbf\xbd"}));
  EXPECT_EQ(stream(t, Ids{265, 259, 265, 264}, true), "hello world");
}

TEST(TokenizerStreaming, ByteFallbackHoldsTheRun) {
  const Tokenizer t = metaspace_tokenizer();
  // The leading space of "▁hi" is stripped at once; the byte run waits for its end, since a
  // further byte token could make the whole run invalid (then one U+FFFD per byte).
  EXPECT_EQ(stream_pieces(t, Ids{266, 259, 243, 162, 155, 131}, false),
            (std::vector<std::string>{"hi", " ", "", "", "", "", "😀"}));
  EXPECT_EQ(stream_pieces(t, Ids{266, 243, 162, 155, 131, 271}, false),
            (std::vector<std::string>{"hi", "", "", "", "", "😀 there", ""}));
  EXPECT_EQ(stream_pieces(t, Ids{243, 162, 260}, false),
            (std::vector<std::string>{"", "", "\xef\xbf\xbd\xef\xbf\xbdh", ""}));
}

TEST(TokenizerStreaming, EqualsDecodeOnRandomIds) {
  const Tokenizer a = byte_level_tokenizer();
  const Tokenizer b = metaspace_tokenizer();
  std::mt19937 rng(7);
  for (const Tokenizer* t : {&a, &b}) {
    std::uniform_int_distribution<int32_t> id(0, t->vocab_size() - 1);
    std::uniform_int_distribution<int> length(0, 24);
    for (int trial = 0; trial < 300; ++trial) {
      Ids ids(static_cast<size_t>(length(rng)));
      for (int32_t& x : ids) x = id(rng);
      for (bool skip : {false, true}) {
        EXPECT_EQ(stream(*t, ids, skip), t->decode(ids, DecodeOptions{skip}));
      }
    }
  }
}

TEST(TokenizerStreaming, FinishStartsOver) {
  const Tokenizer t = metaspace_tokenizer();
  StreamingDecoder decoder(t);
  EXPECT_EQ(decoder.push(266), "hi");
  EXPECT_EQ(decoder.finish(), "");
  // A new sequence: its first token's leading space is stripped again.
  EXPECT_EQ(decoder.push(271), "there");
}

// ---- components ----

namespace {

// A character-level BPE over a, b, c and '-' with a merge for every adjacent pair the split
// behaviours can leave together: a- (4), -b (5), b- (6), -c (7), -- (8). No decoder: decode
// joins the tokens with spaces.
Tokenizer split_tokenizer(const std::string& behavior, bool invert = false,
                          const std::string& pattern = R"({"String": "-"})") {
  return Tokenizer::from_json(
      cat(R"({"pre_tokenizer": {"type": "Split", "pattern": )", pattern, R"(, "behavior": ")",
          behavior, R"(", "invert": )", invert ? "true" : "false",
          R"(}, "model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "c": 2,
                                  "-": 3, "a-": 4, "-b": 5, "b-": 6, "-c": 7, "--": 8}, "merges":
                                  ["a -", "- b", "b -", "- c", "- -"]}})"),
      "split");
}

}  // namespace

TEST(TokenizerComponents, SplitBehaviors) {
  EXPECT_EQ(encode(split_tokenizer("Removed"), "a-b-c"), (Ids{0, 1, 2}));
  EXPECT_EQ(encode(split_tokenizer("Isolated"), "a-b-c"), (Ids{0, 3, 1, 3, 2}));
  EXPECT_EQ(encode(split_tokenizer("MergedWithPrevious"), "a-b-c"), (Ids{4, 6, 2}));
  EXPECT_EQ(encode(split_tokenizer("MergedWithNext"), "a-b-c"), (Ids{0, 5, 7}));
  EXPECT_EQ(encode(split_tokenizer("Contiguous"), "a-b-c"), (Ids{0, 3, 1, 3, 2}));
  // Two delimiters in a row: Contiguous keeps them together; the merged behaviours attach only
  // the first (MergedWithPrevious) or the last (MergedWithNext) to its neighbour.
  EXPECT_EQ(encode(split_tokenizer("Contiguous"), "a--b"), (Ids{0, 8, 1}));
  EXPECT_EQ(encode(split_tokenizer("Isolated"), "a--b"), (Ids{0, 3, 3, 1}));
  EXPECT_EQ(encode(split_tokenizer("MergedWithPrevious"), "a--b"), (Ids{4, 3, 1}));
  EXPECT_EQ(encode(split_tokenizer("MergedWithNext"), "a--b"), (Ids{0, 3, 5}));
  // Inverted: the text between delimiters is the match, so Removed keeps the delimiters.
  EXPECT_EQ(encode(split_tokenizer("Removed", true), "a-b"), (Ids{3}));
  // A regex pattern; "ab" stays one piece but has no merge.
  EXPECT_EQ(encode(split_tokenizer("Isolated", false, R"({"Regex": "[a-c]+"})"), "ab-c"),
            (Ids{0, 1, 3, 2}));
  // No decoder: tokens joined with spaces.
  EXPECT_EQ(split_tokenizer("Isolated").decode(Ids{0, 3, 1}), "a - b");
}

TEST(TokenizerComponents, Digits) {
  const auto make = [](bool individual) {
    return Tokenizer::from_json(
        cat(R"({"pre_tokenizer": {"type": "Digits", "individual_digits": )",
            individual ? "true" : "false",
            R"(}, "model": {"type": "BPE", "vocab": {"a": 0, "1": 1, "2": 2, "3": 3, "12": 4,
            "123": 5}, "merges": [["1", "2"], ["12", "3"]]}})"),
        "digits");
  };
  EXPECT_EQ(encode(make(true), "a123"), (Ids{0, 1, 2, 3}));
  EXPECT_EQ(encode(make(false), "a123"), (Ids{0, 5}));
}

TEST(TokenizerComponents, Normalizers) {
  // Every character its own token; characters without one are dropped (no unk token).
  const Tokenizer t = Tokenizer::from_json(R"({
    "normalizer": {"type": "Sequence", "normalizers": [
      {"type": "NFKC"}, {"type": "Lowercase"},
      {"type": "Replace", "pattern": {"Regex": "\\s+"}, "content": " "},
      {"type": "Prepend", "prepend": "_"}]},
    "model": {"type": "BPE", "vocab": {"_": 0, "a": 1, "b": 2, " ": 3, "f": 4, "i": 5},
              "merges": []}})",
                                           "norm");
  // Ａ (fullwidth) -> A -> a; the tab run -> one space; ﬁ -> f i; "_" prepended.
  EXPECT_EQ(encode(t, "ＡB\t\tﬁ"), (Ids{0, 1, 2, 3, 4, 5}));
  const Tokenizer nfc = Tokenizer::from_json(R"({"normalizer": {"type": "NFC"},
    "model": {"type": "BPE", "vocab": {"é": 0, "e": 1, "\u0301": 2}, "merges": []}})",
                                             "nfc");
  EXPECT_EQ(encode(nfc, "e\u0301"), (Ids{0}));
  EXPECT_EQ(tokenizer_detail::lowercase("İΣA"), "i\u0307σa");
  EXPECT_EQ(tokenizer_detail::nfkc("ﬁ"), "fi");
}

TEST(TokenizerComponents, UnknownTokenAndIgnoreMerges) {
  const auto make = [](bool fuse) {
    return Tokenizer::from_json(
        cat(R"({"model": {"type": "BPE", "unk_token": "<unk>", "fuse_unk": )",
            fuse ? "true" : "false", R"(, "vocab": {"<unk>": 0, "a": 1}, "merges": []}})"),
        "unk");
  };
  EXPECT_EQ(encode(make(true), "axyza"), (Ids{1, 0, 1}));
  EXPECT_EQ(encode(make(false), "axyza"), (Ids{1, 0, 0, 0, 1}));
  const auto merges = [](bool ignore) {
    return Tokenizer::from_json(
        cat(R"({"model": {"type": "BPE", "ignore_merges": )", ignore ? "true" : "false",
            R"(, "vocab": {"a": 0, "b": 1, "c": 2, "bc": 3, "abc": 4}, "merges": ["b c"]}})"),
        "ignore");
  };
  // "abc" is a token, but no merge builds it: only ignore_merges finds it.
  EXPECT_EQ(encode(merges(true), "abc"), (Ids{4}));
  EXPECT_EQ(encode(merges(false), "abc"), (Ids{0, 3}));
}

TEST(TokenizerComponents, MetaspaceDecoderAndStrip) {
  const auto make = [](const std::string& decoder) {
    return Tokenizer::from_json(cat(R"({"decoder": )", decoder,
                                    R"(, "model": {"type": "BPE", "vocab": {"▁Hey": 0,
                                    "▁friend!": 1, "▁▁": 2, "x": 3}, "merges": []}})"),
                                "dec");
  };
  const Tokenizer always = make(R"({"type": "Metaspace", "replacement": "▁",
                                    "prepend_scheme": "always"})");
  EXPECT_EQ(always.decode(Ids{0, 1}), "Hey friend!");
  // Every ▁ of the first token goes, not only the leading one.
  EXPECT_EQ(always.decode(Ids{2, 0}), " Hey");
  const Tokenizer never = make(R"({"type": "Metaspace", "replacement": "▁",
                                   "add_prefix_space": false})");
  EXPECT_EQ(never.decode(Ids{0, 1}), " Hey friend!");
  // Strip per token: one leading and up to two trailing "x".
  const Tokenizer strip = make(R"({"type": "Strip", "content": "x", "start": 1, "stop": 2})");
  EXPECT_EQ(strip.decode(Ids{3, 0, 3}), "▁Hey");
  for (const Tokenizer* t : {&always, &never, &strip}) {
    for (const Ids& ids : {Ids{2, 0, 1}, Ids{3, 3, 0}, Ids{}})
      EXPECT_EQ(stream(*t, ids), t->decode(ids));
  }
}

TEST(TokenizerComponents, RegexFollowsOniguruma) {
  using tokenizer_detail::Regex;
  std::vector<std::pair<size_t, size_t>> m;
  // An empty match right after the previous one is skipped by one character.
  Regex("x*", "test").find_all("ab", m);
  EXPECT_EQ(m, (std::vector<std::pair<size_t, size_t>>{{0, 0}, {1, 1}, {2, 2}}));
  // \s is White_Space: U+180E (a format character since Unicode 6.3) is not one.
  m.clear();
  Regex(R"(\s)", "test").find_all("\xe1\xa0\x8e \xc2\xa0", m);
  EXPECT_EQ(m, (std::vector<std::pair<size_t, size_t>>{{3, 4}, {4, 6}}));
}

// ---- golden fixtures from `tokenizers` ----

class TokenizerGolden : public ::testing::TestWithParam<std::string> {};

TEST_P(TokenizerGolden, MatchesTokenizers) {
  const std::filesystem::path dir =
      std::filesystem::path(MLXN_TEST_FIXTURES) / "tokenizers" / GetParam();
  ASSERT_TRUE(std::filesystem::is_regular_file(dir / "tokenizer.json") &&
              std::filesystem::is_regular_file(dir / "expected.json"))
      << dir << " lacks tokenizer.json or expected.json (scripts/make_tokenizer_fixtures.py "
      << "writes them where `tokenizers` is installed)";
  const Tokenizer t = Tokenizer::from_model_path(dir.string());
  const json expected = json::parse(read_file(dir / "expected.json"));
  EXPECT_EQ(t.vocab_size(), expected.at("vocab_size").get<int32_t>());
  for (const json& c : expected.at("cases")) {
    const std::string text = c.at("text").get<std::string>();
    SCOPED_TRACE(cat("text '", text, "'"));
    const Ids ids = c.at("ids").get<Ids>();
    EXPECT_EQ(encode(t, text, false), ids);
    EXPECT_EQ(encode(t, text, true), c.at("ids_with_special").get<Ids>());
    const std::string decoded = c.at("decoded").get<std::string>();
    EXPECT_EQ(t.decode(ids), decoded);
    EXPECT_EQ(stream(t, ids), decoded);
    if (c.contains("decoded_skip_special")) {
      const Ids with_special = c.at("ids_with_special").get<Ids>();
      const std::string skipped = c.at("decoded_skip_special").get<std::string>();
      EXPECT_EQ(t.decode(with_special, DecodeOptions{true}), skipped);
      EXPECT_EQ(stream(t, with_special, true), skipped);
    }
  }
}

// Named Tokenizer/TokenizerGolden.MatchesTokenizers/<fixture>, inside the Tokenizer* filter.
INSTANTIATE_TEST_SUITE_P(Tokenizer, TokenizerGolden,
                         ::testing::Values("handmade_bytelevel", "gpt2_bytelevel", "llama3_split",
                                           "qwen2_nfc", "llama2_metaspace", "gemma_metaspace",
                                           "mistral_metaspace", "digits_bytelevel"),
                         [](const ::testing::TestParamInfo<std::string>& param) {
                           return param.param;
                         });

// Byte-level tokenizers without a normalizer lose nothing: decode(encode(x)) == x for any text,
// streamed or not. Random strings from pieces that stress the regexes and the byte map.
TEST(TokenizerGoldenRoundTrip, ByteLevelFixturesReturnTheText) {
  const char* pieces[] = {"a",
                          "Zq",
                          " ",
                          "   ",
                          "\n",
                          "\r\n",
                          "\t",
                          "é",
                          "e\u0301",
                          "日本",
                          "😀",
                          "👍🏽",
                          "'s",
                          "'LL",
                          "123",
                          "4.5",
                          "-",
                          "!?",
                          "\u00a0",
                          "\u200b",
                          "İ",
                          "ﬁ",
                          "<|endoftext|>",
                          "<|im_start|>",
                          "x\n\n"};
  std::mt19937 rng(11);
  std::uniform_int_distribution<size_t> pick(0, std::size(pieces) - 1);
  std::uniform_int_distribution<int> count(0, 16);
  for (const char* name : {"gpt2_bytelevel", "llama3_split", "digits_bytelevel"}) {
    const Tokenizer t = Tokenizer::from_model_path(
        (std::filesystem::path(MLXN_TEST_FIXTURES) / "tokenizers" / name).string());
    for (int trial = 0; trial < 200; ++trial) {
      std::string text;
      for (int n = count(rng); n > 0; --n) text += pieces[pick(rng)];
      const Ids ids = encode(t, text);
      EXPECT_EQ(t.decode(ids), text) << name;
      EXPECT_EQ(stream(t, ids), text) << name;
    }
  }
}

TEST(TokenizerGoldenHandmade, SameAsTheInlineTokenizer) {
  const Tokenizer file = Tokenizer::from_json_file(
      (std::filesystem::path(MLXN_TEST_FIXTURES) / "tokenizers/handmade_bytelevel/tokenizer.json")
          .string());
  const Tokenizer inline_spec = byte_level_tokenizer();
  for (const char* text : {"hello world", "hello<|endoftext|> world", "é😀", "  hi", "it's"}) {
    EXPECT_EQ(encode(file, text, true), encode(inline_spec, text, true)) << text;
  }
}

// ---- GGUF ----

namespace {

io::GgufArray strings(std::vector<std::string> values) { return io::GgufArray{std::move(values)}; }

}  // namespace

TEST(TokenizerGguf, Gpt2VocabularyMatchesTheJsonTokenizer) {
  TestDir dir;
  // Tokenizer A's vocabulary in id order, its merges as "a b" strings, <|endoftext|> as a
  // control token (type 3) that the file also names as BOS and asks to prepend.
  std::vector<std::string> tokens;
  for (int b = 0; b < 256; ++b) tokens.push_back(byte_char(b));
  for (const char* t : {"he", "ll", "hell", "hello", "Ġw", "or", "Ġwor", "ld", "Ġworld"}) {
    tokens.push_back(t);
  }
  tokens.push_back("<|endoftext|>");
  std::vector<int32_t> types(tokens.size(), 1);
  types.back() = 3;
  const auto write = [&](const std::string& pre) {
    io::GgufWriter w;
    w.add("general.architecture", std::string("llama"));
    w.add("tokenizer.ggml.model", std::string("gpt2"));
    w.add("tokenizer.ggml.pre", pre);
    w.add("tokenizer.ggml.tokens", strings(tokens));
    w.add("tokenizer.ggml.token_type", io::GgufArray{types});
    w.add("tokenizer.ggml.merges",
          strings({"h e", "l l", "he ll", "hell o", "Ġ w", "o r", "Ġw or", "l d", "Ġwor ld"}));
    w.add("tokenizer.ggml.bos_token_id", uint32_t{265});
    w.add("tokenizer.ggml.eos_token_id", uint32_t{265});
    w.add("tokenizer.ggml.add_bos_token", true);
    const std::string path = dir.file(pre + ".gguf");
    w.write(path);
    return path;
  };
  const Tokenizer a = byte_level_tokenizer();
  for (const std::string pre : {"gpt2", "llama-bpe", "qwen2"}) {
    const Tokenizer t = Tokenizer::from_model_path(write(pre));
    EXPECT_EQ(t.vocab_size(), 266);
    EXPECT_EQ(t.bos_id(), 265);
    EXPECT_TRUE(t.is_special(265));
    for (const char* text : {"hello world", "hello<|endoftext|> world", "é😀", "  hi", "it's"}) {
      EXPECT_EQ(encode(t, text), encode(a, text)) << pre << ": " << text;
      EXPECT_EQ(encode(t, text, true), encode(a, text, true)) << pre << ": " << text;
      EXPECT_EQ(t.decode(encode(t, text)), text);
    }
  }
  // A pre-tokenizer this library does not know is refused by name.
  EXPECT_TRUE(throws_error([&] { Tokenizer::from_model_path(write("deepseek-llm")); },
                           "[tokenizer]", {"tokenizer.ggml.pre 'deepseek-llm' unsupported"}));
}

TEST(TokenizerGguf, SentencePieceByScores) {
  TestDir dir;
  // Tokenizer B's vocabulary; scores fall with the id, so the pair that forms the lower id
  // merges first. Types: <unk> 2, <s> and </s> 3 (control), bytes 6, the rest 1.
  const std::vector<std::string> tokens = metaspace_tokens();
  std::vector<float> scores;
  std::vector<int32_t> types;
  for (size_t id = 0; id < tokens.size(); ++id) {
    scores.push_back(-static_cast<float>(id));
    types.push_back(id == 0 ? 2 : id < 3 ? 3 : id < 259 ? 6 : 1);
  }
  io::GgufWriter w;
  w.add("tokenizer.ggml.model", std::string("llama"));
  w.add("tokenizer.ggml.tokens", strings(tokens));
  w.add("tokenizer.ggml.scores", io::GgufArray{scores});
  w.add("tokenizer.ggml.token_type", io::GgufArray{types});
  w.add("tokenizer.ggml.bos_token_id", uint32_t{1});
  w.add("tokenizer.ggml.eos_token_id", uint32_t{2});
  w.add("tokenizer.ggml.unknown_token_id", uint32_t{0});
  const std::string path = dir.file("spm.gguf");
  w.write(path);
  const Tokenizer t = Tokenizer::from_gguf(io::GgufFile::open(path));
  // "hi there" -> "▁hi▁there" as one piece (no pre-tokenizer). Highest score first: ▁h (265),
  // then the new pair ▁hi (266), he (267), ▁t (268), re (269), then the new pairs ▁the (270)
  // and ▁there (271): the ids tokenizer B's merges give.
  EXPECT_EQ(encode(t, "hi there"), (Ids{266, 271}));
  // add_bos defaults to true for SentencePiece vocabularies.
  EXPECT_EQ(encode(t, "hi there", true), (Ids{1, 266, 271}));
  EXPECT_EQ(encode(t, "hi 😀"), (Ids{266, 259, 243, 162, 155, 131}));
  EXPECT_EQ(encode(t, "x"), (Ids{259, 123}));
  // Every piece after a control token gets "▁" too (Llama 2's legacy behaviour).
  EXPECT_EQ(encode(t, "<s>hi"), (Ids{1, 266}));
  // Not parsed, "<s>" is text: no pair of "▁<s>hi" is a token, and '<', 's', '>' have none of
  // their own, so they become <0x3C> (63), <0x73> (118), <0x3E> (65).
  EXPECT_EQ(encode(t, "<s>hi", false, false), (Ids{259, 63, 118, 65, 260, 261}));
  EXPECT_EQ(t.decode(Ids{1, 266, 271}), "<s> hi there");
  EXPECT_EQ(t.decode(Ids{1, 266, 271}, DecodeOptions{true}), "hi there");
  EXPECT_EQ(stream(t, Ids{1, 266, 259, 243, 162, 155, 131}, true), "hi 😀");
  EXPECT_EQ(t.bos_id(), 1);
  EXPECT_EQ(t.eos_id(), 2);
  EXPECT_TRUE(t.is_special(0));
  EXPECT_FALSE(t.is_special(259));
}

// The byte-level golden fixtures as GGUF vocabularies, laid out as llama.cpp's converter writes
// them (tokens by id, added special tokens as control tokens, merges as "a b"): the GGUF path
// must give `tokenizers`' ids for the same strings.
struct GgufGoldenCase {
  const char* fixture;
  const char* pre;
  const char* bos;  // added by the fixture's template, or nullptr
};

class TokenizerGgufGolden : public ::testing::TestWithParam<GgufGoldenCase> {};

TEST_P(TokenizerGgufGolden, MatchesTokenizers) {
  const GgufGoldenCase& param = GetParam();
  const std::filesystem::path dir =
      std::filesystem::path(MLXN_TEST_FIXTURES) / "tokenizers" / param.fixture;
  ASSERT_TRUE(std::filesystem::is_regular_file(dir / "tokenizer.json")) << dir;
  const json spec = json::parse(read_file(dir / "tokenizer.json"));
  const json expected = json::parse(read_file(dir / "expected.json"));
  std::vector<std::string> tokens(static_cast<size_t>(expected.at("vocab_size").get<int>()));
  std::vector<int32_t> types(tokens.size(), 1);
  for (const auto& [token, id] : spec.at("model").at("vocab").items()) {
    tokens.at(id.get<size_t>()) = token;
  }
  for (const json& added : spec.at("added_tokens")) {
    const auto id = added.at("id").get<size_t>();
    tokens.at(id) = added.at("content").get<std::string>();
    types.at(id) = added.at("special").get<bool>() ? 3 : 4;
  }
  std::vector<std::string> merges;
  for (const json& m : spec.at("model").at("merges")) {
    merges.push_back(m[0].get<std::string>() + " " + m[1].get<std::string>());
  }
  TestDir tmp;
  io::GgufWriter w;
  w.add("tokenizer.ggml.model", std::string("gpt2"));
  w.add("tokenizer.ggml.pre", std::string(param.pre));
  w.add("tokenizer.ggml.tokens", strings(tokens));
  w.add("tokenizer.ggml.token_type", io::GgufArray{types});
  w.add("tokenizer.ggml.merges", strings(merges));
  if (param.bos != nullptr) {
    const auto bos = std::find(tokens.begin(), tokens.end(), param.bos) - tokens.begin();
    w.add("tokenizer.ggml.bos_token_id", static_cast<uint32_t>(bos));
    w.add("tokenizer.ggml.add_bos_token", true);
  }
  const std::string path = tmp.file("vocab.gguf");
  w.write(path);
  const Tokenizer t = Tokenizer::from_model_path(path);
  for (const json& c : expected.at("cases")) {
    const std::string text = c.at("text").get<std::string>();
    SCOPED_TRACE(cat("text '", text, "'"));
    const Ids ids = c.at("ids").get<Ids>();
    EXPECT_EQ(encode(t, text, false), ids);
    EXPECT_EQ(encode(t, text, true), c.at("ids_with_special").get<Ids>());
    EXPECT_EQ(t.decode(ids), c.at("decoded").get<std::string>());
  }
}

INSTANTIATE_TEST_SUITE_P(Tokenizer, TokenizerGgufGolden,
                         ::testing::Values(GgufGoldenCase{"gpt2_bytelevel", "gpt2", nullptr},
                                           GgufGoldenCase{"llama3_split", "llama-bpe",
                                                          "<|begin_of_text|>"},
                                           GgufGoldenCase{"qwen2_nfc", "qwen2", nullptr}),
                         [](const ::testing::TestParamInfo<GgufGoldenCase>& param) {
                           return std::string(param.param.fixture);
                         });

// ---- bad input ----

TEST(TokenizerErrors, MalformedFiles) {
  EXPECT_TRUE(throws_error([] { Tokenizer::from_json("{", "t.json"); },
                           "[tokenizer] t.json:", {"not valid JSON"}));
  EXPECT_TRUE(throws_error([] { Tokenizer::from_json("[1]", "t.json"); },
                           "[tokenizer] t.json:", {"must be an object"}));
  EXPECT_TRUE(throws_error([] { Tokenizer::from_json("{\"x\": \"\xff\"}", "t.json"); },
                           "[tokenizer] t.json:", {"not valid UTF-8"}));
  EXPECT_TRUE(throws_error([] { Tokenizer::from_json("{}", "t.json"); },
                           "[tokenizer] t.json:", {"model is missing"}));
  EXPECT_TRUE(throws_error(
      [] {
        Tokenizer::from_json(R"({"model": {"type": "BPE", "vocab": {"a": "x"}, "merges": []}})",
                             "t.json");
      },
      "[tokenizer] t.json:", {"model.vocab.a must be an integer"}));
  EXPECT_TRUE(throws_error(
      [] {
        Tokenizer::from_json(
            R"({"model": {"type": "BPE", "vocab": {"a": 0, "b": 0}, "merges": []}})", "t.json");
      },
      "[tokenizer] t.json:", {"gives id 0 to both"}));
  EXPECT_TRUE(throws_error(
      [] {
        Tokenizer::from_json(R"({"model": {"type": "BPE", "vocab": {"a": -1}, "merges": []}})",
                             "t.json");
      },
      "[tokenizer] t.json:", {"out of range"}));
  EXPECT_TRUE(throws_error([] { Tokenizer::from_json_file("/nonexistent/tokenizer.json"); },
                           "[tokenizer]"));
  EXPECT_TRUE(throws_error([] { Tokenizer::from_model_path("/nonexistent"); }, "[tokenizer]"));
}

TEST(TokenizerErrors, MergesNamingUnknownTokens) {
  const auto load = [](const std::string& merges) {
    Tokenizer::from_json(cat(R"({"model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2},
                             "merges": )",
                             merges, "}}"),
                         "m.json");
  };
  EXPECT_TRUE(throws_error([&] { load(R"(["a zz"])"); }, "[tokenizer] m.json:",
                           {"model.merges[0]: token 'zz' is not in the vocabulary"}));
  EXPECT_TRUE(throws_error([&] { load(R"(["a b", ["b", "a"]])"); }, "[tokenizer] m.json:",
                           {"model.merges[1]: merged token 'ba' is not in the vocabulary"}));
  EXPECT_TRUE(throws_error([&] { load(R"(["a b c"])"); },
                           "[tokenizer] m.json:", {"model.merges[0]", "one space"}));
  EXPECT_TRUE(throws_error([&] { load(R"([["a"]])"); },
                           "[tokenizer] m.json:", {"model.merges[0] must be"}));
}

TEST(TokenizerErrors, UnsupportedComponents) {
  const auto load = [](const std::string& field, const std::string& value) {
    Tokenizer::from_json(cat("{\"", field, "\": ", value,
                             R"(, "model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}})"),
                         "model.json");
  };
  EXPECT_TRUE(throws_error([&] { load("pre_tokenizer", R"({"type": "BertPreTokenizer"})"); },
                           "[tokenizer] model.json: pre_tokenizer type \"BertPreTokenizer\" "
                           "unsupported (supported: ByteLevel, Split, Metaspace, Digits, "
                           "Sequence)"));
  EXPECT_TRUE(throws_error(
      [&] {
        load("decoder", R"({"type": "Sequence", "decoders": [{"type": "Fuse"}, {"type": "CTC"}]})");
      },
      "[tokenizer] model.json: decoder.decoders[1] type \"CTC\" unsupported"));
  EXPECT_TRUE(throws_error([&] { load("normalizer", R"({"type": "NFD"})"); },
                           "[tokenizer] model.json: normalizer type \"NFD\" unsupported"));
  EXPECT_TRUE(throws_error([&] { load("post_processor", R"({"type": "BertProcessing"})"); },
                           "[tokenizer] model.json: post_processor type \"BertProcessing\""));
  EXPECT_TRUE(throws_error(
      [&] {
        load("pre_tokenizer",
             R"({"type": "Split", "pattern": {"Regex": "("}, "behavior": "Isolated"})");
      },
      "[tokenizer] model.json: pre_tokenizer", {"does not compile"}));
  EXPECT_TRUE(throws_error(
      [&] {
        load("pre_tokenizer",
             R"({"type": "Split", "pattern": {"String": "-"}, "behavior": "Glued"})");
      },
      "[tokenizer] model.json: pre_tokenizer.behavior", {"'Glued' unsupported"}));
  EXPECT_TRUE(
      throws_error([&] { load("pre_tokenizer", R"({"type": "Metaspace", "replacement": "ab"})"); },
                   "[tokenizer] model.json: pre_tokenizer.replacement must be one character"));
  EXPECT_TRUE(throws_error(
      [&] {
        load("post_processor", R"({"type": "TemplateProcessing", "single": [{"SpecialToken":
              {"id": "<s>", "type_id": 0}}], "special_tokens": {}})");
      },
      "[tokenizer] model.json: post_processor.single[0].SpecialToken", {"special_tokens lacks"}));
  EXPECT_TRUE(throws_error(
      [&] {
        load("post_processor", R"({"type": "TemplateProcessing", "single": [{"SpecialToken":
              {"id": "<s>", "type_id": 0}}], "special_tokens": {"<s>": {"ids": [5]}}})");
      },
      "[tokenizer] model.json: post_processor special token id 5 out of range"));
  EXPECT_TRUE(throws_error(
      [] { Tokenizer::from_json(R"({"model": {"type": "WordPiece", "vocab": {}}})", "w.json"); },
      "[tokenizer] w.json: model type \"WordPiece\" unsupported (supported: BPE)"));
  EXPECT_TRUE(throws_error(
      [] {
        Tokenizer::from_json(
            R"({"model": {"type": "BPE", "dropout": 0.1, "vocab": {}, "merges": []}})", "d.json");
      },
      "[tokenizer] d.json: model.dropout"));
  EXPECT_TRUE(throws_error(
      [] {
        Tokenizer::from_json(R"({"model": {"type": "BPE", "continuing_subword_prefix": "##",
                                 "vocab": {}, "merges": []}})",
                             "c.json");
      },
      "[tokenizer] c.json: model.continuing_subword_prefix '##' unsupported"));
}

TEST(TokenizerErrors, BadTextAndIds) {
  const Tokenizer t = byte_level_tokenizer();
  EXPECT_TRUE(throws_error([&] { t.encode("ab\xc3"); },
                           "[tokenizer] encode:", {"not valid UTF-8 (byte 2)"}));
  EXPECT_TRUE(throws_error([&] { t.encode("\xed\xa0\x80"); }, "[tokenizer] encode:"));
  EXPECT_TRUE(throws_error(
      [&] {
        t.decode(Ids{1, 266});
      },
      "[tokenizer] decode:", {"id 266 out of range [0, 266)"}));
  EXPECT_TRUE(throws_error([&] { t.decode(Ids{-1}); }, "[tokenizer] decode:"));
  EXPECT_TRUE(throws_error([&] { t.id_to_token(266); }, "[tokenizer] id_to_token:"));
  EXPECT_TRUE(throws_error([&] { t.is_special(-3); }, "[tokenizer] is_special:"));
  StreamingDecoder decoder(t);
  EXPECT_TRUE(throws_error([&] { decoder.push(1000); }, "[tokenizer] decode:"));
  // An unknown character needs the unk token, which this vocabulary lacks.
  const Tokenizer unk = Tokenizer::from_json(
      R"({"model": {"type": "BPE", "unk_token": "<unk>", "vocab": {"a": 0}, "merges": []}})",
      "u.json");
  EXPECT_TRUE(throws_error([&] { unk.encode("ab"); },
                           "[tokenizer] u.json:", {"unk_token '<unk>' is not in the vocabulary"}));
}

TEST(TokenizerErrors, BadGguf) {
  TestDir dir;
  const auto write = [&](const std::string& model, bool with_scores) {
    io::GgufWriter w;
    w.add("tokenizer.ggml.model", model);
    w.add("tokenizer.ggml.tokens", strings({"a", "b"}));
    if (with_scores) w.add("tokenizer.ggml.scores", io::GgufArray{std::vector<float>{0.0f}});
    const std::string path = dir.file(model + ".gguf");
    w.write(path);
    return io::GgufFile::open(path);
  };
  EXPECT_TRUE(throws_error([&] { Tokenizer::from_gguf(write("bert", false)); }, "[tokenizer]",
                           {"tokenizer.ggml.model 'bert' unsupported (supported: gpt2, llama)"}));
  EXPECT_TRUE(throws_error([&] { Tokenizer::from_gguf(write("llama", true)); }, "[tokenizer]",
                           {"tokenizer.ggml.scores has 1 entries for 2 tokens"}));
  EXPECT_TRUE(throws_error([&] { Tokenizer::from_gguf(write("gpt2", false)); }, "[gguf]",
                           {"tokenizer.ggml.merges"}));
}
