#include "tokenizer/unicode.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <utf8proc.h>

#include <array>
#include <cstdlib>
#include <memory>

#include "core/text.h"
#include "mlxn/core/error.h"

namespace mlxn::tokenizer_detail {

using text::cat;

// ---- UTF-8 ----

char32_t utf8_decode(std::string_view s, size_t i, size_t* length) {
  const auto lead = static_cast<unsigned char>(s[i]);
  const size_t n = utf8_length(lead);
  *length = n;
  if (n == 1) return lead;
  char32_t cp = lead & (n == 2 ? 0x1fu : n == 3 ? 0x0fu : 0x07u);
  for (size_t k = 1; k < n; ++k) cp = (cp << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3fu);
  return cp;
}

void append_utf8(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xc0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3f)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xe0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3f)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3f)));
  } else {
    out.push_back(static_cast<char>(0xf0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3f)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3f)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3f)));
  }
}

char32_t first_code_point(std::string_view s) {
  size_t n = 0;
  return utf8_decode(s, 0, &n);
}

size_t last_code_point_start(std::string_view s) {
  size_t i = s.size() - 1;
  while (i > 0 && (static_cast<unsigned char>(s[i]) & 0xc0) == 0x80) --i;
  return i;
}

// ---- predicates ----

bool is_white_space(char32_t cp) {
  switch (cp) {
    case 0x09:
    case 0x0a:
    case 0x0b:
    case 0x0c:
    case 0x0d:
    case 0x20:
    case 0x85:
    case 0xa0:
    case 0x1680:
    case 0x2028:
    case 0x2029:
    case 0x202f:
    case 0x205f:
    case 0x3000:
      return true;
    default:
      return cp >= 0x2000 && cp <= 0x200a;
  }
}

bool is_numeric(char32_t cp) {
  const utf8proc_category_t category = utf8proc_category(static_cast<utf8proc_int32_t>(cp));
  return category == UTF8PROC_CATEGORY_ND || category == UTF8PROC_CATEGORY_NL ||
         category == UTF8PROC_CATEGORY_NO;
}

namespace {

struct CodeDeleter {
  void operator()(pcre2_code* code) const { pcre2_code_free(code); }
};
struct MatchDataDeleter {
  void operator()(pcre2_match_data* data) const { pcre2_match_data_free(data); }
};
using MatchData = std::unique_ptr<pcre2_match_data, MatchDataDeleter>;

std::string pcre2_message(int code) {
  PCRE2_UCHAR buffer[256];
  if (pcre2_get_error_message(code, buffer, sizeof(buffer)) < 0) return cat("error ", code);
  return std::string(reinterpret_cast<const char*>(buffer));
}

// utf8proc has no Alphabetic property (it is more than the letter categories: Nl and many
// marks and symbols), so the word class comes from PCRE2's tables.
const pcre2_code* word_char_code() {
  static const std::unique_ptr<pcre2_code, CodeDeleter> code = [] {
    constexpr std::string_view kPattern = R"([\p{Alphabetic}\p{M}\p{Nd}\p{Pc}\x{200C}\x{200D}])";
    int error = 0;
    PCRE2_SIZE offset = 0;
    pcre2_code* compiled =
        pcre2_compile(reinterpret_cast<PCRE2_SPTR>(kPattern.data()), kPattern.size(),
                      PCRE2_UTF | PCRE2_UCP | PCRE2_ANCHORED, &error, &offset, nullptr);
    if (compiled == nullptr) throw Error(kOp, cat("word class: ", pcre2_message(error)));
    return std::unique_ptr<pcre2_code, CodeDeleter>(compiled);
  }();
  return code.get();
}

}  // namespace

bool is_word_char(char32_t cp) {
  if (cp < 0x80) {
    return (cp >= '0' && cp <= '9') || (cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z') ||
           cp == '_';
  }
  std::string encoded;
  append_utf8(encoded, cp);
  const pcre2_code* code = word_char_code();
  MatchData data(pcre2_match_data_create_from_pattern(code, nullptr));
  if (!data) throw Error(kOp, "out of memory matching a word character");
  return pcre2_match(code, reinterpret_cast<PCRE2_SPTR>(encoded.data()), encoded.size(), 0, 0,
                     data.get(), nullptr) >= 0;
}

// ---- normalizations ----

namespace {

std::string utf8proc_transform(std::string_view s, utf8proc_option_t options, const char* name) {
  utf8proc_uint8_t* result = nullptr;
  const utf8proc_ssize_t n =
      utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(s.data()),
                   static_cast<utf8proc_ssize_t>(s.size()), &result, options);
  if (n < 0) throw Error(kOp, cat(name, " normalization failed: ", utf8proc_errmsg(n)));
  std::string out(reinterpret_cast<const char*>(result), static_cast<size_t>(n));
  std::free(result);
  return out;
}

}  // namespace

