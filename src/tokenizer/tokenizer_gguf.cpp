// A GGUF file's tokenizer.ggml.* metadata (llama.cpp's keys) to the internal description, as the
// pipeline Hugging Face's tokenizer.json spells for the same model:
//   "gpt2":  byte-level BPE; the pre-tokenizer regex from tokenizer.ggml.pre (Llama 3's and
//            Qwen2's Split + ByteLevel, GPT-2's ByteLevel), NFC before Qwen2's as in its
//            tokenizer.json, Llama 3's ignore_merges.
//   "llama": SentencePiece BPE by scores with byte fallback; "▁" prepended (add_space_prefix)
//            and for spaces, decoded as Llama 2's tokenizer.json does (▁ -> space, bytes, strip
//            the one leading space).
// Token types 2 (unknown) and 3 (control) are special added tokens, 4 (user defined) plain
// added tokens: matched in the raw text before the model sees it.
#include <cmath>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "io/json_util.h"
#include "mlxn/core/error.h"
#include "mlxn/io/gguf.h"
#include "tokenizer/tokenizer_impl.h"

namespace mlxn::tokenizer_detail {

namespace {

// The Split patterns of the tokenizer.json files Llama 3 and Qwen2 ship (they differ in \p{N}).
constexpr const char* kLlama3Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3})"
    R"(| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
constexpr const char* kQwen2Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N})"
    R"(| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
constexpr const char* kSpaceMark = "\xe2\x96\x81";  // ▁

enum TokenType : int64_t { kNormal = 1, kUnknown = 2, kControl = 3, kUserDefined = 4 };

[[noreturn]] void fail(const io::GgufFile& file, const std::string& what) {
  throw Error(kOp, cat(file.path(), ": ", what));
}

std::optional<int32_t> token_id(const io::GgufFile& file, const char* key, size_t n_tokens) {
  if (!file.contains(key)) return std::nullopt;
  const int64_t id = file.get_i64(key);
  if (id < 0 || static_cast<uint64_t>(id) >= n_tokens) {
    fail(file, cat(key, " = ", id, " is out of range [0, ", n_tokens, ")"));
  }
  return static_cast<int32_t>(id);
}

bool flag(const io::GgufFile& file, const char* key, bool fallback) {
  return file.contains(key) ? file.get_bool(key) : fallback;
}

NormalizerDesc normalizer(NormalizerDesc::Kind kind, std::string content = {},
                          PatternDesc pattern = {}) {
  NormalizerDesc n;
  n.kind = kind;
  n.content = std::move(content);
  n.pattern = std::move(pattern);
  return n;
}

DecoderDesc decoder(DecoderDesc::Kind kind) {
  DecoderDesc dec;
  dec.kind = kind;
  return dec;
}

}  // namespace

