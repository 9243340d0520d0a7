#include "mlxn/ops/sampling.h"

#include <cmath>
#include <string>

#include "backend/cpu/sampling.h"
#include "mlxn/core/device_errors.h"
#include "mlxn/core/dispatch.h"
#include "ops/backend.h"
#include "sampling/sampling_job.h"
#if MLXN_WITH_CUDA
#include "backend/cuda/sampling/sampling.h"
#endif

namespace mlxn {

namespace {

using FloatDTypes = DTypeList<DType::f32, DType::bf16, DType::f16>;

void check_logits(const char* op, const Buffer& logits) {
  dispatch_dtype<FloatDTypes>(
      op, logits.dtype(), [](auto) {}, "logits dtype");
  if (logits.rank() != 2 || logits.dim(1) == 0 || !logits.is_contiguous()) {
    throw Error(
        op, "logits must be contiguous [batch, vocab] with vocab > 0, got " + logits.describe());
  }
  if (logits.dim(1) > (int64_t{1} << 31) - 1) throw Error(op, "vocab above 2^31 - 1");
}

void check_row_vector(const char* op, const Buffer& b, const char* name, DType dtype,
                      int64_t batch) {
  if (b.dtype() != dtype || b.rank() != 1 || b.dim(0) != batch || !b.is_contiguous()) {
    throw Error(op, std::string(name) + " must be contiguous " + std::string(dtype_name(dtype)) +
                        " [" + std::to_string(batch) + "], got " + b.describe());
  }
}

void run(sampling::Job& job, const Stream& stream) {
  job.batch = job.logits.dim(0);
  job.vocab = job.logits.dim(1);
  static const uint32_t site = register_error_site("sample", "logits (NaN or no finite value)");
  job.site = site;
  if (job.batch == 0) return;
  if (stream.device().is_cpu()) {
    cpu::sample(job, stream);
  } else {
    MLXN_CUDA_BACKEND(cuda::sample(job, stream));
  }
}

}  // namespace

void argmax(const Buffer& logits, const Buffer& out, const Stream& stream) {
  const char* op = "argmax";
  ops_detail::prepare(op, stream, {{"logits", &logits}, {"out", &out}});
  check_logits(op, logits);
  check_row_vector(op, out, "out", DType::i32, logits.dim(0));
  sampling::Job job;
  job.logits = logits;
  job.out = out;
  job.greedy = true;
  run(job, stream);
}

void sample(const Buffer& logits, const SamplingParams& params, const Buffer& seeds,
            const Buffer& steps, const Buffer& out, const Stream& stream) {
  const char* op = "sample";
  if (params.temperature == 0.0f) {
    argmax(logits, out, stream);
    return;
  }
  ops_detail::prepare(op, stream,
                      {{"logits", &logits}, {"seeds", &seeds}, {"steps", &steps}, {"out", &out}});
  check_logits(op, logits);
  const int64_t batch = logits.dim(0);
  check_row_vector(op, out, "out", DType::i32, batch);
  check_row_vector(op, seeds, "seeds", DType::i64, batch);
  check_row_vector(op, steps, "steps", DType::i64, batch);
  if (!(params.temperature > 0.0f) || !std::isfinite(params.temperature)) {
    throw Error(op, "temperature must be finite and > 0 (0 for greedy), got " +
                        std::to_string(params.temperature));
  }
  if (params.top_k < 0) throw Error(op, "top_k must be >= 0 (0: off)");
  if (!(params.top_p > 0.0f && params.top_p <= 1.0f)) {
    throw Error(op, "top_p must be in (0, 1], got " + std::to_string(params.top_p));
  }
  if (!(params.min_p >= 0.0f && params.min_p <= 1.0f)) {
    throw Error(op, "min_p must be in [0, 1], got " + std::to_string(params.min_p));
  }
  sampling::Job job;
  job.logits = logits;
  job.seeds = seeds;
  job.steps = steps;
  job.out = out;
  job.params = params;
  run(job, stream);
}

void apply_penalties(const Buffer& logits, const Buffer& history, const PenaltyParams& params,
                     const Stream& stream) {
  const char* op = "apply_penalties";
  ops_detail::prepare(op, stream, {{"logits", &logits}, {"history", &history}});
  check_logits(op, logits);
  if (history.dtype() != DType::i32 || history.rank() != 2 || history.dim(0) != logits.dim(0) ||
      !history.is_contiguous()) {
    throw Error(op, "history must be contiguous i32 [" + std::to_string(logits.dim(0)) +
                        ", length], got " + history.describe());
  }
  if (!(params.repetition > 0.0f) || !std::isfinite(params.repetition) ||
      !std::isfinite(params.presence) || !std::isfinite(params.frequency)) {
    throw Error(op, "penalties must be finite, repetition > 0");
  }
  sampling::PenaltyJob job{logits, history, params, logits.dim(0), logits.dim(1), history.dim(1)};
  static const uint32_t site = register_error_site(op, "history (token id >= vocab)");
  job.site = site;
  if (job.batch == 0 || job.length == 0) return;
  if (stream.device().is_cpu()) {
    cpu::apply_penalties(job, stream);
  } else {
    MLXN_CUDA_BACKEND(cuda::apply_penalties(job, stream));
  }
}

}  // namespace mlxn
