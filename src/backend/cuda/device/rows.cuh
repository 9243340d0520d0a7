// Shared pieces of the row kernels (norms, softmax): kThreads consecutive threads of a block own
// one row and combine their partial results with row_reduce.
#pragma once

#include <cstdint>

namespace mlxn::cuda {

struct SumOp {
  __device__ __forceinline__ float operator()(float a, float b) const { return a + b; }
};

// fmaxf would drop a NaN; here a NaN anywhere in the row reaches every thread of it.
struct MaxOp {
  __device__ __forceinline__ float operator()(float a, float b) const {
    return (a > b || a != a) ? a : b;
  }
};

// op over the kThreads threads that own this thread's row: a warp (kThreads == 32) or
// kThreads / 32 consecutive warps of the block. Every thread of the block must call it (it
// holds block barriers); scratch is blockDim.x / 32 floats of shared memory.
template <int kThreads, class Op>
__device__ __forceinline__ float row_reduce(float v, float* scratch, Op op) {
  for (int o = 16; o > 0; o >>= 1) v = op(v, __shfl_xor_sync(0xffffffffu, v, o));
  if constexpr (kThreads > 32) {
    // The warps of this thread's row: kThreads / 32 of them from `first`.
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int first = (threadIdx.x / kThreads) * (kThreads / 32);
    __syncthreads();  // scratch may still be read by the previous reduction
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = scratch[first];
#pragma unroll
    for (int w = 1; w < kThreads / 32; ++w) v = op(v, scratch[first + w]);
  }
  return v;
}

inline bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; }

}  // namespace mlxn::cuda
