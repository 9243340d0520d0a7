// The tensor-core path of matmul (and the only path for f32 x): cuBLASLt, with a weight in any
// other format than x's dtype dequantized into x's dtype tile by tile. The tile is large (up to
// 128 MiB, the whole weight of an 8B model's largest projection): at M ≥ 512 the GEMM is
// compute-bound, so it gains nothing from a tile that stays in L2, and a small tile splits it
// into partial waves (24 MiB tiles: MLX 4-bit 14336 × 4096, M 512, 198 µs against 171 µs with
// one tile on the H200, docs/perf.md).
//
// In cuBLASLt's column-major terms: out^T [N, M] = W [N, K] · x^T [K, M]; W row-major is W^T
// column-major (op T), x row-major is x^T column-major (op N), out row-major [M, N] is out^T
// column-major with leading dimension N, and a tile of W rows [n0, n0 + n) writes rows
// [n0, n0 + n) of out^T: the pointer out + n0 with the same leading dimension.
#include <cublasLt.h>

#include <algorithm>
#include <array>
#include <map>
#include <memory>
#include <mutex>
#include <tuple>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/matmul/matmul.h"
#include "mlxn/ops/memory.h"

namespace mlxn::cuda {

namespace {

// Bytes of one staging tile of dequantized weight rows (temporary memory of the call).
constexpr int64_t kStagingBytes = int64_t{128} << 20;
constexpr size_t kWorkspaceBytes = size_t{32} << 20;

cudaDataType_t cuda_type(DType d) {
  switch (d) {
    case DType::f32:
      return CUDA_R_32F;
    case DType::bf16:
      return CUDA_R_16BF;
    case DType::f16:
      return CUDA_R_16F;
    default:
      throw Error("matmul", "no cuBLASLt type for " + std::string(dtype_name(d)));
  }
}

cublasLtHandle_t lt_handle(int device) {
  static std::mutex mutex;
  static std::map<int, cublasLtHandle_t> handles;  // one per device, for the process lifetime
  std::lock_guard<std::mutex> lock(mutex);
  auto it = handles.find(device);
  if (it != handles.end()) return it->second;
  cublasLtHandle_t h = nullptr;
  MLXN_CUBLAS_CHECK(cublasLtCreate(&h));
  handles.emplace(device, h);
  return h;
}

// RAII for the cuBLASLt descriptors of one call.
struct LtDescriptors {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, d = nullptr;
  cublasLtMatmulPreference_t preference = nullptr;
  LtDescriptors() = default;
  LtDescriptors(const LtDescriptors&) = delete;
  LtDescriptors& operator=(const LtDescriptors&) = delete;
  ~LtDescriptors() {
    if (preference) cublasLtMatmulPreferenceDestroy(preference);
    if (d) cublasLtMatrixLayoutDestroy(d);
    if (b) cublasLtMatrixLayoutDestroy(b);
    if (a) cublasLtMatrixLayoutDestroy(a);
    if (op) cublasLtMatmulDescDestroy(op);
  }
};

// The descriptors and the heuristic's algorithm for one problem shape, built once: creating them
// and querying the heuristic costs microseconds of host time on every call otherwise.
struct LtPlan {
  LtDescriptors desc;
  cublasLtMatmulHeuristicResult_t choice{};
};

std::unique_ptr<LtPlan> make_plan(cublasLtHandle_t handle, int64_t m, int64_t n, int64_t k,
                                  int64_t ldd, cudaDataType_t ab, cudaDataType_t dt, bool bias) {
  auto plan = std::make_unique<LtPlan>();
  LtDescriptors& desc = plan->desc;
  MLXN_CUBLAS_CHECK(cublasLtMatmulDescCreate(&desc.op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const cublasOperation_t trans = CUBLAS_OP_T, no_trans = CUBLAS_OP_N;
  MLXN_CUBLAS_CHECK(
      cublasLtMatmulDescSetAttribute(desc.op, CUBLASLT_MATMUL_DESC_TRANSA, &trans, sizeof(trans)));
  MLXN_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc.op, CUBLASLT_MATMUL_DESC_TRANSB, &no_trans,
                                                   sizeof(no_trans)));
  if (bias) {
    const cublasLtEpilogue_t epilogue = CUBLASLT_EPILOGUE_BIAS;
    MLXN_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc.op, CUBLASLT_MATMUL_DESC_EPILOGUE,
                                                     &epilogue, sizeof(epilogue)));
    MLXN_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc.op, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE,
                                                     &dt, sizeof(dt)));
  }
  MLXN_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&desc.a, ab, static_cast<uint64_t>(k),
                                               static_cast<uint64_t>(n), k));
  MLXN_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&desc.b, ab, static_cast<uint64_t>(k),
                                               static_cast<uint64_t>(m), k));
  MLXN_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&desc.d, dt, static_cast<uint64_t>(n),
                                               static_cast<uint64_t>(m), ldd));
  MLXN_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&desc.preference));
  const size_t workspace_bytes = kWorkspaceBytes;
  MLXN_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
      desc.preference, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace_bytes,
      sizeof(workspace_bytes)));
  int found = 0;
  MLXN_CUBLAS_CHECK(cublasLtMatmulAlgoGetHeuristic(handle, desc.op, desc.a, desc.b, desc.d, desc.d,
                                                   desc.preference, 1, &plan->choice, &found));
  if (found == 0) {
    throw Error("matmul", "cuBLASLt has no algorithm for m " + std::to_string(m) + ", n " +
                              std::to_string(n) + ", k " + std::to_string(k));
  }
  return plan;
}

