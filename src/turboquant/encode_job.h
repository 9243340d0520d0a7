// Internal: one tensor (K or V) of a tq_encode call, as the backends receive it.
#pragma once

#include <cstdint>

#include "mlxn/ops/turboquant.h"

namespace mlxn::tq {

struct EncodeJob {
  const Buffer* x;  // [tokens, kv_heads, dim]: inner two axes contiguous, any token stride
  const TqCache* cache;
  uint32_t data_site;  // error site naming this tensor, for non-finite input
};

// Which CUDA encoder runs. `automatic` picks by batch size and head_dim (the lane-group kernel
// for small batches and head_dim 256/512, the one-thread-per-vector kernel for large ones);
// tests and benches force each in turn to check and time both against the same reference.
enum class Encoder { automatic, lane_groups, rows };

Encoder forced_encoder();  // this thread's choice

class ForceEncoder {
 public:
  explicit ForceEncoder(Encoder e);
  ~ForceEncoder();
  ForceEncoder(const ForceEncoder&) = delete;
  ForceEncoder& operator=(const ForceEncoder&) = delete;

 private:
  Encoder previous_;
};

}  // namespace mlxn::tq
