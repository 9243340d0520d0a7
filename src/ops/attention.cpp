#include "mlxn/ops/attention.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <string_view>

#include "attention/prefill_job.h"
#include "backend/cpu/attention.h"
#include "core/text.h"
#include "mlxn/core/device_errors.h"
#include "mlxn/core/dispatch.h"
#include "mlxn/ops/memory.h"
#include "mlxn/ops/turboquant.h"
#include "ops/backend.h"
#if MLXN_WITH_CUDA
#include "backend/cuda/attention/prefill.h"
#endif

namespace mlxn {

namespace {

using InputTypes = DTypeList<DType::bf16, DType::f16>;
using CpuInputTypes = DTypeList<DType::bf16, DType::f16, DType::f32>;
using OutputTypes = DTypeList<DType::bf16, DType::f16, DType::f32>;

using ops_detail::require_apart;
using text::cat;

// f32 inputs are the CPU reference's (the f32 forward pass); the tensor-core kernels take bf16
// and f16.
void require_input_dtype(const char* op, const Buffer& b, const char* name) {
  if (b.device().is_cpu() && !CpuInputTypes::contains(b.dtype())) {
    throw Error(op, cat(name, " must be bf16, f16 or f32, got ", b.describe()));
  }
  if (!b.device().is_cpu() && !InputTypes::contains(b.dtype())) {
    throw Error(op,
                cat(name, " must be bf16 or f16 (f32 runs on the CPU only), got ", b.describe()));
  }
}

void require_same_dtype(const char* op, const Buffer& b, const char* name, const Buffer& q) {
  if (b.dtype() != q.dtype()) {
    throw Error(op,
                cat(name, " must have q's dtype ", dtype_name(q.dtype()), ", got ", b.describe()));
  }
}

void require_output_dtype(const char* op, const Buffer& out) {
  if (!OutputTypes::contains(out.dtype())) {
    throw Error(op, cat("out must be bf16, f16 or f32, got ", out.describe()));
  }
}

void require_head_dim(const char* op, int64_t dim) {
  if (dim != 64 && dim != 128 && dim != 256 && dim != 512) {
    throw Error(op, cat("head_dim ", dim, " unsupported (supported: 64, 128, 256, 512)"));
  }
}

void require_i32_vector(const char* op, const Buffer& b, const char* name) {
  if (b.dtype() != DType::i32 || b.rank() != 1) {
    throw Error(op, cat(name, " must be i32 [n], got ", b.describe()));
  }
  b.require_contiguous(op, name);
}

// The scalar parameters and the optional sinks / lse of PrefillAttentionParams.
void validate_params(const char* op, const PrefillAttentionParams& p, int64_t q_heads,
                     int64_t total_q, const Stream& stream) {
  if (!(p.scale > 0.0f) || !std::isfinite(p.scale)) {
    throw Error(op, cat("scale ", p.scale, " must be finite and > 0"));
  }
  if (!(p.softcap >= 0.0f) || !std::isfinite(p.softcap)) {
    throw Error(op, cat("softcap ", p.softcap, " must be finite and >= 0"));
  }
  if (p.window < 0) throw Error(op, cat("window ", p.window, " must be >= 0"));
  if (p.window > 0 && !p.causal) {
    throw Error(op, cat("window ", p.window, " needs causal attention"));
  }
  if (p.max_q_len < 0) throw Error(op, cat("max_q_len ", p.max_q_len, " must be >= 0"));
  if (p.sinks.defined()) {
    ops_detail::prepare(op, stream, {{"sinks", &p.sinks}});
    if (p.sinks.dtype() != DType::f32 || p.sinks.shape() != Shape{q_heads}) {
      throw Error(op, cat("sinks must be f32 [q_heads = ", q_heads, "], got ", p.sinks.describe()));
    }
    p.sinks.require_contiguous(op, "sinks");
  }
  if (p.lse.defined()) {
    ops_detail::prepare(op, stream, {{"lse", &p.lse}});
    if (p.lse.dtype() != DType::f32 || p.lse.shape() != Shape{q_heads, total_q}) {
      throw Error(op, cat("lse must be f32 [q_heads = ", q_heads, ", total_q = ", total_q,
                          "], got ", p.lse.describe()));
    }
    p.lse.require_contiguous(op, "lse");
  }
}

// out, and lse when given, against everything the call reads.
void require_outputs_apart(const char* op, const Buffer& out, const PrefillAttentionParams& p,
                           std::initializer_list<std::pair<const char*, const Buffer*>> inputs) {
  for (const auto& [name, in] : inputs) {
    require_apart(op, out, "out", *in, name);
    if (p.lse.defined()) require_apart(op, p.lse, "lse", *in, name);
  }
  if (p.sinks.defined()) require_apart(op, out, "out", p.sinks, "sinks");
  if (p.lse.defined()) {
    require_apart(op, p.lse, "lse", out, "out");
    if (p.sinks.defined()) require_apart(op, p.lse, "lse", p.sinks, "sinks");
  }
}

}  // namespace

// ---- prefill_attention ----------------------------------------------------------------------

void prefill_attention(const Buffer& q, const Buffer& k, const Buffer& v,
                       const Buffer& cu_seqlens_q, const Buffer& cu_seqlens_k, const Buffer& out,
                       const PrefillAttentionParams& params, const Stream& stream) {
  const char* op = "prefill_attention";
  ops_detail::prepare(op, stream,
                      {{"q", &q},
                       {"k", &k},
                       {"v", &v},
                       {"cu_seqlens_q", &cu_seqlens_q},
                       {"cu_seqlens_k", &cu_seqlens_k},
                       {"out", &out}});
  require_input_dtype(op, q, "q");
  require_same_dtype(op, k, "k", q);
  require_same_dtype(op, v, "v", q);
  require_output_dtype(op, out);
  if (q.rank() != 3) {
    throw Error(op, cat("q must be [total_q, q_heads, head_dim], got ", q.describe()));
  }
  if (k.rank() != 3) {
    throw Error(op, cat("k must be [total_k, kv_heads, head_dim], got ", k.describe()));
  }
  ops_detail::require_same_shape(op, k, "k", v, "v");
  const int64_t total_q = q.dim(0), q_heads = q.dim(1), dim = q.dim(2);
  const int64_t total_k = k.dim(0), kv_heads = k.dim(1);
  require_head_dim(op, dim);
  if (k.dim(2) != dim) {
    throw Error(op, cat("k head_dim ", k.dim(2), " differs from q's ", dim));
  }
  if (kv_heads == 0 || q_heads == 0 || q_heads % kv_heads != 0) {
    throw Error(op,
                cat("q_heads ", q_heads, " must be a positive multiple of kv_heads ", kv_heads));
  }
  ops_detail::require_same_shape(op, q, "q", out, "out");
  require_i32_vector(op, cu_seqlens_q, "cu_seqlens_q");
  require_i32_vector(op, cu_seqlens_k, "cu_seqlens_k");
  if (cu_seqlens_q.numel() != cu_seqlens_k.numel() || cu_seqlens_q.numel() < 2) {
    throw Error(op, cat("cu_seqlens_q ", cu_seqlens_q.describe(), " and cu_seqlens_k ",
                        cu_seqlens_k.describe(), " must both be [batch + 1] with batch >= 1"));
  }
  if (total_q > INT32_MAX || total_k > INT32_MAX) {
    throw Error(op, cat("total_q ", total_q, " and total_k ", total_k,
                        " must fit the i32 offsets of cu_seqlens"));
  }
  if (q_heads > INT32_MAX || cu_seqlens_q.numel() > INT32_MAX) {
    throw Error(op,
                cat("q_heads ", q_heads, " or batch ", cu_seqlens_q.numel() - 1, " out of range"));
  }
  validate_params(op, params, q_heads, total_q, stream);
  q.require_contiguous(op, "q");
  k.require_contiguous(op, "k");
  v.require_contiguous(op, "v");
  out.require_contiguous(op, "out");
  require_outputs_apart(op, out, params,
                        {{"q", &q},
                         {"k", &k},
                         {"v", &v},
                         {"cu_seqlens_q", &cu_seqlens_q},
                         {"cu_seqlens_k", &cu_seqlens_k}});
  if (total_q == 0) return;

  attention::PrefillJob job;
  job.q = &q;
  job.k = &k;
  job.v = &v;
  job.cu_q = &cu_seqlens_q;
  job.cu_k = &cu_seqlens_k;
  job.out = &out;
  job.sinks = params.sinks.defined() ? &params.sinks : nullptr;
  job.lse = params.lse.defined() ? &params.lse : nullptr;
  job.batch = static_cast<int>(cu_seqlens_q.numel() - 1);
  job.q_heads = static_cast<int>(q_heads);
  job.kv_heads = static_cast<int>(kv_heads);
  job.dim = static_cast<int>(dim);
  job.total_q = total_q;
  job.total_k = total_k;
  // No valid sequence has more than total_q queries, so the bound never needs to exceed it.
  job.max_q_len = params.max_q_len > 0 ? std::min(params.max_q_len, total_q) : total_q;
  job.scale = params.scale;
  job.softcap = params.softcap;
  job.causal = params.causal;
  job.window = params.window;
  static const uint32_t index_site =
      register_error_site(op, "cu_seqlens_q/cu_seqlens_k");  // once, not per call
  job.index_site = index_site;
  if (stream.device().is_cpu()) {
    cpu::prefill_attention(job, stream);
  } else {
    MLXN_CUDA_BACKEND(cuda::prefill_attention(job, stream));
  }
}

// ---- kv_gather ------------------------------------------------------------------------------

void kv_gather(const KvStore& store, const Buffer& page_table, int ring_pages, int64_t start,
               const Buffer& out, const Stream& stream) {
  const char* op = "kv_gather";
  store.validate(op);
  ops_detail::prepare(op, stream,
                      {{"cache data", &store.data}, {"page_table", &page_table}, {"out", &out}});
  if (store.scales.defined()) ops_detail::prepare(op, stream, {{"cache scales", &store.scales}});
  require_i32_vector(op, page_table, "page_table");
  if (ring_pages < 0) throw Error(op, cat("ring_pages ", ring_pages, " must be >= 0"));
  if (ring_pages > 0 && page_table.numel() < ring_pages) {
    throw Error(op, cat("page_table has ", page_table.numel(), " entries, the ring ", ring_pages,
                        " pages"));
  }
  if (start < 0) throw Error(op, cat("start ", start, " must be >= 0"));
  require_output_dtype(op, out);
  if (out.rank() != 3 || out.dim(1) != store.kv_heads() || out.dim(2) != store.dim) {
    throw Error(op, cat("out must be [count, kv_heads = ", store.kv_heads(),
                        ", head_dim = ", store.dim, "], got ", out.describe()));
  }
  out.require_contiguous(op, "out");
  require_apart(op, out, "out", store.data, "cache data");
  if (store.scales.defined()) require_apart(op, out, "out", store.scales, "cache scales");
  require_apart(op, out, "out", page_table, "page_table");
  const int64_t count = out.dim(0);
  if (start > INT32_MAX - count) {
    throw Error(op, cat("positions [", start, ", ", start + count, ") pass 2^31"));
  }
  if (count == 0) return;
  static const uint32_t index_site = register_error_site(op, "page_table");
  if (stream.device().is_cpu()) {
    cpu::kv_gather(store, page_table, ring_pages, start, out, index_site, stream);
  } else {
    MLXN_CUDA_BACKEND(
        cuda::kv_gather(store, page_table, ring_pages, start, out, index_site, stream));
  }
}

// ---- prefill_attention_cached ---------------------------------------------------------------

void prefill_attention_cached(const Buffer& q, const Buffer& k_new, const Buffer& v_new,
                              const KvLayerStorage& layer, const Buffer& page_table,
                              int64_t prefix_len, const Buffer& out, PrefillAttentionParams params,
                              const Stream& stream) {
  const char* op = "prefill_attention_cached";
  layer.validate(op);
  ops_detail::prepare(op, stream,
                      {{"q", &q},
                       {"k_new", &k_new},
                       {"v_new", &v_new},
                       {"page_table", &page_table},
                       {"out", &out}});
  require_input_dtype(op, q, "q");
  require_same_dtype(op, k_new, "k_new", q);
  require_same_dtype(op, v_new, "v_new", q);
  require_output_dtype(op, out);
  const int dim = layer.k.dim, kv_heads = layer.k.kv_heads(), P = layer.k.page_size();
  if (q.rank() != 3 || q.dim(2) != dim || q.dim(1) == 0 || q.dim(1) % kv_heads != 0) {
    throw Error(op, cat("q must be [L, q_heads, ", dim, "] with q_heads a multiple of the layer's ",
                        kv_heads, " kv_heads, got ", q.describe()));
  }
  const int64_t L = q.dim(0), q_heads = q.dim(1);
  for (const auto& [name, x] : {std::pair{"k_new", &k_new}, std::pair{"v_new", &v_new}}) {
    if (x->shape() != Shape{L, kv_heads, dim}) {
      throw Error(op, cat(name, " must be [L = ", L, ", kv_heads = ", kv_heads,
                          ", head_dim = ", dim, "], got ", x->describe()));
    }
  }
  ops_detail::require_same_shape(op, q, "q", out, "out");
  q.require_contiguous(op, "q");
  k_new.require_contiguous(op, "k_new");
  v_new.require_contiguous(op, "v_new");
  out.require_contiguous(op, "out");
  require_i32_vector(op, page_table, "page_table");
  if (prefix_len < 0) throw Error(op, cat("prefix_len ", prefix_len, " must be >= 0"));
  if (!params.causal) {
    throw Error(op, "params.causal must be true: the chunk attends causally to its prefix");
  }
  if (params.window < 0) throw Error(op, cat("window ", params.window, " must be >= 0"));
  if (params.window == 0) {
    params.window = layer.window;
  } else if (layer.window > 0 && params.window != layer.window) {
    throw Error(op,
                cat("window ", params.window, " differs from the layer's window ", layer.window));
  }
  validate_params(op, params, q_heads, L, stream);
  require_outputs_apart(op, out, params, {{"q", &q}, {"k_new", &k_new}, {"v_new", &v_new}});
  if (prefix_len > INT32_MAX - L) {
    throw Error(op, cat("prefix_len ", prefix_len, " + L ", L, " passes 2^31 positions"));
  }
  // Only the last window - 1 prefix positions are visible to any query of the chunk.
  const int64_t count =
      params.window > 0 ? std::min<int64_t>(prefix_len, params.window - 1) : prefix_len;
  const int64_t start = prefix_len - count;
  if (layer.ring_pages > 0) {
    const int64_t ring_slots = int64_t{layer.ring_pages} * P;
    if (page_table.numel() < layer.ring_pages) {
      throw Error(op, cat("page_table has ", page_table.numel(), " entries, the layer's ring ",
                          layer.ring_pages, " pages"));
    }
    if (count > ring_slots) {
      throw Error(op, cat("the layer's ring of ", ring_slots, " slots cannot hold the ", count,
                          " prefix positions that window ", params.window, " needs"));
    }
  } else if (prefix_len > page_table.numel() * P) {
    throw Error(op, cat("prefix_len ", prefix_len, " is beyond the page_table's ",
                        page_table.numel(), " pages of ", P));
  }
  if (L == 0) return;

  // Keys and values of positions [start, prefix_len + L), densely: the gathered prefix, then
  // the chunk (rotated for a TurboQuant layer, whose cache holds rotated-domain vectors).
  const DType dtype = q.dtype();
  const bool tq = kv_type_is_tq(layer.k.type);
  const Buffer k_all = Buffer::empty({count + L, kv_heads, dim}, dtype, stream);
  const Buffer v_all = Buffer::empty({count + L, kv_heads, dim}, dtype, stream);
  if (count > 0) {
    kv_gather(layer.k, page_table, layer.ring_pages, start, k_all.slice(0, 0, count), stream);
    kv_gather(layer.v, page_table, layer.ring_pages, start, v_all.slice(0, 0, count), stream);
  }
  const Buffer k_chunk = k_all.slice(0, count, count + L);
  const Buffer v_chunk = v_all.slice(0, count, count + L);
  Buffer q_att = q, out_att = out;
  if (tq) {
    tq_rotate(k_new, k_chunk, false, stream);
    tq_rotate(v_new, v_chunk, false, stream);
    q_att = Buffer::empty(q.shape(), dtype, stream);
    tq_rotate(q, q_att, false, stream);
    out_att = Buffer::empty(q.shape(), DType::f32, stream);
  } else {
    copy(k_new, k_chunk, stream);
    copy(v_new, v_chunk, stream);
  }
  // cu_seqlens {0, L} and {0, count + L}, written on the stream (no host synchronisation, so
  // the call can be captured into a graph).
  const Buffer cu = Buffer::empty({4}, DType::i32, stream);
  fill(cu.slice(0, 0, 1), 0, stream);
  fill(cu.slice(0, 1, 2), static_cast<double>(L), stream);
  fill(cu.slice(0, 2, 3), 0, stream);
  fill(cu.slice(0, 3, 4), static_cast<double>(count + L), stream);
  if (params.max_q_len == 0) params.max_q_len = L;
  prefill_attention(q_att, k_all, v_all, cu.slice(0, 0, 2), cu.slice(0, 2, 4), out_att, params,
                    stream);
  if (tq) tq_rotate(out_att, out, true, stream);
}

}  // namespace mlxn
