// The decode-attention kernel instances: one per (K format, V format, head_dim),
// compiled in the decode_*.cu files so they build in parallel; decode.cu picks one.
#pragma once

#include <cuda_runtime.h>

#include "backend/cuda/attention/decode_kernel.cuh"
#include "mlxn/core/dispatch.h"
#include "mlxn/ops/kv_cache.h"
#include "turboquant/codebook.h"

namespace mlxn::cuda::decode {

struct Kernel {
  const void* function = nullptr;
  void (*launch)(const Args&, dim3 grid, int smem_bytes, cudaStream_t stream) = nullptr;
  int smem_bytes = 0;
  int tile_keys = 0;  // keys per CTA tile (splits are whole tiles)
};

template <class KF, class VF, int D>
void launch_instance(const Args& args, dim3 grid, int smem_bytes, cudaStream_t stream) {
  launch_overlapping(decode_attention_kernel<KF, VF, D>, grid, kThreads, smem_bytes, stream, args);
}
template <class KF, class VF, int D>
Kernel kernel_instance() {
  return {reinterpret_cast<const void*>(&decode_attention_kernel<KF, VF, D>),
          &launch_instance<KF, VF, D>, smem_plan<KF, VF, D>().total,
          kWarpKeys<KF> * kWarps / (D / kSlice<D>)};
}
template <class KF, class VF>
Kernel kernel_for_dim(int dim) {
  Kernel k;
  dispatch_int<tq::Dims>("decode_attention", "head_dim", dim,
                         [&](auto d) { k = kernel_instance<KF, VF, decltype(d)::value>(); });
  return k;
}

// `type`: a dense KvType the GPU stores (bf16, f16, fp8).
Kernel dense_kernel(KvType type, int dim);

}  // namespace mlxn::cuda::decode
