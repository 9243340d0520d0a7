// Pointwise activations, the gated forms of the MLP (SwiGLU, GeGLU, sigmoid gate) and logit
// soft-capping. Inputs and out share one dtype (f32, bf16 or f16) and out's shape exactly (no
// broadcasting); inputs may be strided views (e.g. gate = fused.slice(-1, 0, I) and
// up = fused.slice(-1, I, 2 * I) of a fused [M, 2I] projection), out any view. out may be an
// input itself (the same view); any other overlap with an input is rejected.
// Each output is computed in f32 and rounded once to out's dtype. The functions:
//   silu(x)      = x / (1 + exp(-x))
//   sigmoid(x)   = 1 / (1 + exp(-x))
//   gelu_tanh(x) = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
//   gelu_erf(x)  = 0.5 x (1 + erf(x / sqrt(2)))
// evaluated in forms that neither overflow nor cancel for large |x|: exp only of -|.|, and
// 1 + tanh(z) = 2 sigmoid(2z), 1 + erf(t) = erfc(-t), so the small negative tails keep their
// relative accuracy. Infinities give the limits: silu, gelu_* (-inf) = -0 and (+inf) = +inf;
// sigmoid(-inf) = 0, sigmoid(+inf) = 1; NaN gives NaN.
#pragma once

#include "mlxn/core/buffer.h"
#include "mlxn/core/stream.h"

namespace mlxn {

enum class Activation { silu, gelu_tanh, gelu_erf, sigmoid };
// "silu", "gelu_tanh", "gelu_erf", "sigmoid" (as configs and logs spell them).
const char* activation_name(Activation act);

// out = act(x).
void activate(const Buffer& x, Activation act, const Buffer& out, const Stream& stream);
// out = act(gate) * up (the product in f32, then one rounding): SwiGLU with silu, GeGLU with
// gelu_tanh or gelu_erf, a sigmoid gate with sigmoid.
void gated_activation(const Buffer& gate, const Buffer& up, Activation act, const Buffer& out,
                      const Stream& stream);
// out = cap * tanh(x / cap) (Gemma's attention and final-logit soft-capping); cap finite > 0.
// softcap(+-inf) = +-cap.
void softcap(const Buffer& x, float cap, const Buffer& out, const Stream& stream);

}  // namespace mlxn