Description describe_gguf(const io::GgufFile& file) {
  Description d;
  d.origin = file.path();
  const std::string& model = file.get_string("tokenizer.ggml.model");
  const std::vector<std::string>& tokens = file.get_string_array("tokenizer.ggml.tokens");
  if (tokens.empty()) fail(file, "tokenizer.ggml.tokens is empty");
  if (tokens.size() > static_cast<size_t>(std::numeric_limits<int32_t>::max())) {
    fail(file, "tokenizer.ggml.tokens has more tokens than int32 ids reach");
  }
  for (size_t i = 0; i < tokens.size(); ++i) {
    size_t bad = 0;
    if (!io::json_util::valid_utf8(tokens[i], &bad)) {
      fail(file, cat("tokenizer.ggml.tokens[", i, "] is not valid UTF-8 (byte ", bad, ")"));
    }
  }
  std::vector<int64_t> types(tokens.size(), kNormal);
  if (file.contains("tokenizer.ggml.token_type")) {
    types = file.get_int_array("tokenizer.ggml.token_type");
    if (types.size() != tokens.size()) {
      fail(file, cat("tokenizer.ggml.token_type has ", types.size(), " entries for ", tokens.size(),
                     " tokens"));
    }
  }
  const auto add_typed_tokens = [&](bool unknown_is_special) {
    for (size_t i = 0; i < tokens.size(); ++i) {
      const bool special = types[i] == kControl || (unknown_is_special && types[i] == kUnknown);
      if (!special && types[i] != kUserDefined) continue;
      AddedTokenDesc t;
      t.content = tokens[i];
      t.id = static_cast<int32_t>(i);
      t.special = special;
      t.normalized = false;
      d.added_tokens.push_back(std::move(t));
    }
  };

  bool add_bos = false;
  bool add_eos = false;
  if (model == "gpt2") {
    BpeDesc bpe;
    bpe.vocab.reserve(tokens.size());
    for (size_t i = 0; i < tokens.size(); ++i)
      bpe.vocab.emplace_back(tokens[i], static_cast<int32_t>(i));
    const std::vector<std::string>& merges = file.get_string_array("tokenizer.ggml.merges");
    bpe.merges.reserve(merges.size());
    for (size_t i = 0; i < merges.size(); ++i) {
      const std::string& m = merges[i];
      const size_t space = m.find(' ');
      if (space == std::string::npos || m.find(' ', space + 1) != std::string::npos) {
        fail(file, cat("tokenizer.ggml.merges[", i, "] ", text::in_quotes(m),
                       " is not two tokens separated by one space"));
      }
      bpe.merges.emplace_back(m.substr(0, space), m.substr(space + 1));
    }
    const std::string pre =
        file.contains("tokenizer.ggml.pre") ? file.get_string("tokenizer.ggml.pre") : "default";
    PreTokenizerDesc byte_level;  // llama.cpp's pre-tokenizers never add a prefix space
    byte_level.kind = PreTokenizerDesc::Kind::byte_level;
    byte_level.add_prefix_space = false;
    if (pre == "gpt2" || pre == "default") {
      byte_level.use_regex = true;
    } else if (pre == "llama-bpe" || pre == "llama3" || pre == "qwen2") {
      PreTokenizerDesc split;
      split.kind = PreTokenizerDesc::Kind::split;
      split.pattern = {true, pre == "qwen2" ? kQwen2Pattern : kLlama3Pattern};
      split.behavior = SplitBehavior::isolated;
      d.pre_tokenizers.push_back(split);
      byte_level.use_regex = false;
      if (pre == "qwen2") {
        d.normalizers.push_back(normalizer(NormalizerDesc::Kind::nfc));
      } else {
        bpe.ignore_merges = true;
      }
    } else {
      fail(file, cat("tokenizer.ggml.pre ", text::in_quotes(pre),
                     " unsupported (supported: gpt2, default, llama-bpe, llama3, qwen2)"));
    }
    d.pre_tokenizers.push_back(byte_level);
    d.decoders.emplace();
    d.decoders->push_back(decoder(DecoderDesc::Kind::byte_level));
    d.model = std::move(bpe);
    add_typed_tokens(false);
  } else if (model == "llama") {
    SpmDesc spm;
    spm.tokens = tokens;
    spm.scores = file.get_f32_array("tokenizer.ggml.scores");
    if (spm.scores.size() != tokens.size()) {
      fail(file, cat("tokenizer.ggml.scores has ", spm.scores.size(), " entries for ",
                     tokens.size(), " tokens"));
    }
    for (size_t i = 0; i < spm.scores.size(); ++i) {
      // The merge order compares scores; a NaN has no place in it.
      if (!std::isfinite(spm.scores[i])) {
        fail(file, cat("tokenizer.ggml.scores[", i, "] is not finite"));
      }
    }
    spm.unk_id = token_id(file, "tokenizer.ggml.unknown_token_id", tokens.size());
    if (!spm.unk_id) {
      for (size_t i = 0; i < tokens.size() && !spm.unk_id; ++i) {
        if (types[i] == kUnknown) spm.unk_id = static_cast<int32_t>(i);
      }
    }
    const bool space_prefix = flag(file, "tokenizer.ggml.add_space_prefix", true);
    if (space_prefix)
      d.normalizers.push_back(normalizer(NormalizerDesc::Kind::prepend, kSpaceMark));
    d.normalizers.push_back(
        normalizer(NormalizerDesc::Kind::replace, kSpaceMark, PatternDesc{false, " "}));
    d.decoders.emplace();
    DecoderDesc replace = decoder(DecoderDesc::Kind::replace);
    replace.pattern = PatternDesc{false, kSpaceMark};
    replace.content.assign(1, ' ');
    d.decoders->push_back(replace);
    d.decoders->push_back(decoder(DecoderDesc::Kind::byte_fallback));
    d.decoders->push_back(decoder(DecoderDesc::Kind::fuse));
    if (space_prefix) {
      DecoderDesc strip = decoder(DecoderDesc::Kind::strip);
      strip.content.assign(1, ' ');
      strip.start = 1;
      d.decoders->push_back(strip);
    }
    d.model = std::move(spm);
    add_typed_tokens(true);
    add_bos = true;  // llama.cpp's default for SentencePiece vocabularies
  } else {
    fail(file, cat("tokenizer.ggml.model ", text::in_quotes(model),
                   " unsupported (supported: gpt2, llama)"));
  }

  d.bos_id = token_id(file, "tokenizer.ggml.bos_token_id", tokens.size());
  d.eos_id = token_id(file, "tokenizer.ggml.eos_token_id", tokens.size());
  // A default (not a stated) add_bos without a BOS id adds nothing.
  add_bos = flag(file, "tokenizer.ggml.add_bos_token", add_bos && d.bos_id.has_value());
  add_eos = flag(file, "tokenizer.ggml.add_eos_token", add_eos);
  if (add_bos && !d.bos_id)
    fail(file, "tokenizer.ggml.add_bos_token is true without a bos_token_id");
  if (add_eos && !d.eos_id)
    fail(file, "tokenizer.ggml.add_eos_token is true without an eos_token_id");
  if (add_bos || add_eos) {
    std::vector<TemplateItem> items;
    if (add_bos) items.push_back({false, {*d.bos_id}});
    items.push_back({true, {}});
    if (add_eos) items.push_back({false, {*d.eos_id}});
    d.templates.push_back(std::move(items));
  }
  return d;
}

}  // namespace mlxn::tokenizer_detail
