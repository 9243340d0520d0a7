#include "core/text.h"

#include <charconv>
#include <cmath>
#include <cstdint>

namespace mlxn::text {

namespace {

template <class T>
std::string shortest(T value) {
  if (std::isfinite(value) && value == std::floor(value) &&
      static_cast<double>(std::fabs(value)) < 1e15) {
    return std::to_string(static_cast<int64_t>(value));
  }
  char buf[64];
  const auto result = std::to_chars(buf, buf + sizeof buf, value);
  return std::string(buf, result.ptr);
}

}  // namespace

std::string format_number(double value) { return shortest(value); }
std::string format_number(float value) { return shortest(value); }

}  // namespace mlxn::text
