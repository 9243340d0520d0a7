#include "io/json_util.h"

#include <set>
#include <vector>

#include "io/mapped_file.h"
#include "mlxn/core/error.h"

namespace mlxn::io::json_util {

bool valid_utf8(std::string_view text, size_t* bad_offset) {
  const auto* s = reinterpret_cast<const unsigned char*>(text.data());
  const size_t n = text.size();
  size_t i = 0;
  while (i < n) {
    const unsigned char c = s[i];
    size_t len = 0;
    uint32_t cp = 0;
    if (c < 0x80) {
      ++i;
      continue;
    } else if ((c & 0xe0) == 0xc0) {
      len = 2;
      cp = c & 0x1fu;
    } else if ((c & 0xf0) == 0xe0) {
      len = 3;
      cp = c & 0x0fu;
    } else if ((c & 0xf8) == 0xf0) {
      len = 4;
      cp = c & 0x07u;
    } else {
      if (bad_offset) *bad_offset = i;
      return false;
    }
    bool ok = i + len <= n;
    for (size_t k = 1; ok && k < len; ++k) {
      ok = (s[i + k] & 0xc0) == 0x80;
      cp = (cp << 6) | (s[i + k] & 0x3fu);
    }
    // Shortest form only, no UTF-16 surrogates, nothing past U+10FFFF.
    static constexpr uint32_t kMinForLength[] = {0, 0, 0x80, 0x800, 0x10000};
    ok = ok && cp >= kMinForLength[len] && cp <= 0x10ffff && !(cp >= 0xd800 && cp <= 0xdfff);
    if (!ok) {
      if (bad_offset) *bad_offset = i;
      return false;
    }
    i += len;
  }
  return true;
}

template <class Json>
Json parse_strict(std::string_view text, const std::string& file, const char* op,
                  const char* what) {
  size_t bad = 0;
  if (!valid_utf8(text, &bad)) {
    throw Error(op, file + ": " + what + " is not valid UTF-8 (byte " + std::to_string(bad) + ")");
  }
  using json = Json;
  using event_t = typename json::parse_event_t;
  // One key set per open object; the first repeated key is reported after the parse.
  std::vector<std::set<std::string>> open_objects;
  std::string duplicate, top_level_key;
  const typename json::parser_callback_t on_event = [&](int /*depth*/, event_t event,
                                                        json& parsed) {
    switch (event) {
      case event_t::object_start:
        open_objects.emplace_back();
        break;
      case event_t::object_end:
        if (!open_objects.empty()) open_objects.pop_back();
        break;
      case event_t::key: {
        const auto key = parsed.template get<std::string>();
        if (open_objects.size() == 1) top_level_key = key;
        if (!open_objects.empty() && !open_objects.back().insert(key).second && duplicate.empty()) {
          duplicate = std::string("'").append(key).append("'");
          if (open_objects.size() > 1)
            duplicate.append(" (inside '").append(top_level_key).append("')");
        }
        break;
      }
      default:
        break;
    }
    return true;
  };
  json root;
  try {
    root = json::parse(text.begin(), text.end(), on_event);
  } catch (const typename json::exception& e) {
    throw Error(op, file + ": " + what + " is not valid JSON: " + e.what());
  }
  if (!duplicate.empty()) {
    throw Error(op, file + ": " + what + " has the key " + duplicate + " more than once");
  }
  return root;
}

template <class Json>
Json read_file_strict(const std::string& path, const char* op, const char* what) {
  const MappedFile file(path, op);
  const auto bytes = file.bytes();
  return parse_strict<Json>(
      std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()), path, op, what);
}

template nlohmann::json parse_strict<nlohmann::json>(std::string_view, const std::string&,
                                                     const char*, const char*);
template nlohmann::ordered_json parse_strict<nlohmann::ordered_json>(std::string_view,
                                                                     const std::string&,
                                                                     const char*, const char*);
template nlohmann::json read_file_strict<nlohmann::json>(const std::string&, const char*,
                                                         const char*);
template nlohmann::ordered_json read_file_strict<nlohmann::ordered_json>(const std::string&,
                                                                         const char*, const char*);

}  // namespace mlxn::io::json_util
