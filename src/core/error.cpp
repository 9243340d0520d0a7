#include "mlxn/core/error.h"

namespace mlxn {

namespace {
std::string compose(std::string_view op, std::string_view what) {
  std::string message;
  message.reserve(op.size() + what.size() + 3);
  message += '[';
  message += op;
  message += "] ";
  message += what;
  return message;
}
}  // namespace

Error::Error(std::string_view op, std::string_view what)
    : std::runtime_error(compose(op, what)), op_(op) {}

}  // namespace mlxn
