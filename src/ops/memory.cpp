#include "mlxn/ops/memory.h"

#include <cmath>
#include <limits>

#include "backend/cpu/memory.h"
#include "mlxn/core/dispatch.h"
#include "ops/backend.h"
#if MLXN_WITH_CUDA
#include "backend/cuda/memory/memory.h"
#endif

namespace mlxn {

namespace {

void check_scalar_buffer(const char* op, const ScalarArg& s, const Stream& stream) {
  if (!s.is_indirect()) return;
  const Buffer& b = s.buffer();
  ops_detail::prepare(op, stream, {{"scalar", &b}});
  if (b.dtype() != DType::f32 || b.numel() != 1) {
    throw Error(op, "an indirect scalar must be one f32 element, got " + b.describe());
  }
}

// The integer range of `d` as doubles (exact for every integer dtype up to i64's bounds).
std::pair<double, double> integer_range(DType d) {
  switch (d) {
    case DType::i8:
      return {-128.0, 127.0};
    case DType::u8:
      return {0.0, 255.0};
    case DType::i32:
      return {-2147483648.0, 2147483647.0};
    case DType::u32:
      return {0.0, 4294967295.0};
    default:
      return {-9223372036854775808.0, 9223372036854775807.0};
  }
}

}  // namespace

void fill(const Buffer& out, ScalarArg value, const Stream& stream) {
  ops_detail::prepare("fill", stream, {{"out", &out}});
  check_scalar_buffer("fill", value, stream);
  if (is_floating(out.dtype())) {
    if (stream.device().is_cpu()) {
      cpu::fill_float(out, value, stream);
    } else {
      MLXN_CUDA_BACKEND(cuda::fill_float(out, value, stream));
    }
    return;
  }
  if (value.is_indirect()) {
    throw Error("fill", "an indirect (buffer) value needs a float output, got " + out.describe());
  }
  const double v = value.value();
  const auto [lo, hi] = integer_range(out.dtype());
  // hi for i64 is 2^63 as a double, which is itself out of range.
  if (!std::isfinite(v) || v != std::floor(v) || v < lo || v > hi ||
      (out.dtype() == DType::i64 && v >= 9223372036854775808.0)) {
    throw Error("fill", "value " + std::to_string(v) + " is not representable in " +
                            std::string(dtype_name(out.dtype())));
  }
  if (stream.device().is_cpu()) {
    cpu::fill_integer(out, static_cast<int64_t>(v), stream);
  } else {
    MLXN_CUDA_BACKEND(cuda::fill_integer(out, static_cast<int64_t>(v), stream));
  }
}

void fill_random(const Buffer& out, const RandomSpec& spec, const Stream& stream) {
  ops_detail::prepare("fill_random", stream, {{"out", &out}});
  dispatch_dtype<FloatDTypes>(
      "fill_random", out.dtype(), [](auto) {}, "output dtype");
  if (!std::isfinite(spec.a) || !std::isfinite(spec.b) || !std::isfinite(spec.b - spec.a)) {
    throw Error("fill_random", "parameters must be finite, got a=" + std::to_string(spec.a) +
                                   " b=" + std::to_string(spec.b));
  }
  if (spec.distribution == Distribution::uniform && !(spec.a < spec.b)) {
    throw Error("fill_random", "uniform needs low < high, got [" + std::to_string(spec.a) + ", " +
                                   std::to_string(spec.b) + ")");
  }
  if (spec.distribution == Distribution::normal && spec.b < 0) {
    throw Error("fill_random", "normal needs stddev >= 0, got " + std::to_string(spec.b));
  }
  if (stream.device().is_cpu()) {
    cpu::fill_random(out, spec, stream);
  } else {
    MLXN_CUDA_BACKEND(cuda::fill_random(out, spec, stream));
  }
}

void copy(const Buffer& src, const Buffer& dst, const Stream& stream) {
  if (!src.defined() || !dst.defined()) throw Error("copy", "undefined buffer");
  if (src.dtype() != dst.dtype()) {
    throw Error("copy", "dtype mismatch: src " + src.describe() + ", dst " + dst.describe() +
                            " (use cast to convert)");
  }
  ops_detail::require_same_shape("copy", src, "src", dst, "dst");
  if (src.device() != dst.device()) {
    // Host <-> device transfer: both sides contiguous, one synchronous memcpy.
    src.require_contiguous("copy", "src of a cross-device copy");
    dst.require_contiguous("copy", "dst of a cross-device copy");
    if (src.device().is_cpu()) {
      dst.copy_from_host(src.data(), src.nbytes(), stream);
    } else {
      src.copy_to_host(dst.data(), dst.nbytes(), stream);
    }
    return;
  }
  ops_detail::prepare("copy", stream, {{"src", &src}, {"dst", &dst}});
  if (stream.device().is_cpu()) {
    cpu::copy(src, dst, stream);
  } else {
    MLXN_CUDA_BACKEND(cuda::copy(src, dst, stream));
  }
}

void cast(const Buffer& src, const Buffer& dst, const Stream& stream) {
  ops_detail::prepare("cast", stream, {{"src", &src}, {"dst", &dst}});
  ops_detail::require_same_shape("cast", src, "src", dst, "dst");
  dispatch_dtype<FloatDTypes>(
      "cast", src.dtype(), [](auto) {}, "source dtype");
  dispatch_dtype<FloatDTypes>(
      "cast", dst.dtype(), [](auto) {}, "destination dtype");
  if (stream.device().is_cpu()) {
    cpu::cast(src, dst, stream);
  } else {
    MLXN_CUDA_BACKEND(cuda::cast(src, dst, stream));
  }
}

}  // namespace mlxn
