// Filling, copying and converting buffers. Outputs are written in place (Buffer is a handle, so
// `out` is const even though its elements change). All buffers must be on the stream's device.
#pragma once

#include <cstdint>

#include "mlxn/core/buffer.h"
#include "mlxn/core/scalar.h"
#include "mlxn/core/stream.h"

namespace mlxn {

// Every element of `out` (any dtype, any view) becomes `value`, converted to out's dtype. Integer
// outputs need an integral value in range; float outputs round to nearest even.
void fill(const Buffer& out, ScalarArg value, const Stream& stream);

enum class Distribution { uniform, normal };

struct RandomSpec {
  Distribution distribution = Distribution::normal;
  uint64_t seed = 0;
  float a = 0.0f;  // uniform: low; normal: mean
  float b = 1.0f;  // uniform: high (exclusive); normal: standard deviation
};

// Seeded random fill of a float buffer. Element i (row-major over out's shape) gets a value that
// depends only on (seed, i): the same bits on every backend and for every memory layout.
void fill_random(const Buffer& out, const RandomSpec& spec, const Stream& stream);

// dst = src for same dtype and shape; any strides on either side (stride-0 broadcast sources
// too). Between a CPU and a CUDA buffer both must be contiguous; that copy synchronises.
void copy(const Buffer& src, const Buffer& dst, const Stream& stream);

// dst = src converted to dst's dtype; float dtypes only (f32, f16, bf16, f8e4m3, f8e5m2), same
// shape, any strides. Rounding: float_types.h.
void cast(const Buffer& src, const Buffer& dst, const Stream& stream);

}  // namespace mlxn
