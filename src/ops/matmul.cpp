#include "mlxn/ops/matmul.h"

#include <string>

#include "backend/cpu/matmul.h"
#include "matmul/matmul_job.h"
#include "mlxn/core/dispatch.h"
#include "ops/backend.h"
#if MLXN_WITH_CUDA
#include "backend/cuda/matmul/matmul.h"
#endif

namespace mlxn {

void matmul(const Buffer& x, const Weight& w, const Buffer& bias, const Buffer& out,
            const Stream& stream) {
  const char* op = "matmul";
  if (!w.defined()) throw Error(op, "the weight is undefined");
  ops_detail::prepare(op, stream, {{"x", &x}, {"out", &out}, {"weight", &w.data()}});
  if (w.format() == WeightFormat::mlx_affine) {
    ops_detail::prepare(op, stream, {{"scales", &w.scales()}, {"biases", &w.biases()}});
  }
  ops_detail::require_float(op, x, "x");
  ops_detail::require_float(op, out, "out");
  x.require_contiguous(op, "x");
  out.require_contiguous(op, "out");
  if (x.rank() < 1 || x.dim(-1) != w.in_features()) {
    throw Error(op, "x " + x.describe() + " must end in K = " + std::to_string(w.in_features()) +
                        " for weight " + w.describe());
  }
  Shape out_shape = x.shape();
  out_shape.back() = w.out_features();
  if (out.shape() != out_shape) {
    throw Error(op, "out must be " + shape_str(out_shape) + " for x " + x.describe() +
                        " and weight " + w.describe() + ", got " + out.describe());
  }
  if (bias.defined()) {
    ops_detail::prepare(op, stream, {{"bias", &bias}});
    ops_detail::require_float(op, bias, "bias");
    bias.require_contiguous(op, "bias");
    if (bias.rank() != 1 || bias.dim(0) != w.out_features()) {
      throw Error(
          op, "bias must be [" + std::to_string(w.out_features()) + "], got " + bias.describe());
    }
  }
  ops_detail::require_disjoint(op, x, "x", out);
  ops_detail::require_disjoint(op, w.data(), "weight", out);
  if (bias.defined()) ops_detail::require_disjoint(op, bias, "bias", out);
  linear::Job job{x, w, bias, out, 0, w.out_features(), w.in_features()};
  job.m = w.in_features() == 0 ? 0 : x.numel() / w.in_features();
  if (job.m == 0 || job.n == 0) return;
  job.x = x.reshape({job.m, job.k});
  job.out = out.reshape({job.m, job.n});
  if (stream.device().is_cpu()) {
    cpu::matmul(job, stream);
  } else {
    MLXN_CUDA_BACKEND(cuda::matmul(job, stream));
  }
}

}  // namespace mlxn
