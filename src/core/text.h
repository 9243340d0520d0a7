// Message building shared by the library's front ends and readers (internal to src/).
#pragma once

#include <concepts>
#include <string>
#include <string_view>

namespace mlxn::text {

// A number as a person would write it: integers without a fraction ("10000"), others in the
// shortest form that reads back exactly ("1e-05", "0.0625"); a float in its own shortest form
// (1e-06, not 9.99e-07).
std::string format_number(double value);
std::string format_number(float value);

inline void append_part(std::string& out, std::string_view part) { out.append(part); }
template <std::integral T>
void append_part(std::string& out, T value) {
  out.append(std::to_string(value));
}
inline void append_part(std::string& out, double value) { out.append(format_number(value)); }
inline void append_part(std::string& out, float value) { out.append(format_number(value)); }

// Concatenates strings and numbers. Messages are built this way rather than with
// `"literal" + std::string(...)`, which GCC 12 misreports under -Wrestrict.
template <class... Parts>
std::string cat(const Parts&... parts) {
  std::string out;
  (append_part(out, parts), ...);
  return out;
}

// 'text', for names and values quoted in messages.
inline std::string in_quotes(std::string_view s) { return cat("'", s, "'"); }

}  // namespace mlxn::text
