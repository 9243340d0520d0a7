// Text <-> token ids for the model families the runner supports, from a Hugging Face
// tokenizer.json or a GGUF file's tokenizer.ggml.* metadata.
//
// Supported (anything else is refused by name with Error("[tokenizer] ...")):
//   model:          BPE (merges; byte_fallback; unk_token; ignore_merges; fuse_unk), and GGUF's
//                   "gpt2" (BPE) and "llama" (SentencePiece BPE by scores, byte fallback)
//   normalizers:    NFC, NFKC, Prepend, Replace, Lowercase, Sequence
//   pre-tokenizers: ByteLevel (add_prefix_space, use_regex), Split (regex or string pattern, every
//                   behavior, invert), Metaspace (replacement, prepend_scheme, split), Digits,
//                   Sequence
//   decoders:       ByteLevel, Metaspace, ByteFallback, Fuse, Strip, Replace, Sequence
//   post-processor: TemplateProcessing (single sequence), ByteLevel, Sequence (BOS/EOS added by
//                   encode when add_special is set)
//   added tokens:   matched in the raw text before normalization (longest first), never split;
//                   special ones only when EncodeOptions::parse_special is set
//
// encode() follows the pipeline of Hugging Face `tokenizers` exactly, so the ids equal theirs;
// tests/tokenizer compares against ids `tokenizers` produced for tokenizers trained on a small
// text with each pre-tokenizer family (scripts/make_tokenizer_fixtures.py).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace mlxn::io {
class GgufFile;
}

namespace mlxn::tokenizer_detail {
class DecodeChain;
}

namespace mlxn {

struct EncodeOptions {
  bool add_special = true;    // the post-processor's BOS/EOS (as `add_special_tokens=True`)
  bool parse_special = true;  // special tokens written in the text become their ids
};

struct DecodeOptions {
  bool skip_special = false;  // leave special (not plain added) tokens out of the text
};

class Tokenizer {
 public:
  // A tokenizer.json file, or its text (`origin` names it in errors).
  static Tokenizer from_json_file(const std::string& path);
  static Tokenizer from_json(std::string_view json, const std::string& origin);
  // The tokenizer.ggml.* metadata of a GGUF file.
  static Tokenizer from_gguf(const io::GgufFile& file);
  // A model directory (its tokenizer.json) or a .gguf file.
  static Tokenizer from_model_path(const std::string& path);

  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;
  ~Tokenizer();

  // Text must be valid UTF-8 (Error otherwise).
  std::vector<int32_t> encode(std::string_view text, const EncodeOptions& options = {}) const;
  // Ids outside [0, vocab_size()) are an Error. Bytes that do not form valid UTF-8 (a byte-level
  // token cut mid-character) become U+FFFD, as `tokenizers` decodes them.
  std::string decode(std::span<const int32_t> ids, const DecodeOptions& options = {}) const;

  int32_t vocab_size() const;  // the largest id + 1, added tokens included
  std::optional<int32_t> token_to_id(std::string_view token) const;
  const std::string& id_to_token(
      int32_t id) const;  // the vocabulary string; Error when out of range
  bool is_special(int32_t id) const;

  // From the post-processor / GGUF metadata / the added tokens' conventional names; none when
  // the tokenizer does not define one.
  std::optional<int32_t> bos_id() const;
  std::optional<int32_t> eos_id() const;

  struct Impl;

 private:
  explicit Tokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
  friend class StreamingDecoder;
};

// Turns ids into text one id at a time while generating: push() returns the text that became
// final with this id (possibly empty), never a broken UTF-8 sequence; a character split across
// tokens is held back until it is complete. finish() returns what is left (an incomplete tail
// becomes U+FFFD). Concatenated outputs equal decode() of all the ids.
class StreamingDecoder {
 public:
  explicit StreamingDecoder(const Tokenizer& tokenizer, const DecodeOptions& options = {});
  StreamingDecoder(StreamingDecoder&&) noexcept;
  ~StreamingDecoder();
  std::string push(int32_t id);
  // After finish() the decoder starts a new sequence.
  std::string finish();

 private:
  const Tokenizer& tokenizer_;
  DecodeOptions options_;
  // decode()'s own pipeline, fed one id at a time: each stage holds back only what a later id
  // can still change, so a push costs time in that token's length, not in the ids so far.
  std::unique_ptr<tokenizer_detail::DecodeChain> chain_;
};

}  // namespace mlxn
