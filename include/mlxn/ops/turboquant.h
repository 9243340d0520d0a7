// TurboQuant-compressed KV cache: the cache layout, encode into page slots, dequantize a range
// of positions, and the rotation applied to queries and outputs. Format and algorithm:
// docs/turboquant.md (the contract is the design note turboquant.md it implements).
#pragma once

#include <cstdint>
#include <string_view>

#include "mlxn/core/buffer.h"
#include "mlxn/core/stream.h"

namespace mlxn {

// One layer's compressed K or V: pages of `page_size` token slots per kv-head.
struct TqCache {
  int bits = 4;    // 2, 3, 4, 5, 6 or 8
  int dim = 128;   // head_dim: 64, 128, 256 or 512
  Buffer payload;  // u8  [num_pages, kv_heads, page_size, dim * bits / 8], packed codes
  Buffer scales;   // f16 [num_pages, kv_heads, page_size], one scale per vector

  // Exact-size allocations, zero-filled (an empty slot decodes to zeros).
  static TqCache allocate(int64_t num_pages, int kv_heads, int page_size, int dim, int bits,
                          const Stream& stream);
  int64_t num_pages() const { return payload.dim(0); }
  int kv_heads() const { return static_cast<int>(payload.dim(1)); }
  int page_size() const { return static_cast<int>(payload.dim(2)); }
  // Throws Error("[op] ...") unless the buffers, dtypes and sizes agree with each other.
  void validate(const char* op) const;
};

// Encodes x [tokens, kv_heads, dim] (f32, bf16 or f16, contiguous) into `cache`. Token i goes
// to logical position positions[i] (i32 [tokens]): page page_table[p / page_size], slot
// p % page_size (page_table: i32 [pages of this sequence]). Positions and page entries are
// checked on the device: a bad one writes nothing for that token and raises
// "[tq_encode] index ... out of range" at the next synchronisation. A vector holding NaN or Inf
// is stored as zeros and raises "[tq_encode] non-finite value ... of <label> K|V".
void tq_encode(const Buffer& x, const Buffer& positions, const Buffer& page_table,
               const TqCache& cache, const Stream& stream, std::string_view label = "cache");
// K and V of one layer in one launch (their bit widths may differ).
void tq_encode_kv(const Buffer& k, const Buffer& v, const Buffer& positions,
                  const Buffer& page_table, const TqCache& k_cache, const TqCache& v_cache,
                  const Stream& stream, std::string_view label = "cache");

enum class TqDomain {
  rotated,   // y_hat = alpha * C[codes]: what attention consumes
  original,  // x_hat = R^T y_hat
};

// Decodes positions [start, start + out.dim(0)) of one sequence into out [count, kv_heads, dim]
// (f32 or bf16, contiguous). Bit-identical to the CPU reference.
void tq_dequantize(const TqCache& cache, const Buffer& page_table, int64_t start, const Buffer& out,
                   TqDomain domain, const Stream& stream);

// out = R x (or R^T x when `inverse`) along the last axis, for queries and attention outputs:
// x and out contiguous [..., dim], f32/bf16/f16 each.
void tq_rotate(const Buffer& x, const Buffer& out, bool inverse, const Stream& stream);

}  // namespace mlxn