// out[:, n0 : n0 + n] (leading dimension ldd) = x [m, k] · w_rows [n, k]^T (+ bias[n0 : n0 + n]).
// w_rows and x share a dtype; bias (if given) has out's dtype.
void lt_matmul(const void* w_rows, const void* x, void* out, const void* bias, int64_t m, int64_t n,
               int64_t k, int64_t ldd, DType in_type, DType out_type, const Stream& stream) {
  const int device = stream.device().index;
  const cublasLtHandle_t handle = lt_handle(device);
  const cudaDataType_t ab = cuda_type(in_type), dt = cuda_type(out_type);
  using Key = std::tuple<int, int64_t, int64_t, int64_t, int64_t, int, int, bool>;
  static std::mutex mutex;
  static std::map<Key, std::unique_ptr<LtPlan>> plans;  // for the process lifetime
  // The plan's descriptor carries the bias pointer of this call: set and used under the lock.
  std::lock_guard<std::mutex> lock(mutex);
  const Key key{device, m, n, k, ldd, static_cast<int>(ab), static_cast<int>(dt), bias != nullptr};
  auto it = plans.find(key);
  if (it == plans.end()) {
    it = plans.emplace(key, make_plan(handle, m, n, k, ldd, ab, dt, bias != nullptr)).first;
  }
  const LtPlan& plan = *it->second;
  if (bias != nullptr) {
    MLXN_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(
        plan.desc.op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof(bias)));
  }
  Buffer workspace =
      Buffer::empty({static_cast<int64_t>(plan.choice.workspaceSize) + 1}, DType::u8, stream);
  stream.retain_for_capture(workspace.allocation());
  const float alpha = 1.0f, beta = 0.0f;
  MLXN_CUBLAS_CHECK(cublasLtMatmul(handle, plan.desc.op, &alpha, w_rows, plan.desc.a, x,
                                   plan.desc.b, &beta, out, plan.desc.d, out, plan.desc.d,
                                   &plan.choice.algo, workspace.data(), plan.choice.workspaceSize,
                                   static_cast<cudaStream_t>(stream.native_handle())));
}

}  // namespace

void matmul(const linear::Job& job, const Stream& stream) {
  if (gemv_packed(job, stream)) return;
  const DType in_type = job.x.dtype();
  // cuBLASLt writes f32 from f32 inputs, and x's dtype or f32 from 16-bit inputs; other output
  // dtypes go through an f32 result and one cast.
  const bool direct_out = job.out.dtype() == DType::f32 || job.out.dtype() == in_type;
  Buffer result = direct_out ? job.out : Buffer::empty({job.m, job.n}, DType::f32, stream);
  if (!direct_out) stream.retain_for_capture(result.allocation());
  Buffer bias;
  if (job.bias.defined()) {
    bias = job.bias;
    if (bias.dtype() != result.dtype()) {
      bias = Buffer::empty({job.n}, result.dtype(), stream);
      stream.retain_for_capture(bias.allocation());
      cast(job.bias, bias, stream);
    }
  }
  const auto bias_at = [&](int64_t n0) -> const void* {
    if (!bias.defined()) return nullptr;
    return static_cast<const uint8_t*>(bias.data()) + n0 * bias.element_size();
  };
  uint8_t* out = static_cast<uint8_t*>(result.data());
  const int64_t out_elem = result.element_size();
  const Weight& w = job.w;
  if (w.format() == WeightFormat::dense && w.data().dtype() == in_type) {
    lt_matmul(w.data().data(), job.x.data(), out, bias_at(0), job.m, job.n, job.k, job.n, in_type,
              result.dtype(), stream);
  } else {
    const int64_t row_bytes = job.k * dtype_size(in_type);
    const int64_t tile = std::clamp<int64_t>(kStagingBytes / row_bytes / 128 * 128, 128, job.n);
    Buffer staging = Buffer::empty({tile, job.k}, in_type, stream);
    stream.retain_for_capture(staging.allocation());
    for (int64_t n0 = 0; n0 < job.n; n0 += tile) {
      const int64_t rows = std::min(tile, job.n - n0);
      const Buffer view = staging.slice(0, 0, rows);
      dequantize_rows(w, n0, rows, view, stream);
      lt_matmul(view.data(), job.x.data(), out + n0 * out_elem, bias_at(n0), job.m, rows, job.k,
                job.n, in_type, result.dtype(), stream);
    }
  }
  if (!direct_out) cast(result.reshape(job.out.shape()), job.out, stream);
}

}  // namespace mlxn::cuda
