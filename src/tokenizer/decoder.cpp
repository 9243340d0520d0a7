// The decoders of `tokenizers` as streaming stages. Each decoder's decode_chain maps a list of
// token strings to another; here every stage receives the tokens one at a time (begin, text,
// end) and forwards what it can already compute, holding back only what a later token may still
// change: an incomplete UTF-8 sequence (ByteLevel), a run of byte tokens (ByteFallback, whose
// result depends on the whole run), trailing characters a Strip may remove, the start of a
// token a Strip may cut.
#include <string>
#include <utility>

#include "mlxn/core/error.h"
#include "tokenizer/tokenizer_impl.h"

namespace mlxn::tokenizer_detail {

// Tokens arrive as begin(), text()* (whole UTF-8 characters), end(); finish() ends the sequence
// and resets the stage for the next one.
class DecodeStage {
 public:
  virtual ~DecodeStage() = default;
  virtual void begin() = 0;
  virtual void text(std::string_view s) = 0;
  virtual void end() = 0;
  virtual void finish() = 0;

  DecodeStage* next = nullptr;

 protected:
  void emit_token(std::string_view s) {
    next->begin();
    next->text(s);
    next->end();
  }
};

namespace {

// Appends every token's text to the output: Decoder::decode joins the final tokens with "".
class Sink final : public DecodeStage {
 public:
  explicit Sink(std::string& out) : out_(out) {}
  void begin() override {}
  void text(std::string_view s) override { out_.append(s); }
  void end() override {}
  void finish() override {}

 private:
  std::string& out_;
};

// No decoder: the tokens joined with single spaces.
class JoinWithSpaces final : public DecodeStage {
 public:
  void begin() override {
    if (started_) next->text(" ");
    started_ = true;
  }
  void text(std::string_view s) override { next->text(s); }
  void end() override {}
  void finish() override {
    started_ = false;
    next->finish();
  }

 private:
  bool started_ = false;
};

// A stage that needs each token whole before it can transform it.
class WholeTokenStage : public DecodeStage {
 public:
  void begin() override { token_.clear(); }
  void text(std::string_view s) override { token_.append(s); }
  void end() override { on_token(token_); }

 protected:
  virtual void on_token(const std::string& token) = 0;
  std::string token_;
};

// Byte-level characters back to bytes (a token with any other character is taken as its raw
// bytes), all tokens' bytes as one string, invalid UTF-8 replaced as from_utf8_lossy does.
class ByteLevelStage final : public WholeTokenStage {
 public:
  void finish() override {
    open();
    std::string out;
    utf8_.finish(out);
    if (!out.empty()) next->text(out);
    next->end();
    next->finish();
    started_ = false;
  }

 private:
  void open() {
    if (!started_) next->begin();
    started_ = true;
  }
  void on_token(const std::string& token) override {
    open();
    bytes_.clear();
    bool all_mapped = true;
    for (size_t i = 0; i < token.size() && all_mapped;) {
      size_t n = 0;
      const int byte = byte_of_byte_level_char(utf8_decode(token, i, &n));
      all_mapped = byte >= 0;
      if (all_mapped) bytes_.push_back(static_cast<char>(byte));
      i += n;
    }
    const std::string& source = all_mapped ? bytes_ : token;
    std::string out;
    for (char c : source) utf8_.push(static_cast<uint8_t>(c), out);
    if (!out.empty()) next->text(out);
  }

  LossyUtf8Decoder utf8_;
  std::string bytes_;
  bool started_ = false;
};

// Runs of "<0xXX>" tokens become the string of their bytes when that is valid UTF-8, else one
// U+FFFD per byte token; a run is only known once a token that is not a byte ends it.
class ByteFallbackStage final : public WholeTokenStage {
 public:
  void finish() override {
    flush();
    next->finish();
  }

 private:
  // u8::from_str_radix(&token[3..5], 16) after the "<0x" / ">" / length-6 checks.
  static int parse_byte(const std::string& token) {
    if (token.size() != 6 || token.compare(0, 3, "<0x") != 0 || token[5] != '>') return -1;
    const auto hex = [](char c) {
      if (c >= '0' && c <= '9') return c - '0';
      if (c >= 'a' && c <= 'f') return c - 'a' + 10;
      if (c >= 'A' && c <= 'F') return c - 'A' + 10;
      return -1;
    };
    // Rust's integer parser also takes a leading '+'.
    if (token[3] == '+') return hex(token[4]);
    const int hi = hex(token[3]);
    const int lo = hex(token[4]);
    return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
  }

  void on_token(const std::string& token) override {
    const int byte = parse_byte(token);
    if (byte >= 0) {
      run_.push_back(static_cast<char>(byte));
      return;
    }
    flush();
    emit_token(token);
  }

  void flush() {
    if (run_.empty()) return;
    std::string checked;
    LossyUtf8Decoder utf8;
    for (char c : run_) utf8.push(static_cast<uint8_t>(c), checked);
    utf8.finish(checked);
    if (checked == run_) {
      emit_token(run_);
    } else {
      for (size_t i = 0; i < run_.size(); ++i) emit_token(kReplacementChar);
    }
    run_.clear();
  }

  std::string run_;
};

// All tokens as one.
class FuseStage final : public DecodeStage {
 public:
  void begin() override {
    if (!started_) next->begin();
    started_ = true;
  }
  void text(std::string_view s) override { next->text(s); }
  void end() override {}
  void finish() override {
    if (!started_) next->begin();
    next->end();
    next->finish();
    started_ = false;
  }

