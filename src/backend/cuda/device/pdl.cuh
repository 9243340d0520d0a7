// Programmatic dependent launch (sm_90+): a kernel launched with launch_overlapping may start
// while the kernel before it in the stream is still running, as soon as that one has called
// allow_dependents_early(). Until its own wait_for_previous_grid() it may only read what no
// earlier kernel still writes (settled weights: Weight::settle) and write nothing but shared
// memory; the wait returns once
// the previous grid has completed and its writes are visible. A decode step is hundreds of short
// kernels: this hides each GEMV's launch and first memory round trip behind its predecessor.
#pragma once

#include <cuda_runtime.h>

#include <utility>

#include "backend/cuda/cuda_check.h"

namespace mlxn::cuda {

__device__ __forceinline__ void wait_for_previous_grid() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
}

// Lets a dependent launched with launch_overlapping start now; it still waits for this grid's
// completion before touching its results, so calling this first thing is always safe.
__device__ __forceinline__ void allow_dependents_early() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
}

template <class... Params, class... Args>
void launch_overlapping(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem,
                        cudaStream_t stream, Args&&... args) {
  cudaLaunchConfig_t config{};
  config.gridDim = grid;
  config.blockDim = block;
  config.dynamicSmemBytes = smem;
  config.stream = stream;
  cudaLaunchAttribute overlap{};
  overlap.id = cudaLaunchAttributeProgrammaticStreamSerialization;
  overlap.val.programmaticStreamSerializationAllowed = 1;
  config.attrs = &overlap;
  config.numAttrs = 1;
  MLXN_CUDA_CHECK(cudaLaunchKernelEx(&config, kernel, std::forward<Args>(args)...));
}

}  // namespace mlxn::cuda
