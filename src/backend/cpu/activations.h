// CPU reference of ops/activations.h: each function in f64, one rounding to out's dtype.
#pragma once

#include "mlxn/ops/activations.h"

namespace mlxn::cpu {

// out = act(x), or act(x) * up when up is defined. Views of out's shape, validated.
void activate(const Buffer& x, const Buffer& up, Activation act, const Buffer& out,
              const Stream& stream);
void softcap(const Buffer& x, float cap, const Buffer& out, const Stream& stream);

}  // namespace mlxn::cpu
