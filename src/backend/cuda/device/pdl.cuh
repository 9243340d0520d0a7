// Programmatic dependent launch (sm_90+): a kernel launched with launch_overlapping may start
// while the kernel before it in the stream is still running, as soon as that one has called
// allow_dependents_early(). Until its own wait_for_previous_grid() it may only read what no
// earlier kernel still writes (settled weights: Weight::settle) and write nothing but shared
// memory; the wait returns once the previous grid has completed and its writes are visible. A
// decode step is hundreds of short kernels: this hides each GEMV's launch and first memory round
// trip behind its predecessor.
#pragma once

#include <cuda_runtime.h>

#include <atomic>
#include <cstdint>
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

// True when the kernels as loaded on the current device carry the griddepcontrol instructions:
// compiled from sm_90+ PTX into sm_90+ code. A build for an older architecture (PTX compiled
// without them, even when run by JIT on a Hopper) gets ordinary launches: with the overlap but
// no wait, a kernel would read its predecessor's results before they are visible. Every kernel
// of the library is built for the same architectures, so the first one launched on a device
// answers for all (a launch then costs one relaxed atomic load, not a lookup).
inline bool overlap_supported(const void* kernel) {
  constexpr int kDevices = 64;
  static std::atomic<int8_t> known[kDevices];  // 0 not asked yet, 1 no, 2 yes
  int device = 0;
  MLXN_CUDA_CHECK(cudaGetDevice(&device));
  const auto ask = [&] {
    cudaFuncAttributes attributes{};
    MLXN_CUDA_CHECK(cudaFuncGetAttributes(&attributes, kernel));
    return attributes.binaryVersion >= 90 && attributes.ptxVersion >= 90;
  };
  if (device >= kDevices) return ask();
  int8_t state = known[device].load(std::memory_order_relaxed);
  if (state == 0) {
    state = ask() ? 2 : 1;
    known[device].store(state, std::memory_order_relaxed);
  }
  return state == 2;
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
  config.numAttrs = overlap_supported(reinterpret_cast<const void*>(kernel)) ? 1 : 0;
  MLXN_CUDA_CHECK(cudaLaunchKernelEx(&config, kernel, std::forward<Args>(args)...));
}

}  // namespace mlxn::cuda
