// kv_gather: positions of one sequence from a paged store into dense rows, the staging of chunked
// prefill over the cache. Dense stores: one thread per 8 elements; TurboQuant stores go through
// the codec's dequantizer (rotated domain).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include <algorithm>

#include "backend/cuda/attention/prefill.h"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/device/types.cuh"
#include "backend/cuda/turboquant/turboquant.h"
#include "mlxn/core/device_errors.h"
#include "mlxn/core/dispatch.h"
#include "portable/error_state.h"

namespace mlxn::cuda {

namespace {

constexpr int kThreads = 256;

struct GatherParams {
  const void* data;     // [pages, kv_heads, page_size, dim] S
  const float* scales;  // fp8: [kv_heads]
  const int32_t* page_table;
  void* out;  // [count, kv_heads, dim] T
  int64_t start, count, num_pages;
  int table_width, ring_pages, kv_heads, page_size, dim;
  DeviceErrorState* flag;
  uint32_t site;
};

template <class S, class T>
__global__ void __launch_bounds__(kThreads) gather_kernel(const __grid_constant__ GatherParams p) {
  const int groups = p.dim / 8;  // 8 elements per thread
  const int64_t total = p.count * p.kv_heads * groups;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * kThreads) {
    const int64_t vec = i / groups;
    const int part = static_cast<int>(i - vec * groups);
    const int64_t token = vec / p.kv_heads;
    const int head = static_cast<int>(vec - token * p.kv_heads);
    const int64_t position = p.start + token;
    const int64_t logical_page = position / p.page_size;
    const int64_t index = p.ring_pages > 0 ? logical_page % p.ring_pages : logical_page;
    const bool in_table = index < p.table_width;
    const int64_t page = in_table ? p.page_table[index] : -1;
    T* o = static_cast<T*>(p.out) + vec * p.dim + part * 8;
    if (!in_table || page < 0 || page >= p.num_pages) {
      // As the CPU reports it: a page past the table names the position and the page index, a
      // bad page id names the table entry and the id.
      if (part == 0) {
        report_device_error(p.flag, DeviceErrorCode::index_out_of_range, p.site,
                            in_table ? index : position, in_table ? page : index, 0.0f);
      }
#pragma unroll
      for (int j = 0; j < 8; ++j) o[j] = from_float<T>(0.0f);
      continue;
    }
    const int64_t slot = (page * p.kv_heads + head) * p.page_size + position % p.page_size;
    const S* src = static_cast<const S*>(p.data) + slot * p.dim + part * 8;
    const float scale = p.scales != nullptr ? p.scales[head] : 1.0f;
#pragma unroll
    for (int j = 0; j < 8; ++j) o[j] = from_float<T>(to_float(src[j]) * scale);
  }
}

__global__ void __launch_bounds__(kThreads) to_f16_kernel(const float* in, __half* out, int64_t n) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * kThreads) {
    out[i] = __float2half_rn(in[i]);
  }
}

}  // namespace

void kv_gather(const KvStore& store, const Buffer& page_table, int ring_pages, int64_t start,
               const Buffer& out, uint32_t index_site, const Stream& stream) {
  if (out.numel() == 0) return;
  const auto cuda_stream = static_cast<cudaStream_t>(stream.native_handle());
  if (kv_type_is_tq(store.type)) {
    if (out.dtype() != DType::f16) {
      tq_dequantize(store.as_tq(), page_table, start, out, TqDomain::rotated, index_site, stream,
                    ring_pages);
      return;
    }
    // The codec decodes into f32 / bf16: f16 goes through f32 (one rounding, as on the CPU).
    const Buffer wide = Buffer::empty(out.shape(), DType::f32, stream);
    stream.retain_for_capture(wide.allocation());
    tq_dequantize(store.as_tq(), page_table, start, wide, TqDomain::rotated, index_site, stream,
                  ring_pages);
    const int64_t n = out.numel();
    to_f16_kernel<<<static_cast<unsigned>(
                        std::min<int64_t>((n + kThreads - 1) / kThreads, 1 << 20)),
                    kThreads, 0, cuda_stream>>>(wide.data_as<const float>(), out.data_as<__half>(),
                                                n);
    MLXN_CUDA_CHECK_LAUNCH();
    return;
  }
  GatherParams p{};
  p.data = store.data.data();
  p.scales = store.type == KvType::fp8 ? store.scales.data_as<const float>() : nullptr;
  p.page_table = page_table.data_as<const int32_t>();
  p.out = out.data();
  p.start = start;
  p.count = out.dim(0);
  p.num_pages = store.num_pages();
  p.table_width = static_cast<int>(page_table.numel());
  p.ring_pages = ring_pages;
  p.kv_heads = store.kv_heads();
  p.page_size = store.page_size();
  p.dim = store.dim;
  p.flag = device_error_state(stream.device());
  p.site = index_site;
  const int64_t threads = p.count * p.kv_heads * (p.dim / 8);
  const auto blocks = static_cast<unsigned>(
      std::min<int64_t>((threads + kThreads - 1) / kThreads, int64_t{1} << 20));
  const auto run = [&](auto source) {
    using S = decltype(source);
    dispatch_dtype<DTypeList<DType::f32, DType::bf16, DType::f16>>(
        "kv_gather", out.dtype(), [&](auto tag) {
          using T = device_type_t<decltype(tag)::value>;
          gather_kernel<S, T><<<blocks, kThreads, 0, cuda_stream>>>(p);
          MLXN_CUDA_CHECK_LAUNCH();
        });
  };
  switch (store.type) {
    case KvType::bf16:
      return run(__nv_bfloat16{});
    case KvType::f16:
      return run(__half{});
    default:
      return run(__nv_fp8_e4m3{});
  }
}

}  // namespace mlxn::cuda
