// Internal to the tokenizer: the description both readers (tokenizer.json, GGUF metadata) fill,
// and the pieces the pipeline is built from. Names follow `tokenizers`' components, whose
// behaviour each piece reproduces; docs/tokenizer.md lists what is supported.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <variant>
#include <vector>

#include "core/text.h"
#include "mlxn/tokenizer/tokenizer.h"
#include "tokenizer/unicode.h"

namespace mlxn::tokenizer_detail {

using text::cat;

// ---- the description ----

// {"String": text} (a literal) or {"Regex": text}.
struct PatternDesc {
  bool regex = false;
  std::string text;
};

enum class SplitBehavior { removed, isolated, merged_with_previous, merged_with_next, contiguous };
enum class PrependScheme { always, first, never };

struct NormalizerDesc {
  enum class Kind { nfc, nfkc, lowercase, prepend, replace };
  Kind kind = Kind::nfc;
  std::string content;  // prepend: the prefix; replace: the replacement
  PatternDesc pattern;  // replace
};

struct PreTokenizerDesc {
  enum class Kind { byte_level, split, metaspace, digits };
  Kind kind = Kind::byte_level;
  bool add_prefix_space = false;  // byte_level
  bool use_regex = true;          // byte_level: split with GPT-2's pattern first
  PatternDesc pattern;            // split
  SplitBehavior behavior = SplitBehavior::isolated;
  bool invert = false;
  std::string replacement;  // metaspace: one character
  PrependScheme prepend_scheme = PrependScheme::always;
  bool split = true;
  bool individual_digits = false;  // digits
};

struct DecoderDesc {
  enum class Kind { byte_level, metaspace, byte_fallback, fuse, strip, replace };
  Kind kind = Kind::byte_level;
  std::string replacement;  // metaspace: one character
  PrependScheme prepend_scheme = PrependScheme::always;
  std::string content;  // strip: one character; replace: the replacement
  size_t start = 0;     // strip: at most this many leading `content` characters
  size_t stop = 0;      //        and this many trailing ones, per token
  PatternDesc pattern;  // replace
};

// One element of a TemplateProcessing "single" template: the sequence ($A) or special ids.
struct TemplateItem {
  bool sequence = false;
  std::vector<int32_t> ids;
};

struct AddedTokenDesc {
  std::string content;
  int32_t id = -1;  // as the file states it
  bool special = false;
  bool single_word = false;
  bool lstrip = false;
  bool rstrip = false;
  bool normalized = true;
};

struct BpeDesc {
  std::vector<std::pair<std::string, int32_t>> vocab;
  std::vector<std::pair<std::string, std::string>> merges;  // by rank
  std::optional<std::string> unk_token;
  bool fuse_unk = false;
  bool byte_fallback = false;
  bool ignore_merges = false;
};

// SentencePiece's BPE as llama.cpp runs it from a GGUF "llama" vocabulary: the adjacent pair
// whose concatenation is a token with the highest score merges first.
struct SpmDesc {
  std::vector<std::string> tokens;  // id = index
  std::vector<float> scores;
  std::optional<int32_t> unk_id;
};

struct Description {
  std::string origin;  // the file, for messages
  std::variant<BpeDesc, SpmDesc> model;
  std::vector<NormalizerDesc> normalizers;       // applied in order
  std::vector<PreTokenizerDesc> pre_tokenizers;  // applied in order
  // nullopt: no decoder, tokens are joined with spaces (as `tokenizers` does).
  std::optional<std::vector<DecoderDesc>> decoders;
  // The post-processor's templates, applied in order when add_special is set.
  std::vector<std::vector<TemplateItem>> templates;
  std::vector<AddedTokenDesc> added_tokens;  // in file order
  // Ids named by the source itself (GGUF keys); otherwise taken from the template or from
  // conventional token names.
  std::optional<int32_t> bos_id;
  std::optional<int32_t> eos_id;
};

Description parse_tokenizer_json(std::string_view json, const std::string& origin);
Description describe_gguf(const io::GgufFile& file);

// ---- patterns ----

// A Split / Replace pattern: a literal or a regex, found left to right without overlaps.
class Pattern {
 public:
  Pattern(const PatternDesc& desc, const std::string& where);
  // [start, end) of every match in `text`.
  void find_all(std::string_view text, std::vector<std::pair<size_t, size_t>>& out) const;
  // The replacement of every match by `content` (NormalizedString::replace).
  std::string replace_all(std::string_view text, std::string_view content) const;
  // The single character the pattern is, if it is a one-character literal.
  bool is_single_char() const;

