// CUDA implementation of ops/elementwise.h. Inputs are already broadcast to
// out's shape by the front end.
#pragma once

#include "mlxn/ops/elementwise.h"
#include "ops/elementwise_kind.h"

namespace mlxn::cuda {
void binary(BinaryOp op, const Buffer& a, const Buffer& b, const Buffer& out, const Stream& stream);
void scale(const Buffer& x, ScalarArg factor, const Buffer& out, const Stream& stream);
}  // namespace mlxn::cuda
