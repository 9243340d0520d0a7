// CUDA implementation of ops/softmax.h (arguments validated by the front end).
#pragma once

#include "mlxn/ops/softmax.h"

namespace mlxn::cuda {

void softmax(const Buffer& x, const Buffer& out, float temperature, bool log, const Stream& stream);

}  // namespace mlxn::cuda
