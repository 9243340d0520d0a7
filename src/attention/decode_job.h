// The validated arguments of one decode_attention call, as the backends receive them.
#pragma once

#include <cstdint>

#include "mlxn/ops/kv_cache.h"

namespace mlxn::attention {

struct DecodeJob {
  const Buffer* q = nullptr;  // [batch, q_len, q_heads, dim], contiguous
  const KvLayerStorage* layer = nullptr;
  const Buffer* page_table = nullptr;  // i32 [batch, table_width]
  const Buffer* lengths = nullptr;     // i32 [batch]
  const Buffer* out = nullptr;         // [batch, q_len, q_heads, dim], bf16 or f32, contiguous
  const Buffer* sinks = nullptr;       // f32 [q_heads] or nullptr
  int batch = 0, q_len = 0, q_heads = 0, kv_heads = 0, dim = 0;
  int table_width = 0;
  float scale = 0.0f, softcap = 0.0f;
  int window = 0;
  int64_t max_length = 0;   // upper bound of lengths (> 0)
  uint32_t index_site = 0;  // "lengths/page_table of <layer>"
};

// Where query token i of a sequence with `length` tokens sits, and the first key it sees.
inline int64_t query_position(int64_t length, int q_len, int i) { return length - q_len + i; }
inline int64_t first_visible_key(int64_t position, int window) {
  return window > 0 && position - window + 1 > 0 ? position - window + 1 : 0;
}

}  // namespace mlxn::attention
