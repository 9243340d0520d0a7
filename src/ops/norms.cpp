#include "mlxn/ops/norms.h"

#include <cmath>
#include <string>

#include "backend/cpu/norms.h"
#include "mlxn/core/dispatch.h"
#include "norms/norm_job.h"
#include "ops/backend.h"
#if MLXN_WITH_CUDA
#include "backend/cuda/norms/norms.h"
#endif

namespace mlxn {

namespace {

using FloatDTypes = DTypeList<DType::f32, DType::bf16, DType::f16>;

void check_float(const char* op, const Buffer& b, const char* name) {
  dispatch_dtype<FloatDTypes>(
      op, b.dtype(), [](auto) {}, (std::string(name) + " dtype").c_str());
  b.require_contiguous(op, name);
}

void check_vector(const char* op, const Buffer& b, int64_t n, const char* name) {
  check_float(op, b, name);
  if (b.rank() != 1 || b.dim(0) != n) {
    throw Error(op,
                std::string(name) + " must be [" + std::to_string(n) + "], got " + b.describe());
  }
}

void run(const char* op, norms::Job& job, const Stream& stream) {
  const Buffer& x = job.x;
  ops_detail::prepare(op, stream, {{"x", &x}, {"out", &job.out}});
  check_float(op, x, "x");
  check_float(op, job.out, "out");
  if (x.rank() < 1 || x.dim(-1) == 0)
    throw Error(op, "x needs a non-empty last axis, got " + x.describe());
  ops_detail::require_same_shape(op, x, "x", job.out, "out");
  if (!(job.eps >= 0.0f) || !std::isfinite(job.eps)) throw Error(op, "eps must be finite and >= 0");
  job.dim = x.dim(-1);
  job.rows = x.numel() / job.dim;
  if (job.dim > (int64_t{1} << 24)) throw Error(op, "rows longer than 2^24 elements");
  for (const auto& [b, name] : {std::pair{&job.weight, "weight"}, std::pair{&job.bias, "bias"}}) {
    if (!b->defined()) continue;
    ops_detail::prepare(op, stream, {{name, b}});
    check_vector(op, *b, job.dim, name);
  }
  if (job.residual.defined()) {
    ops_detail::prepare(op, stream, {{"residual", &job.residual}, {"sum_out", &job.sum_out}});
    check_float(op, job.residual, "residual");
    check_float(op, job.sum_out, "sum_out");
    ops_detail::require_same_shape(op, x, "x", job.residual, "residual");
    ops_detail::require_same_shape(op, x, "x", job.sum_out, "sum_out");
    if (job.residual.dtype() != x.dtype() || job.sum_out.dtype() != x.dtype()) {
      throw Error(op,
                  "residual and sum_out must have x's dtype " + std::string(dtype_name(x.dtype())));
    }
  }
  if (x.numel() == 0) return;
  if (stream.device().is_cpu()) {
    cpu::normalize(job, stream);
  } else {
    MLXN_CUDA_BACKEND(cuda::normalize(job, stream));
  }
}

}  // namespace

void rms_norm(const Buffer& x, const Buffer& weight, float eps, const Buffer& out,
              const Stream& stream, RmsWeight mode) {
  ops_detail::require_weight_for_mode("rms_norm", mode, weight);
  norms::Job job{norms::Kind::rms, mode, x, {}, weight, {}, {}, out, eps};
  run("rms_norm", job, stream);
}

void add_rms_norm(const Buffer& x, const Buffer& residual, const Buffer& weight, float eps,
                  const Buffer& sum_out, const Buffer& norm_out, const Stream& stream,
                  RmsWeight mode) {
  const char* op = "add_rms_norm";
  ops_detail::require_weight_for_mode(op, mode, weight);
  if (!residual.defined() || !sum_out.defined())
    throw Error(op, "residual and sum_out are required");
  norms::Job job{norms::Kind::rms, mode, x, residual, weight, {}, sum_out, norm_out, eps};
  run(op, job, stream);
}

void layer_norm(const Buffer& x, const Buffer& weight, const Buffer& bias, float eps,
                const Buffer& out, const Stream& stream) {
  norms::Job job{norms::Kind::layer, RmsWeight::none, x, {}, weight, bias, {}, out, eps};
  run("layer_norm", job, stream);
}

void l2_norm(const Buffer& x, float eps, const Buffer& out, const Stream& stream) {
  norms::Job job{norms::Kind::l2, RmsWeight::none, x, {}, {}, {}, {}, out, eps};
  run("l2_norm", job, stream);
}

}  // namespace mlxn
