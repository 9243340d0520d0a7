// The validated arguments of one prefill_attention call, as the backends receive them.
#pragma once

#include <cstdint>

#include "mlxn/ops/attention.h"

namespace mlxn::attention {

struct PrefillJob {
  const Buffer* q = nullptr;      // [total_q, q_heads, dim], bf16 / f16, contiguous
  const Buffer* k = nullptr;      // [total_k, kv_heads, dim], q's dtype, contiguous
  const Buffer* v = nullptr;      // [total_k, kv_heads, dim], q's dtype, contiguous
  const Buffer* cu_q = nullptr;   // i32 [batch + 1]
  const Buffer* cu_k = nullptr;   // i32 [batch + 1]
  const Buffer* out = nullptr;    // [total_q, q_heads, dim], bf16 / f16 / f32, contiguous
  const Buffer* sinks = nullptr;  // f32 [q_heads] or nullptr
  const Buffer* lse = nullptr;    // f32 [q_heads, total_q] or nullptr
  int batch = 0, q_heads = 0, kv_heads = 0, dim = 0;
  int64_t total_q = 0, total_k = 0;
  int64_t max_q_len = 0;  // upper bound of the per-sequence query counts (> 0)
  float scale = 0.0f, softcap = 0.0f;
  bool causal = true;
  int window = 0;
  uint32_t index_site = 0;  // "cu_seqlens of prefill_attention"
};

// Position of query i of a sequence with len_q queries and len_k keys (keys sit at 0 .. len_k-1).
inline int64_t prefill_query_position(int64_t len_q, int64_t len_k, int64_t i) {
  return len_k - len_q + i;
}

}  // namespace mlxn::attention
