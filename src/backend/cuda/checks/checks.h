// CUDA implementation of ops/checks.h.
#pragma once

#include <cstdint>

#include "mlxn/ops/checks.h"

namespace mlxn::cuda {
void assert_finite(const Buffer& x, uint32_t site, const Stream& stream);
}  // namespace mlxn::cuda
