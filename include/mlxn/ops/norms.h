// Row normalisations over the last axis: RMSNorm (plain, weighted, Gemma's (1 + w)), residual add
// fused with RMSNorm, LayerNorm, L2 norm. Per-head Q/K RMSNorm is rms_norm on [tokens, heads, D]
// with a [D] weight. Inputs, weights and outputs are f32, bf16 or f16 (each its own dtype),
// contiguous; statistics are accumulated in f32 and every output is rounded once from f32.
// The formulas, element by element (n = the last axis' size):
//   rms_norm:   y = x * rsqrt(sum(x^2) / n + eps) * w'      w' = 1, w or 1 + w (RmsWeight)
//   add_rms_norm: s = x + residual, rounded to x's dtype (residual and sum_out share it); then
//                 rms_norm of that s
//   layer_norm: y = (x - mean) * rsqrt(var + eps) * w + b  var = sum((x - mean)^2) / n
//   l2_norm:    y = x * rsqrt(sum(x^2) + eps)
// Hugging Face's Llama RMSNorm rounds x * rsqrt(..) to the model dtype before multiplying by w;
// these ops round once, after the multiply (at most one bf16/f16 rounding apart).
#pragma once

#include "mlxn/core/buffer.h"
#include "mlxn/core/stream.h"

namespace mlxn {

enum class RmsWeight {
  none,      // y = x * rsqrt(..)
  multiply,  // y = x * rsqrt(..) * w
  one_plus,  // y = x * rsqrt(..) * (1 + w)   (Gemma)
};

// weight: [n] (undefined with RmsWeight::none). eps >= 0.
void rms_norm(const Buffer& x, const Buffer& weight, float eps, const Buffer& out,
              const Stream& stream, RmsWeight mode = RmsWeight::multiply);
// sum_out = x + residual (the new residual stream), norm_out = rms_norm(sum_out).
void add_rms_norm(const Buffer& x, const Buffer& residual, const Buffer& weight, float eps,
                  const Buffer& sum_out, const Buffer& norm_out, const Stream& stream,
                  RmsWeight mode = RmsWeight::multiply);
// weight and bias: [n] each, either may be undefined (then 1 and 0).
void layer_norm(const Buffer& x, const Buffer& weight, const Buffer& bias, float eps,
                const Buffer& out, const Stream& stream);
void l2_norm(const Buffer& x, float eps, const Buffer& out, const Stream& stream);

}  // namespace mlxn
