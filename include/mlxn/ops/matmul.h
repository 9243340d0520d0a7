// y = x·Wᵀ (+ bias) for a Weight in any format of ops/weights.h: the linear layer.
//   x:    [..., K] f32 / bf16 / f16 (rows contiguous; leading axes flattened to M rows)
//   w:    Weight [N, K]
//   bias: [N] f32 / bf16 / f16, or undefined
//   out:  [..., N] f32 / bf16 / f16, the leading axes of x
// Products are accumulated in f32 and rounded once to out's dtype. On the GPU, M ≤ 16 rows read
// the weight once in its packed form (bandwidth path); larger M run on the tensor cores
// (cuBLASLt; a packed weight is first dequantized into x's dtype, in tiles of up to 128 MiB
// taken from the stream's pool for the call). The CPU reference accumulates in f64.
#pragma once

#include "mlxn/core/buffer.h"
#include "mlxn/core/stream.h"
#include "mlxn/ops/weights.h"

namespace mlxn {

void matmul(const Buffer& x, const Weight& w, const Buffer& bias, const Buffer& out,
            const Stream& stream);

}  // namespace mlxn
