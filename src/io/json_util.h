// JSON parsing shared by the file readers: a strict parse that the library's error messages can
// rely on. Internal to src/ (nlohmann never appears in a public header).
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

namespace mlxn::io::json_util {

// True when `text` is well-formed UTF-8 (no overlong forms, surrogates or code points past
// U+10FFFF); `bad_offset` receives the first bad byte's offset otherwise.
bool valid_utf8(std::string_view text, size_t* bad_offset = nullptr);

// Parses `text` (from `file`; `what` names it: "header", "config"). Unlike a plain parse, which
// lets the last of two equal keys win silently, a repeated key in any object is an error. Throws
// Error(op, "<file>: <what> ...") for non-UTF-8 text, invalid JSON and duplicate keys. Json is
// nlohmann::ordered_json (keeps key order: configs that are written back) or nlohmann::json
// (sorted, logarithmic lookups: safetensors headers with many thousand entries).
template <class Json = nlohmann::ordered_json>
Json parse_strict(std::string_view text, const std::string& file, const char* op, const char* what);

// Reads and parses a whole JSON file with parse_strict.
template <class Json = nlohmann::ordered_json>
Json read_file_strict(const std::string& path, const char* op, const char* what);

}  // namespace mlxn::io::json_util
