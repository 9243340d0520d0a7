// Text primitives of the tokenizer (internal): UTF-8 walking, the Unicode predicates and
// normalizations that `tokenizers` takes from Rust's std and the unicode-normalization crate
// (here from utf8proc), regular expressions with Oniguruma's matching rules on PCRE2, GPT-2's
// byte <-> character table, and Rust's lossy UTF-8 decoding.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

struct pcre2_real_code_8;

namespace mlxn::tokenizer_detail {

inline constexpr const char* kOp = "tokenizer";

// ---- UTF-8 (the input is valid UTF-8 wherever these are used) ----
// Bytes of the sequence that starts with `lead`.
inline size_t utf8_length(unsigned char lead) {
  return lead < 0x80 ? 1 : lead < 0xe0 ? 2 : lead < 0xf0 ? 3 : 4;
}
// The code point at s[i] and its length in bytes.
char32_t utf8_decode(std::string_view s, size_t i, size_t* length);
void append_utf8(std::string& out, char32_t cp);
// The first code point of `s` (s non-empty).
char32_t first_code_point(std::string_view s);
// The start of the last code point of `s` (s non-empty).
size_t last_code_point_start(std::string_view s);

// ---- Unicode predicates ----
// The White_Space property: Rust's char::is_whitespace, regex's \s and Oniguruma's \s.
bool is_white_space(char32_t cp);
// General categories Nd, Nl, No: Rust's char::is_numeric (the Digits pre-tokenizer).
bool is_numeric(char32_t cp);
// The Rust regex crate's \w (Alphabetic, marks, Nd, Pc, Join_Control): single_word tokens.
bool is_word_char(char32_t cp);

// ---- normalizations ----
std::string nfc(std::string_view s);
std::string nfkc(std::string_view s);
// Rust's char::to_lowercase, character by character (no context-dependent final sigma).
std::string lowercase(std::string_view s);

// ---- GPT-2 byte-level alphabet ----
// The character standing for `byte`: printable Latin-1 bytes stand for themselves, the others
// for U+0100 + n in byte order.
char32_t byte_level_char(uint8_t byte);
// The byte a byte-level character stands for, or -1 when `cp` is not one.
int byte_of_byte_level_char(char32_t cp);
// Each byte of `s` as its byte-level character.
std::string to_byte_level(std::string_view s);

// Rust's String::from_utf8_lossy fed a byte at a time: complete characters are appended to
// `out` as soon as they are known valid; each maximal invalid subpart becomes one U+FFFD.
class LossyUtf8Decoder {
 public:
  void push(uint8_t byte, std::string& out);
  // An incomplete tail becomes one U+FFFD; the decoder starts over.
  void finish(std::string& out);

 private:
  uint8_t pending_[4] = {};
  size_t have_ = 0;
  size_t need_ = 0;
};

inline constexpr std::string_view kReplacementChar = "\xef\xbf\xbd";  // U+FFFD

// ---- regular expressions ----
// A pattern compiled by PCRE2 (UTF + UCP) that matches as Oniguruma does under tokenizers'
// settings: \s, \w and \h keep Oniguruma's meanings (White_Space; letters, marks, numbers and
// connector punctuation; hex digits) and ^ / $ match at line breaks (Ruby syntax).
class Regex {
 public:
  // `where` names the pattern in errors ("pre_tokenizer.pattern").
  Regex(std::string_view pattern, const std::string& where);
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // The [start, end) byte ranges of the matches in `text`, in the order and with the empty-match
  // rule of Oniguruma's find_iter: an empty match right where the previous match ended is
  // skipped by advancing one character.
  void find_all(std::string_view text, std::vector<std::pair<size_t, size_t>>& out) const;

 private:
  pcre2_real_code_8* code_ = nullptr;
  std::string where_;
};

}  // namespace mlxn::tokenizer_detail