std::string nfc(std::string_view s) {
  return utf8proc_transform(s, static_cast<utf8proc_option_t>(UTF8PROC_STABLE | UTF8PROC_COMPOSE),
                            "NFC");
}

std::string nfkc(std::string_view s) {
  return utf8proc_transform(
      s, static_cast<utf8proc_option_t>(UTF8PROC_STABLE | UTF8PROC_COMPOSE | UTF8PROC_COMPAT),
      "NFKC");
}

std::string lowercase(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    size_t n = 0;
    const char32_t cp = utf8_decode(s, i, &n);
    i += n;
    if (cp == 0x130) {
      // The one unconditional multi-character lowercase mapping (SpecialCasing.txt): İ -> i̇.
      out.append("i\xcc\x87");
    } else {
      append_utf8(out, static_cast<char32_t>(utf8proc_tolower(static_cast<utf8proc_int32_t>(cp))));
    }
  }
  return out;
}

// ---- byte-level alphabet ----

namespace {

struct ByteLevelTables {
  std::array<char32_t, 256> to_char{};
  std::array<int16_t, 0x144> to_byte{};  // the characters reach U+0143
  std::array<std::string, 256> encoded;

  ByteLevelTables() {
    to_byte.fill(-1);
    char32_t next = 0x100;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || b >= 0xae;
      to_char[static_cast<size_t>(b)] = printable ? static_cast<char32_t>(b) : next++;
    }
    for (int b = 0; b < 256; ++b) {
      to_byte[to_char[static_cast<size_t>(b)]] = static_cast<int16_t>(b);
      append_utf8(encoded[static_cast<size_t>(b)], to_char[static_cast<size_t>(b)]);
    }
  }
};

const ByteLevelTables& byte_level_tables() {
  static const ByteLevelTables tables;
  return tables;
}

}  // namespace

char32_t byte_level_char(uint8_t byte) { return byte_level_tables().to_char[byte]; }

int byte_of_byte_level_char(char32_t cp) {
  return cp < 0x144 ? byte_level_tables().to_byte[cp] : -1;
}

std::string to_byte_level(std::string_view s) {
  const ByteLevelTables& tables = byte_level_tables();
  std::string out;
  out.reserve(s.size() * 2);
  for (char c : s) out.append(tables.encoded[static_cast<uint8_t>(c)]);
  return out;
}

// ---- lossy UTF-8 ----

void LossyUtf8Decoder::push(uint8_t byte, std::string& out) {
  if (have_ > 0) {
    // The second byte's range depends on the lead (no overlong forms, surrogates or code points
    // past U+10FFFF); later ones are plain continuation bytes.
    uint8_t lo = 0x80, hi = 0xbf;
    if (have_ == 1) {
      switch (pending_[0]) {
        case 0xe0:
          lo = 0xa0;
          break;
        case 0xed:
          hi = 0x9f;
          break;
        case 0xf0:
          lo = 0x90;
          break;
        case 0xf4:
          hi = 0x8f;
          break;
        default:
          break;
      }
    }
    if (byte >= lo && byte <= hi) {
      pending_[have_++] = byte;
      if (have_ == need_) {
        out.append(reinterpret_cast<const char*>(pending_), have_);
        have_ = 0;
      }
      return;
    }
    // The bytes so far are a maximal invalid subpart; this byte starts afresh.
    out.append(kReplacementChar);
    have_ = 0;
  }
  if (byte < 0x80) {
    out.push_back(static_cast<char>(byte));
  } else if (byte >= 0xc2 && byte <= 0xf4) {
    pending_[0] = byte;
    have_ = 1;
    need_ = utf8_length(byte);
  } else {
    out.append(kReplacementChar);
  }
}

void LossyUtf8Decoder::finish(std::string& out) {
  if (have_ > 0) out.append(kReplacementChar);
  have_ = 0;
}

// ---- regular expressions ----

