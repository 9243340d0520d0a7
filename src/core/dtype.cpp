#include "mlxn/core/dtype.h"

#include "mlxn/core/error.h"

namespace mlxn {

std::string_view dtype_name(DType d) {
  switch (d) {
#define MLXN_DTYPE_NAME(name, bits, kind) \
  case DType::name:                       \
    return #name;
    MLXN_DTYPE_TABLE(MLXN_DTYPE_NAME)
#undef MLXN_DTYPE_NAME
  }
  return "unknown";
}

DType parse_dtype(std::string_view name) {
#define MLXN_DTYPE_PARSE(n, bits, kind) \
  if (name == #n) return DType::n;
  MLXN_DTYPE_TABLE(MLXN_DTYPE_PARSE)
#undef MLXN_DTYPE_PARSE
  std::string valid;
#define MLXN_DTYPE_LIST(n, bits, kind) valid += valid.empty() ? #n : ", " #n;
  MLXN_DTYPE_TABLE(MLXN_DTYPE_LIST)
#undef MLXN_DTYPE_LIST
  throw Error("dtype", "unknown dtype '" + std::string(name) + "' (valid: " + valid + ")");
}

}  // namespace mlxn
