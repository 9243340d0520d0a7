// CUDA implementation of ops/activations.h (arguments validated by the front end).
#pragma once

#include "mlxn/ops/activations.h"

namespace mlxn::cuda {

// out = act(x), or act(x) * up when up is defined.
void activate(const Buffer& x, const Buffer& up, Activation act, const Buffer& out,
              const Stream& stream);
void softcap(const Buffer& x, float cap, const Buffer& out, const Stream& stream);

}  // namespace mlxn::cuda
