#include "mlxn/ops/softmax.h"

#include <cmath>
#include <string>

#include "backend/cpu/softmax.h"
#include "mlxn/core/dispatch.h"
#include "ops/backend.h"
#if MLXN_WITH_CUDA
#include "backend/cuda/softmax/softmax.h"
#endif

namespace mlxn {

namespace {

void check_float(const char* op, const Buffer& b, const char* name) {
  dispatch_dtype<ComputeDTypes>(
      op, b.dtype(), [](auto) {}, (std::string(name) + " dtype").c_str());
  b.require_contiguous(op, name);
}

void run(const char* op, bool log, const Buffer& x, const Buffer& out, const Stream& stream,
         float temperature) {
  ops_detail::prepare(op, stream, {{"x", &x}, {"out", &out}});
  check_float(op, x, "x");
  check_float(op, out, "out");
  if (x.rank() < 1 || x.dim(-1) == 0)
    throw Error(op, "x needs a non-empty last axis, got " + x.describe());
  ops_detail::require_same_shape(op, x, "x", out, "out");
  if (!(temperature > 0.0f) || !std::isfinite(temperature)) {
    throw Error(op, "temperature must be finite and > 0, got " + std::to_string(temperature));
  }
  // The kernels index a row with 32-bit integers.
  if (x.dim(-1) > (int64_t{1} << 24)) throw Error(op, "rows longer than 2^24 elements");
  ops_detail::require_no_partial_overlap(op, x, "x", out);
  if (x.numel() == 0) return;
  if (stream.device().is_cpu()) {
    cpu::softmax(x, out, temperature, log, stream);
  } else {
    MLXN_CUDA_BACKEND(cuda::softmax(x, out, temperature, log, stream));
  }
}

}  // namespace

void softmax(const Buffer& x, const Buffer& out, const Stream& stream, float temperature) {
  run("softmax", false, x, out, stream, temperature);
}

void log_softmax(const Buffer& x, const Buffer& out, const Stream& stream, float temperature) {
  run("log_softmax", true, x, out, stream, temperature);
}

}  // namespace mlxn
