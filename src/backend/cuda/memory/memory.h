// CUDA implementation of ops/memory.h. Arguments are validated by the front end.
#pragma once

#include "mlxn/ops/memory.h"

namespace mlxn::cuda {
void fill_float(const Buffer& out, ScalarArg value, const Stream& stream);
void fill_integer(const Buffer& out, int64_t value, const Stream& stream);
void fill_random(const Buffer& out, const RandomSpec& spec, const Stream& stream);
void copy(const Buffer& src, const Buffer& dst, const Stream& stream);
void cast(const Buffer& src, const Buffer& dst, const Stream& stream);
}  // namespace mlxn::cuda
