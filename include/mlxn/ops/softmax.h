// Softmax and log-softmax over the last axis, of x / temperature. x and out are contiguous, of
// one shape, each f32, bf16 or f16 (independently); out may be x itself (the same view). The
// statistics are f32 and every output is rounded once from f32:
//   z_i = (x_i - max(x)) / temperature
//   softmax:     y_i = exp(z_i) / sum_j exp(z_j)
//   log_softmax: y_i = z_i - log(sum_j exp(z_j))
// temperature must be finite and > 0. Special values, per row:
//   - -inf entries get probability 0 (log_softmax: -inf); the others share the mass as usual.
//   - A row of -inf only has no distribution: softmax writes zeros, log_softmax -inf (no NaN).
//   - A NaN or a +inf entry makes the whole row NaN (+inf - max is inf - inf).
#pragma once

#include "mlxn/core/buffer.h"
#include "mlxn/core/stream.h"

namespace mlxn {

void softmax(const Buffer& x, const Buffer& out, const Stream& stream, float temperature = 1.0f);
void log_softmax(const Buffer& x, const Buffer& out, const Stream& stream,
                 float temperature = 1.0f);

}  // namespace mlxn
