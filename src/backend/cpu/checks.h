// CPU reference for ops/checks.h.
#pragma once

#include <cstdint>

#include "mlxn/ops/checks.h"

namespace mlxn::cpu {
void assert_finite(const Buffer& x, uint32_t site, const Stream& stream);
}  // namespace mlxn::cpu
