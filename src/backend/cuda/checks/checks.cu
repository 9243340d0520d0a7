#include "backend/cuda/checks/checks.h"
#include "backend/cuda/device/map.cuh"
#include "backend/cuda/device/types.cuh"
#include "mlxn/core/device_errors.h"
#include "mlxn/core/dispatch.h"
#include "portable/error_state.h"

namespace mlxn::cuda {

namespace {

struct FiniteParams {
  const void* x;  // view described by shape/strides, element type T
  int rank;
  int64_t numel;
  int64_t shape[kMaxRank];
  int64_t strides[kMaxRank];  // elements
  DeviceErrorState* flag;
  uint32_t site;
};

// One read of every element; only the rare failing thread touches the flag.
template <class T>
__global__ void __launch_bounds__(kMapThreads) assert_finite_kernel(const FiniteParams p) {
  const int64_t step = static_cast<int64_t>(gridDim.x) * kMapThreads;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * kMapThreads + threadIdx.x; i < p.numel;
       i += step) {
    int64_t rest = i, offset = 0;
    for (int d = p.rank - 1; d >= 0; --d) {
      offset += (rest % p.shape[d]) * p.strides[d];
      rest /= p.shape[d];
    }
    const float v = to_float(static_cast<const T*>(p.x)[offset]);
    if (!isfinite(v)) report_device_error(p.flag, DeviceErrorCode::non_finite, p.site, i, 0, v);
  }
}

}  // namespace

void assert_finite(const Buffer& x, uint32_t site, const Stream& stream) {
  if (x.numel() == 0) return;
  FiniteParams p{};
  p.x = x.data();
  p.rank = x.rank();
  p.numel = x.numel();
  for (int d = 0; d < x.rank(); ++d) {
    p.shape[d] = x.shape()[d];
    p.strides[d] = x.strides()[d];
  }
  p.flag = device_error_state(x.device());
  p.site = site;
  const int64_t blocks = std::min<int64_t>((p.numel + kMapThreads - 1) / kMapThreads,
                                           int64_t{8} * multiprocessor_count(x.device()));
  dispatch_dtype<FloatDTypes>("assert_finite", x.dtype(), [&](auto tag) {
    using T = device_type_t<decltype(tag)::value>;
    assert_finite_kernel<T><<<static_cast<unsigned>(blocks), kMapThreads, 0,
                              static_cast<cudaStream_t>(stream.native_handle())>>>(p);
    MLXN_CUDA_CHECK_LAUNCH();
  });
}

}  // namespace mlxn::cuda
