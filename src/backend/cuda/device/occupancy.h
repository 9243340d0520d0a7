// Resident blocks per SM of a kernel, asked of the runtime once per (kernel, block size, dynamic
// shared memory, device): the answer cannot change, and the query is not free per launch.
#pragma once

#include <algorithm>
#include <map>
#include <mutex>
#include <tuple>

#include "backend/cuda/cuda_check.h"
#include "mlxn/core/device.h"

namespace mlxn::cuda {

inline int resident_blocks_per_sm(const void* kernel, int threads, int smem, Device device) {
  static std::mutex mutex;
  static std::map<std::tuple<const void*, int, int, int>, int> known;
  std::lock_guard lock(mutex);
  auto [it, inserted] = known.try_emplace({kernel, threads, smem, device.index}, 0);
  if (inserted) {
    MLXN_CUDA_CHECK(
        cudaOccupancyMaxActiveBlocksPerMultiprocessor(&it->second, kernel, threads, smem));
    it->second = std::max(it->second, 1);
  }
  return it->second;
}

}  // namespace mlxn::cuda
