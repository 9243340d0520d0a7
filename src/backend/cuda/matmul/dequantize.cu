// dequantize, the embedding gather, and dequantize_rows (the tensor-core path's staging): one
// thread per element, each decoded by weight_element (bit-identical to the CPU reference).
#include <algorithm>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/matmul/matmul.h"
#include "backend/cuda/matmul/weight_view.cuh"
#include "mlxn/core/device_errors.h"
#include "mlxn/core/dispatch.h"
#include "portable/error_state.h"

namespace mlxn::cuda {

namespace {

constexpr int kThreads = 256;

// out[t, c] = weight[row(t), c], row(t) = row0 + t, or ids[t] when ids is given.
template <class T>
__global__ void __launch_bounds__(kThreads)
    gather_rows_kernel(const __grid_constant__ WeightView w, int64_t row0, const int32_t* ids,
                       int64_t rows, int64_t vocab, T* out, DeviceErrorState* flag, uint32_t site) {
  for (int64_t t = blockIdx.y; t < rows; t += gridDim.y) {
    int64_t row = row0 + t;
    T* o = out + t * w.k;
    if (ids != nullptr) {
      row = ids[t];
      if (row < 0 || row >= vocab) {
        if (blockIdx.x == 0 && threadIdx.x == 0) {
          report_device_error(flag, DeviceErrorCode::index_out_of_range, site, t, row, 0);
        }
        for (int64_t c = blockIdx.x * kThreads + threadIdx.x; c < w.k; c += gridDim.x * kThreads)
          o[c] = from_float<T>(0.0f);
        continue;
      }
    }
    for (int64_t c = blockIdx.x * kThreads + threadIdx.x; c < w.k; c += gridDim.x * kThreads)
      o[c] = from_float<T>(weight_element(w, row, c));
  }
}

void gather(const Weight& w, int64_t row0, const Buffer& ids, int64_t rows, const Buffer& out,
            uint32_t site, const Stream& stream) {
  const auto cuda_stream = static_cast<cudaStream_t>(stream.native_handle());
  const WeightView view = weight_view(w);
  const dim3 grid(
      static_cast<unsigned>(std::min<int64_t>((w.in_features() + kThreads - 1) / kThreads, 64)),
      static_cast<unsigned>(std::min<int64_t>(rows, 65535)));
  dispatch_dtype<DTypeList<DType::f32, DType::bf16, DType::f16>>(
      "dequantize", out.dtype(), [&](auto tag) {
        using T = device_type_t<decltype(tag)::value>;
        gather_rows_kernel<T><<<grid, kThreads, 0, cuda_stream>>>(
            view, row0, ids.defined() ? ids.data_as<const int32_t>() : nullptr, rows,
            w.out_features(), out.data_as<T>(), device_error_state(stream.device()), site);
        MLXN_CUDA_CHECK_LAUNCH();
      });
}

}  // namespace

void dequantize(const Weight& w, const Buffer& out, const Stream& stream) {
  gather(w, 0, Buffer(), w.out_features(), out, 0, stream);
}

void dequantize_rows(const Weight& w, int64_t row0, int64_t rows, const Buffer& out,
                     const Stream& stream) {
  gather(w, row0, Buffer(), rows, out, 0, stream);
}

void embedding(const linear::EmbeddingJob& job, const Stream& stream) {
  gather(job.table, 0, job.ids, job.tokens, job.out, job.site, stream);
}

}  // namespace mlxn::cuda