 private:
  std::string literal_;
  std::unique_ptr<Regex> regex_;
};

// ---- models ----

struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
using TokenMap = std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>>;

class Model {
 public:
  virtual ~Model() = default;
  // Appends the ids of one pre-token (non-empty, valid UTF-8).
  virtual void tokenize(std::string_view word, std::vector<int32_t>& out) const = 0;
  const TokenMap& vocab() const { return vocab_; }

 protected:
  TokenMap vocab_;
};

std::unique_ptr<Model> make_bpe_model(const BpeDesc& desc, const std::string& origin);
std::unique_ptr<Model> make_spm_model(const SpmDesc& desc, const std::string& origin);

// ---- decoding ----

struct DecoderStep {
  DecoderDesc desc;
  std::shared_ptr<const Pattern> pattern;  // replace
};

class DecodeStage;

// The decoder as a chain of stages that receive tokens one at a time and pass on text as soon
// as no later token can change it. decode() runs it over all ids and StreamingDecoder one id per
// push, so both produce the same text; each token costs time in its own length only.
class DecodeChain {
 public:
  // `steps` nullopt: no decoder (tokens joined with spaces). The steps must outlive the chain.
  explicit DecodeChain(const std::optional<std::vector<DecoderStep>>& steps);
  ~DecodeChain();
  DecodeChain(const DecodeChain&) = delete;
  DecodeChain& operator=(const DecodeChain&) = delete;

  void push(std::string_view token);
  void finish();  // the chain can take a new sequence afterwards
  // The text that became final since the last call.
  std::string take();

 private:
  void build();

  const std::optional<std::vector<DecoderStep>>& steps_;
  std::vector<std::unique_ptr<DecodeStage>> stages_;
  std::string out_;
};

}  // namespace mlxn::tokenizer_detail

namespace mlxn {

struct Tokenizer::Impl {
  struct AddedToken {
    std::string content;  // matched in the raw text, or its normalized form if `normalized`
    int32_t id = -1;
    bool special = false;
    bool single_word = false;
    bool lstrip = false;
    bool rstrip = false;
  };
  // Added tokens by first byte, longest first: the leftmost-longest matcher's candidates.
  struct AddedMatcher {
    std::vector<AddedToken> tokens;
    std::vector<std::vector<uint32_t>> by_first_byte = std::vector<std::vector<uint32_t>>(256);
    void build();
    bool empty() const { return tokens.empty(); }
  };
  struct Normalizer {
    tokenizer_detail::NormalizerDesc desc;
    std::unique_ptr<tokenizer_detail::Pattern> pattern;
  };
  struct PreTokenizer {
    tokenizer_detail::PreTokenizerDesc desc;
    std::unique_ptr<tokenizer_detail::Pattern> pattern;
  };

  explicit Impl(const tokenizer_detail::Description& description);

  std::vector<int32_t> encode(std::string_view text, const EncodeOptions& options) const;
  std::string normalize(std::string_view text) const;

  std::string origin;
  std::unique_ptr<tokenizer_detail::Model> model;
  std::vector<Normalizer> normalizers;
  std::vector<PreTokenizer> pre_tokenizers;
  std::optional<std::vector<tokenizer_detail::DecoderStep>> decoders;
  std::vector<std::vector<tokenizer_detail::TemplateItem>> templates;
  AddedMatcher raw_added;                // matched before normalization
  AddedMatcher normalized_added;         // matched in the normalized pieces
  tokenizer_detail::TokenMap added_ids;  // content -> id of every added token
  std::vector<std::string> tokens;       // id -> the string decode() uses (added content first)
  std::vector<uint8_t> token_flags;
  int32_t vocab_size = 0;
  std::optional<int32_t> bos;
  std::optional<int32_t> eos;

  static constexpr uint8_t kPresent = 1;
  static constexpr uint8_t kSpecial = 2;
};

}  // namespace mlxn
