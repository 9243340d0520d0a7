// Prefill attention: many query tokens per sequence over keys given densely (variable-length
// batches) or over a sequence's cached prefix in the paged KV cache followed by the new chunk.
// Algorithm, numerics and limits: docs/attention_prefill.md.
#pragma once

#include <cstdint>

#include "mlxn/core/buffer.h"
#include "mlxn/core/stream.h"
#include "mlxn/ops/kv_cache.h"

namespace mlxn {

struct PrefillAttentionParams {
  float scale = 0.0f;    // softmax scale, > 0 (usually 1/sqrt(head_dim))
  bool causal = true;    // query at position p sees keys at positions <= p
  float softcap = 0.0f;  // > 0: each scaled logit s becomes softcap * tanh(s / softcap)
  int window = 0;        // > 0 (causal only): the query at position p sees keys p - window + 1 .. p
  Buffer sinks;          // optional f32 [q_heads]: one logit per head that joins the softmax
                         // denominator and carries no value (attention sinks)
  Buffer lse;            // optional output f32 [q_heads, total_q]: the natural log of the softmax
                         // denominator (sink included); -inf where a query sees no key and no sink
  int64_t max_q_len = 0;  // optional upper bound of the per-sequence query counts (0: total_q)
};

// Variable-length batch. q [total_q, q_heads, D], k and v [total_k, kv_heads, D] (bf16 or f16,
// all three the same dtype, contiguous), out [total_q, q_heads, D] (bf16, f16 or f32,
// contiguous); D in {64, 128, 256, 512}; q_heads a multiple of kv_heads (GQA: q head h reads kv
// head h / (q_heads / kv_heads)). cu_seqlens_q and cu_seqlens_k are i32 [batch + 1] offsets:
// sequence b owns query rows [cu_q[b], cu_q[b+1]) and key rows [cu_k[b], cu_k[b+1]).
// Positions are aligned at the end: with len_q and len_k its lengths, query i of a sequence sits
// at position len_k - len_q + i and key j at position j, so a chunk of new tokens that follows a
// prefix is written as keys = prefix + chunk (chunked prefill). Causal attention needs
// len_k >= len_q for every sequence. Offsets that are negative or decrease, end past total_q /
// total_k, break that rule, or give a sequence more than max_q_len queries raise
// "[prefill_attention] index ... out of range" at the next synchronisation (on every backend,
// the CPU's included); the rows of such a sequence are zeros, its lse -inf.
// A query that sees no key (non-causal with len_k = 0) gets a zero output row. Deterministic: the
// same inputs give bit-identical output.
void prefill_attention(const Buffer& q, const Buffer& k, const Buffer& v,
                       const Buffer& cu_seqlens_q, const Buffer& cu_seqlens_k, const Buffer& out,
                       const PrefillAttentionParams& params, const Stream& stream);

// Dense rows of positions [start, start + out.dim(0)) of one sequence from `store`, as attention
// must see them: bf16 / f16 copied, fp8 times its head's scale, TurboQuant decoded in the
// rotated domain (tq_dequantize). out [count, kv_heads, dim] bf16, f16 or f32, contiguous.
// page_table i32 [width]: logical page n is page_table[n], or page_table[n % ring_pages] when
// ring_pages > 0 (sliding-window rings, which then must still hold those positions).
// A page id outside the store or a page past the table raises
// "[kv_gather] index ... out of range" at the next synchronisation.
void kv_gather(const KvStore& store, const Buffer& page_table, int ring_pages, int64_t start,
               const Buffer& out, const Stream& stream);

// Chunked prefill of one sequence over its cache: the L new tokens q [L, q_heads, D],
// k_new / v_new [L, kv_heads, D] (bf16 or f16) attend to positions [0, prefix_len) of `layer`
// (page_table i32 [width], as in decode_attention) and then to the chunk itself, causally; the
// chunk sits at positions prefix_len .. prefix_len + L - 1. Call it before appending the chunk
// to the layer (a sliding-window ring may overwrite the prefix). The prefix is staged densely
// with kv_gather (only its last window - 1 positions on a window layer); a TurboQuant layer is
// attended in its rotated domain (q, k_new and v_new rotated by tq_rotate, the output rotated
// back). params.causal must be true; params.window defaults to the layer's window when 0.
void prefill_attention_cached(const Buffer& q, const Buffer& k_new, const Buffer& v_new,
                              const KvLayerStorage& layer, const Buffer& page_table,
                              int64_t prefix_len, const Buffer& out, PrefillAttentionParams params,
                              const Stream& stream);

}  // namespace mlxn
