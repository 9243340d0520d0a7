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

}  // namespace mlxn::tq