 private:
  bool started_ = false;
};

// Per token: the replacement character becomes a space, except in the first token, where it is
// dropped unless the prepend scheme is "never".
class MetaspaceStage final : public DecodeStage {
 public:
  MetaspaceStage(char32_t replacement, PrependScheme scheme)
      : replacement_(replacement), scheme_(scheme) {}
  void begin() override {
    ++index_;
    next->begin();
  }
  void text(std::string_view s) override {
    std::string out;
    out.reserve(s.size());
    for (size_t i = 0; i < s.size();) {
      size_t n = 0;
      const char32_t cp = utf8_decode(s, i, &n);
      if (cp != replacement_) {
        out.append(s.substr(i, n));
      } else if (index_ != 0 || scheme_ == PrependScheme::never) {
        out.push_back(' ');
      }
      i += n;
    }
    next->text(out);
  }
  void end() override { next->end(); }
  void finish() override {
    index_ = -1;
    next->finish();
  }

 private:
  char32_t replacement_;
  PrependScheme scheme_;
  int64_t index_ = -1;
};

// Per token: up to `start` leading and then up to `stop` trailing `content` characters removed.
class StripStage final : public DecodeStage {
 public:
  StripStage(std::string content, size_t start, size_t stop)
      : content_(std::move(content)), start_(start), stop_(stop) {}
  void begin() override {
    stripped_ = 0;
    leading_done_ = start_ == 0;
    held_ = 0;
    next->begin();
  }
  void text(std::string_view s) override {
    std::string out;
    for (size_t i = 0; i < s.size();) {
      const size_t n = utf8_length(static_cast<unsigned char>(s[i]));
      const std::string_view ch = s.substr(i, n);
      i += n;
      const bool is_content = ch == content_;
      if (!leading_done_) {
        if (is_content) {
          leading_done_ = ++stripped_ == start_;
          continue;
        }
        leading_done_ = true;
      }
      if (is_content) {
        // Held until the token shows whether it is among the last `stop` characters.
        if (++held_ > stop_) {
          out.append(content_);
          held_ = stop_;
        }
        continue;
      }
      for (; held_ > 0; --held_) out.append(content_);
      out.append(ch);
    }
    if (!out.empty()) next->text(out);
  }
  void end() override {
    held_ = 0;
    next->end();
  }
  void finish() override { next->finish(); }

 private:
  std::string content_;
  size_t start_;
  size_t stop_;
  size_t stripped_ = 0;
  bool leading_done_ = true;
  size_t held_ = 0;
};

// Per token: every match of the pattern replaced. A one-character literal is replaced as the
// text streams through; other patterns need the whole token.
class ReplaceStage final : public DecodeStage {
 public:
  ReplaceStage(const Pattern& pattern, std::string content)
      : pattern_(pattern), content_(std::move(content)), streaming_(pattern.is_single_char()) {}
  void begin() override {
    token_.clear();
    next->begin();
  }
  void text(std::string_view s) override {
    if (streaming_) {
      next->text(pattern_.replace_all(s, content_));
    } else {
      token_.append(s);
    }
  }
  void end() override {
    if (!streaming_) next->text(pattern_.replace_all(token_, content_));
    next->end();
  }
  void finish() override { next->finish(); }

 private:
  const Pattern& pattern_;
  std::string content_;
  bool streaming_;
  std::string token_;
};

std::unique_ptr<DecodeStage> make_stage(const DecoderStep& step) {
  const DecoderDesc& d = step.desc;
  switch (d.kind) {
    case DecoderDesc::Kind::byte_level:
      return std::make_unique<ByteLevelStage>();
    case DecoderDesc::Kind::metaspace:
      return std::make_unique<MetaspaceStage>(first_code_point(d.replacement), d.prepend_scheme);
    case DecoderDesc::Kind::byte_fallback:
      return std::make_unique<ByteFallbackStage>();
    case DecoderDesc::Kind::fuse:
      return std::make_unique<FuseStage>();
    case DecoderDesc::Kind::strip:
      return std::make_unique<StripStage>(d.content, d.start, d.stop);
    case DecoderDesc::Kind::replace:
      return std::make_unique<ReplaceStage>(*step.pattern, d.content);
  }
  throw Error(kOp, "unknown decoder kind");
}

}  // namespace

DecodeChain::DecodeChain(const std::optional<std::vector<DecoderStep>>& steps) : steps_(steps) {
  build();
}

DecodeChain::~DecodeChain() = default;

void DecodeChain::build() {
  if (steps_) {
    for (const DecoderStep& step : *steps_) stages_.push_back(make_stage(step));
  } else {
    stages_.push_back(std::make_unique<JoinWithSpaces>());
  }
  stages_.push_back(std::make_unique<Sink>(out_));
  for (size_t i = 0; i + 1 < stages_.size(); ++i) stages_[i]->next = stages_[i + 1].get();
}

void DecodeChain::push(std::string_view token) {
  DecodeStage& first = *stages_.front();
  first.begin();
  first.text(token);
  first.end();
}

void DecodeChain::finish() { stages_.front()->finish(); }

std::string DecodeChain::take() { return std::exchange(out_, std::string()); }

}  // namespace mlxn::tokenizer_detail
