// Runtime checks on device data, reported through the device error flag: the op returns at once
// and the next synchronisation of a stream on that device throws
// "[assert_finite] non-finite value nan at index 17 of <label> on cuda:0".
#pragma once

#include <string_view>

#include "mlxn/core/buffer.h"
#include "mlxn/core/stream.h"

namespace mlxn {

// Reports the first NaN or Inf in `x` (float dtypes, any view). `label` names the buffer in the
// error ("k_cache layer 3").
void assert_finite(const Buffer& x, std::string_view label, const Stream& stream);

}  // namespace mlxn
