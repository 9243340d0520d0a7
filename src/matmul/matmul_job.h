// The validated arguments of matmul / dequantize / embedding, as the backends receive them.
#pragma once

#include <cstdint>

#include "mlxn/ops/weights.h"

namespace mlxn::linear {

struct Job {
  Buffer x;     // [M, K] rows contiguous (a 2-D view of the caller's x)
  Weight w;     // [N, K]
  Buffer bias;  // [N] or undefined
  Buffer out;   // [M, N] contiguous
  int64_t m = 0, n = 0, k = 0;
};

struct EmbeddingJob {
  Buffer ids;    // i32 [T]
  Weight table;  // [vocab, K]
  Buffer out;    // [T, K] contiguous
  int64_t tokens = 0;
  uint32_t site = 0;  // device error site: id outside [0, vocab)
};

}  // namespace mlxn::linear
