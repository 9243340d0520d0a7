// Warpgroup matrix multiply-accumulate (sm_90a). Wgmma<N, T>::ss and ::rs issue one
// wgmma.mma_async of shape m64nNk16 with f32 accumulators; the caller fences, commits and waits
// (wgmma_fence / wgmma_commit / wgmma_wait below) and builds the shared-memory descriptors
// (wgmma_desc_sw128); operands written with stores or cp.async need fence_proxy_async
// (device/mma.cuh) and a barrier before the wgmma reads them. The wrappers themselves name every
// accumulator register, so they are generated: device/wgmma_shapes.cuh, by
// scripts/make_wgmma_header.py. Accumulator layout (per warp w of the warpgroup, lane = 4 g + q):
// d[4 i + 2 h + e] is row 16 w + g + 8 h, column 8 i + 2 q + e, the mma.sync m16n8 layout repeated
// over N / 8.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

namespace mlxn::cuda {

template <int N, class T>
struct Wgmma;

}  // namespace mlxn::cuda

#include "backend/cuda/device/wgmma_shapes.cuh"

namespace mlxn::cuda {

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
// Orders earlier register writes (accumulators, A fragments) before the wgmma that follow.
__device__ __forceinline__ void wgmma_fence() {
  asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
}
__device__ __forceinline__ void wgmma_commit() {
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
}
// Waits until at most Pending committed groups are still running.
template <int Pending>
__device__ __forceinline__ void wgmma_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(Pending) : "memory");
}
#endif  // __CUDA_ARCH_FEAT_SM90_ALL

// Keeps the compiler from moving reads of an accumulator above the wgmma_wait that completes it.
template <int Count>
__device__ __forceinline__ void wgmma_fence_registers(float (&d)[Count]) {
#pragma unroll
  for (int i = 0; i < Count; ++i) asm volatile("" : "+f"(d[i])::"memory");
}
// The same for A fragments in registers: keeps them from being reused before the wgmma that
// reads them has completed.
template <int Rows, int Cols>
__device__ __forceinline__ void wgmma_fence_registers(uint32_t (&r)[Rows][Cols]) {
#pragma unroll
  for (int i = 0; i < Rows; ++i) {
#pragma unroll
    for (int j = 0; j < Cols; ++j) asm volatile("" : "+r"(r[i][j])::"memory");
  }
}

// Shared-memory matrix descriptor for a tile stored in 128-byte swizzled rows (16-byte chunk c of
// row r at chunk c ^ (r mod 8), atoms of 8 rows = 1024 bytes, 1024-byte aligned). Offsets in
// bytes: leading = between 64-element column blocks (MN-major only), stride = between 8-row
// groups.
__device__ __forceinline__ uint64_t wgmma_desc_sw128(uint32_t smem_address, uint32_t leading,
                                                     uint32_t stride) {
  return static_cast<uint64_t>((smem_address & 0x3ffffu) >> 4) |
         static_cast<uint64_t>((leading >> 4) & 0x3fffu) << 16 |
         static_cast<uint64_t>((stride >> 4) & 0x3fffu) << 32 | uint64_t{1} << 62;
}

}  // namespace mlxn::cuda
