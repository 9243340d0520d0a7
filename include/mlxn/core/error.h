// mlxn::Error: the one exception type the library throws. Messages start with "[op]" and name
// the offending value, e.g. "[add] shape mismatch: a [2,3] vs b [3,2]".
#pragma once

#include <stdexcept>
#include <string>
#include <string_view>

namespace mlxn {

class Error : public std::runtime_error {
 public:
  // `op` is the bracketed prefix ("add", "pool", "cuda"); `what` the rest of the message.
  Error(std::string_view op, std::string_view what);

  const std::string& op() const noexcept { return op_; }

 private:
  std::string op_;
};

// Throws Error(op, what) when `condition` is false. For validating user input in front ends.
inline void check(bool condition, std::string_view op, std::string_view what) {
  if (!condition) throw Error(op, what);
}

}  // namespace mlxn
