// Dense K/V appends: f32 / bf16 / f16 tokens converted into bf16, f16 or fp8 e4m3 cache slots,
// one warp per (token, kv-head) vector so a non-finite value can zero its whole vector.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include "backend/cuda/attention/kv_cache.h"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/device/pdl.cuh"
#include "backend/cuda/device/types.cuh"
#include "mlxn/core/device_errors.h"
#include "mlxn/core/dispatch.h"
#include "portable/error_state.h"

namespace mlxn::cuda {

namespace {

struct WriteArgs {
  const void* x;
  const int32_t* slots;
  void* data;
  float* fp8_scales;
  long long tokens, slot_count;
  int heads, dim, log2_page;
  DeviceErrorState* flag;
  uint32_t value_site, index_site;
};

template <class TIn>
__global__ void fp8_calibrate_kernel(WriteArgs a) {
  __shared__ float partial[32];
  const int h = blockIdx.x;
  float amax = 0.0f;
  for (long long i = threadIdx.x; i < a.tokens * a.dim; i += blockDim.x) {
    const long long t = i / a.dim, d = i % a.dim;
    const float v = fabsf(to_float(static_cast<const TIn*>(a.x)[(t * a.heads + h) * a.dim + d]));
    if (isfinite(v)) amax = fmaxf(amax, v);
  }
  for (int o = 16; o > 0; o >>= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
  if ((threadIdx.x & 31) == 0) partial[threadIdx.x >> 5] = amax;
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 1; w < static_cast<int>(blockDim.x / 32); ++w) amax = fmaxf(amax, partial[w]);
    a.fp8_scales[h] = amax > 0.0f ? amax / 448.0f : 1.0f;
  }
}

// KIND: 0 bf16, 1 f16 (saturated to +-65504 so the cache never holds an infinity), 2 fp8.
template <class TIn, int KIND>
__global__ void kv_write_kernel(WriteArgs a) {
  allow_dependents_early();
  wait_for_previous_grid();  // launched overlapping (device/pdl.cuh)
  const long long vec = (static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
  const int lane = threadIdx.x & 31;
  if (vec >= a.tokens * a.heads) return;
  const long long t = vec / a.heads;
  const int h = static_cast<int>(vec % a.heads);
  const int slot = a.slots[t];
  if (slot < 0 || slot >= a.slot_count) {
    if (lane == 0 && h == 0) {
      report_device_error(a.flag, DeviceErrorCode::index_out_of_range, a.index_site, t, slot, 0.0f);
    }
    return;
  }
  const TIn* src = static_cast<const TIn*>(a.x) + vec * a.dim;
  bool finite = true;
  float bad = 0.0f;
  for (int d = lane; d < a.dim; d += 32) {
    const float v = to_float(src[d]);
    if (!isfinite(v) && finite) {
      finite = false;
      bad = v;
    }
  }
  const bool all_finite = __all_sync(0xffffffffu, finite);
  if (!all_finite && !finite) {
    report_device_error(a.flag, DeviceErrorCode::non_finite, a.value_site, vec, 0, bad);
  }
  const long long page = slot >> a.log2_page, in_page = slot & ((1 << a.log2_page) - 1);
  const long long row = ((page * a.heads + h) << a.log2_page) + in_page;
  const float inv = KIND == 2 ? a.fp8_scales[h] : 1.0f;
  for (int d = lane; d < a.dim; d += 32) {
    float v = all_finite ? to_float(src[d]) : 0.0f;
    const long long at = row * a.dim + d;
    if constexpr (KIND == 0) {
      static_cast<__nv_bfloat16*>(a.data)[at] = __float2bfloat16_rn(v);
    } else if constexpr (KIND == 1) {
      v = fminf(fmaxf(v, -65504.0f), 65504.0f);
      static_cast<__half*>(a.data)[at] = __float2half_rn(v);
    } else {
      static_cast<__nv_fp8_storage_t*>(a.data)[at] =
          __nv_cvt_float_to_fp8(v / inv, __NV_SATFINITE, __NV_E4M3);
    }
  }
}

}  // namespace

void kv_write(const Buffer& x, const Buffer& slots, const KvStore& store, bool calibrate_fp8,
              uint32_t value_site, uint32_t index_site, const Stream& stream) {
  WriteArgs a{};
  a.x = x.data();
  a.slots = slots.data_as<const int32_t>();
  a.data = store.data.data();
  a.fp8_scales = store.type == KvType::fp8 ? store.scales.data_as<float>() : nullptr;
  a.tokens = x.dim(0);
  a.heads = store.kv_heads();
  a.dim = store.dim;
  a.log2_page = std::countr_zero(static_cast<unsigned>(store.page_size()));
  a.slot_count = store.num_pages() * store.page_size();
  a.flag = device_error_state(stream.device());
  a.value_site = value_site;
  a.index_site = index_site;
  auto cuda_stream = static_cast<cudaStream_t>(stream.native_handle());
  const long long vectors = a.tokens * a.heads;
  const unsigned blocks = static_cast<unsigned>((vectors * 32 + 255) / 256);
  dispatch_dtype<DTypeList<DType::f32, DType::bf16, DType::f16>>(
      "kv_append", x.dtype(), [&](auto tag) {
        using T = device_type_t<decltype(tag)::value>;
        if (calibrate_fp8) {
          fp8_calibrate_kernel<T><<<a.heads, 256, 0, cuda_stream>>>(a);
          MLXN_CUDA_CHECK_LAUNCH();
        }
        switch (store.type) {
          case KvType::bf16:
            launch_overlapping(kv_write_kernel<T, 0>, blocks, 256, 0, cuda_stream, a);
            break;
          case KvType::f16:
            launch_overlapping(kv_write_kernel<T, 1>, blocks, 256, 0, cuda_stream, a);
            break;
          default:
            launch_overlapping(kv_write_kernel<T, 2>, blocks, 256, 0, cuda_stream, a);
        }
        MLXN_CUDA_CHECK_LAUNCH();
      });
}

}  // namespace mlxn::cuda
