// CPU reference of ops/softmax.h: statistics in f64, one rounding to out's dtype.
#pragma once

#include "mlxn/ops/softmax.h"

namespace mlxn::cpu {

void softmax(const Buffer& x, const Buffer& out, float temperature, bool log, const Stream& stream);

}  // namespace mlxn::cpu