namespace {

// Rewrites the escapes whose meaning differs between Oniguruma (tokenizers) and PCRE2: PCRE2's
// \s also matches U+180E, its \w (10.42) leaves out marks and connector punctuation other than
// '_', and its \h is horizontal space rather than a hex digit.
std::string to_pcre2_syntax(std::string_view pattern) {
  constexpr std::string_view kWordItems = R"(\p{L}\p{M}\p{N}\p{Pc})";
  constexpr std::string_view kHexItems = "0-9a-fA-F";
  std::string out;
  out.reserve(pattern.size() + 16);
  bool in_class = false;
  for (size_t i = 0; i < pattern.size(); ++i) {
    const char c = pattern[i];
    if (c == '\\' && i + 1 < pattern.size()) {
      const char e = pattern[++i];
      switch (e) {
        case 's':
          out.append(R"(\p{White_Space})");
          break;
        case 'S':
          out.append(R"(\P{White_Space})");
          break;
        case 'w':
          out.append(in_class ? cat(kWordItems) : cat("[", kWordItems, "]"));
          break;
        case 'W':
          out.append(in_class ? std::string(R"(\W)") : cat("[^", kWordItems, "]"));
          break;
        case 'h':
          out.append(in_class ? cat(kHexItems) : cat("[", kHexItems, "]"));
          break;
        case 'H':
          out.append(in_class ? std::string(R"(\H)") : cat("[^", kHexItems, "]"));
          break;
        case 'Q': {
          // Quoted text is literal up to \E.
          const size_t end = pattern.find("\\E", i + 1);
          const size_t stop = end == std::string_view::npos ? pattern.size() : end + 2;
          out.append("\\Q").append(pattern.substr(i + 1, stop - i - 1));
          i = stop - 1;
          break;
        }
        default:
          out.push_back('\\');
          out.push_back(e);
          break;
      }
      continue;
    }
    out.push_back(c);
    if (!in_class && c == '[') {
      in_class = true;
      // A ']' right after '[' or '[^' is a literal member.
      if (i + 1 < pattern.size() && pattern[i + 1] == '^') out.push_back(pattern[++i]);
      if (i + 1 < pattern.size() && pattern[i + 1] == ']') out.push_back(pattern[++i]);
    } else if (in_class && c == '[' && i + 1 < pattern.size() && pattern[i + 1] == ':') {
      // A POSIX class such as [:alpha:] inside a class.
      const size_t end = pattern.find(":]", i + 2);
      if (end != std::string_view::npos) {
        out.append(pattern.substr(i + 1, end + 1 - i));
        i = end + 1;
      }
    } else if (in_class && c == ']') {
      in_class = false;
    }
  }
  return out;
}

}  // namespace

Regex::Regex(std::string_view pattern, const std::string& where) : where_(where) {
  const std::string translated = to_pcre2_syntax(pattern);
  int error = 0;
  PCRE2_SIZE offset = 0;
  code_ = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(translated.data()), translated.size(),
                        PCRE2_UTF | PCRE2_UCP | PCRE2_MULTILINE, &error, &offset, nullptr);
  if (code_ == nullptr) {
    throw Error(kOp, cat(where, ": regex ", text::in_quotes(pattern),
                         " does not compile: ", pcre2_message(error)));
  }
  // JIT makes matching several times faster; without it (an unsupported CPU) the interpreter
  // gives the same matches.
  (void)pcre2_jit_compile(code_, PCRE2_JIT_COMPLETE);
}

Regex::~Regex() { pcre2_code_free(code_); }

void Regex::find_all(std::string_view text, std::vector<std::pair<size_t, size_t>>& out) const {
  MatchData data(pcre2_match_data_create_from_pattern(code_, nullptr));
  if (!data) throw Error(kOp, cat(where_, ": out of memory matching a regex"));
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  size_t search_from = 0;
  bool have_last_end = false;
  size_t last_end = 0;
  while (search_from <= text.size()) {
    // The subject was checked as UTF-8 when it entered encode().
    int rc = pcre2_match(code_, subject, text.size(), search_from, PCRE2_NO_UTF_CHECK, data.get(),
                         nullptr);
    if (rc == PCRE2_ERROR_JIT_STACKLIMIT) {
      // The interpreter keeps its backtracking state on the heap: no fixed stack to run out of.
      rc = pcre2_match(code_, subject, text.size(), search_from, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT,
                       data.get(), nullptr);
    }
    if (rc == PCRE2_ERROR_NOMATCH) return;
    if (rc < 0) throw Error(kOp, cat(where_, ": regex matching failed: ", pcre2_message(rc)));
    const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(data.get());
    const size_t start = ovector[0];
    const size_t end = ovector[1];
    if (start == end && have_last_end && last_end == end) {
      search_from += search_from < text.size()
                         ? utf8_length(static_cast<unsigned char>(text[search_from]))
                         : 1;
      continue;
    }
    search_from = end;
    last_end = end;
    have_last_end = true;
    out.emplace_back(start, end);
  }
}

}  // namespace mlxn::tokenizer_detail
