// Elementwise arithmetic on f32/f16/bf16. Computation is in f32, rounded once to out's dtype.
// Inputs broadcast to out's shape by numpy rules (trailing axes aligned, size-1 axes repeat);
// `out` may alias an input exactly (same view) but not overlap it otherwise.
#pragma once

#include "mlxn/core/buffer.h"
#include "mlxn/core/scalar.h"
#include "mlxn/core/stream.h"

namespace mlxn {

void add(const Buffer& a, const Buffer& b, const Buffer& out, const Stream& stream);
void mul(const Buffer& a, const Buffer& b, const Buffer& out, const Stream& stream);
// out = x * factor.
void scale(const Buffer& x, ScalarArg factor, const Buffer& out, const Stream& stream);

}  // namespace mlxn
