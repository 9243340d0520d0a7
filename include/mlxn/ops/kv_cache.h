// Paged KV cache over bf16 / f16 / fp8 / TurboQuant storage, and decode attention that reads it
// directly. Layout, addressing and the attention algorithm: docs/kv_cache.md.
//
// Pieces, lowest first:
//  - KvStore: one layer's K or V storage, pages of `page_size` token slots per kv-head.
//  - kv_append: writes new K/V tokens into global slots (page * page_size + offset), converting
//    to the store's type on the fly; one launch per layer.
//  - decode_attention: attention of a few new query tokens per sequence over the cache.
//  - KvCache: owns the stores of every layer, hands out pages to sequences, plans each step
//    (slots, page tables, lengths on the device) and reports its memory exactly.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "mlxn/core/buffer.h"
#include "mlxn/core/stream.h"
#include "mlxn/ops/turboquant.h"

namespace mlxn {

// What one cached vector is stored as. fp8 is e4m3 with one f32 scale per (layer, kv-head).
// f32 is the CPU reference's type (the f32 forward pass that golden tests compare with
// transformers); a store of it cannot be allocated on a GPU.
enum class KvType : uint8_t { bf16, f16, f32, fp8, tq2, tq3, tq4, tq5, tq6, tq8 };

std::string_view kv_type_name(KvType type);   // "bf16", "f32", "fp8", "tq4", ...
KvType parse_kv_type(std::string_view name);  // throws Error naming the valid names
int kv_type_bits(KvType type);                // bits per element: 32, 16, 8, or the TurboQuant bits
bool kv_type_is_tq(KvType type);
// Bytes one cached vector of `dim` elements occupies, its per-vector scale included.
int64_t kv_vector_bytes(KvType type, int dim);

// One layer's K or V storage, [pages, kv_heads, page_size, row]:
//   bf16 / f16 / f32: data of that dtype [.., dim]; scales undefined
//   fp8:        data f8e4m3 [.., dim];     scales f32 [kv_heads] (value = data * scale)
//   tqB:        data u8 [.., dim*B/8];     scales f16 [pages, kv_heads, page_size] (TqCache)
struct KvStore {
  KvType type = KvType::bf16;
  int dim = 0;
  Buffer data;
  Buffer scales;

  // Exact-size, zero-filled (an unwritten slot reads as a zero vector); fp8 scales start at 1.
  static KvStore allocate(KvType type, int64_t num_pages, int kv_heads, int page_size, int dim,
                          const Stream& stream);
  int64_t num_pages() const { return data.dim(0); }
  int kv_heads() const { return static_cast<int>(data.dim(1)); }
  int page_size() const { return static_cast<int>(data.dim(2)); }
  int64_t bytes() const;  // data + scales
  void validate(const char* op) const;
  TqCache as_tq() const;  // the same buffers as a TqCache (TurboQuant types only)
};

// The storage of one layer as attention and append see it.
struct KvLayerStorage {
  KvStore k, v;
  int window = 0;      // > 0: sliding-window layer, its pages form a ring per sequence
  int ring_pages = 0;  // pages in each sequence's ring (0 for full-attention layers)
  Buffer page_ids;     // i32 [num_pages], page_ids[i] = i: how the TurboQuant encoders address
                       // global slots (a page table that names every page)
  void validate(const char* op) const;
};

// Writes k and v ([tokens, kv_heads, dim], f32 / bf16 / f16) into the slots
// (i32 [tokens], slot = page * page_size + offset) of `layer`, converting or encoding them.
// A bad slot writes nothing for its token and raises "[kv_append] index ... out of range" at the
// next synchronisation; a vector holding NaN or Inf is stored as zeros and raises a non-finite
// error naming `label`. An fp8 store named in `calibrate` first sets its per-head scales to
// amax / 448 of these tokens' finite values (1 where a head's amax is 0); values beyond
// 448 * scale saturate. f16 stores saturate at +-65504.
struct Fp8Calibration {
  bool k = false;
  bool v = false;
};
void kv_append(const Buffer& k, const Buffer& v, const Buffer& slots, const KvLayerStorage& layer,
               const Stream& stream, Fp8Calibration calibrate = {},
               std::string_view label = "cache");

struct DecodeAttentionParams {
  float scale = 0.0f;      // softmax scale, > 0 (usually 1/sqrt(head_dim))
  float softcap = 0.0f;    // > 0: each logit s becomes softcap * tanh(s / softcap)
  int window = 0;          // > 0: the query at position p sees keys p - window + 1 .. p
  Buffer sinks;            // optional f32 [q_heads]: one logit per head that joins the softmax
                           // denominator and carries no value (attention sinks)
  int64_t max_length = 0;  // optional upper bound of `lengths`; sizes the split count (0: the
                           // page tables' capacity)
};

// Attention of the last q_len tokens of each sequence over its cached keys and values (which
// must already hold those tokens: append first). q [batch, q_len, q_heads, head_dim] (f32, bf16
// or f16, contiguous), q_len 1..8, q_heads a multiple of the layer's kv_heads; out the same
// shape, bf16 or f32. page_table i32 [batch, width]: logical page n of sequence b is
// page_table[b][n] (for ring layers page_table[b][n % ring_pages]); lengths i32 [batch]: tokens
// in each sequence, the new ones included. Query token i of sequence b sits at position
// lengths[b] - q_len + i and sees keys 0 .. that position (and only the last `window` of them).
// A length below q_len, a position past the table and a page id outside the store raise
// "[decode_attention] index ... out of range" at the next synchronisation.
// Deterministic: the same inputs give bit-identical output.
void decode_attention(const Buffer& q, const KvLayerStorage& layer, const Buffer& page_table,
                      const Buffer& lengths, const Buffer& out, const DecodeAttentionParams& params,
                      const Stream& stream);

struct KvLayerConfig {
  KvType k = KvType::bf16;
  KvType v = KvType::bf16;
  int window = 0;            // > 0: sliding-window layer
  float k_fp8_scale = 0.0f;  // fp8 only: the per-head scale; 0 = set from the first tokens
  float v_fp8_scale = 0.0f;
};

struct KvCacheConfig {
  int kv_heads = 0;
  int head_dim = 0;
  int page_size = 16;        // a power of two >= 16
  int64_t num_pages = 0;     // pages shared by the full-attention layers' sequences
  int max_sequences = 1;     // live sequences at once (sizes the sliding-window rings)
  int max_query_tokens = 8;  // most tokens appended to one sequence in a decode step
  std::vector<KvLayerConfig> layers;
};

// One planned step: which sequences, how many new tokens each, and the device tables that
// kv_append and decode_attention need. Built by KvCache::plan; valid until the next plan.
struct KvStep {
  std::vector<int> sequences;
  std::vector<int> new_tokens;
  int64_t max_length = 0;
  Buffer lengths;  // i32 [batch], after this step
  // Per page group (full attention, then one per distinct window): i32 [tokens] global slots
  // and i32 [batch, width] page tables.
  std::vector<Buffer> slots;
  std::vector<Buffer> page_tables;
  std::vector<int> layer_group;  // page group of each layer
  const Buffer& slots_of(int layer) const { return slots[layer_group[layer]]; }
  const Buffer& page_table_of(int layer) const { return page_tables[layer_group[layer]]; }
};

class KvCache {
 public:
  KvCache(KvCacheConfig config, const Stream& stream);

  const KvCacheConfig& config() const { return config_; }
  int num_layers() const { return static_cast<int>(layers_.size()); }
  const KvLayerStorage& layer(int index) const;

  int add_sequence();                // a new, empty sequence; throws past max_sequences
  void free_sequence(int sequence);  // returns its pages to the pool
  int64_t length(int sequence) const;
  int64_t free_pages() const;  // of the full-attention pool

  // Plans a step that appends new_tokens[i] tokens to sequences[i]: takes the pages they need
  // (throws, changing nothing, when the pool is short) and uploads slots, page tables and
  // lengths. Tokens of the batch are ordered sequence by sequence.
  KvStep plan(std::span<const int> sequences, std::span<const int> new_tokens);
  // Appends this step's k and v ([tokens, kv_heads, head_dim]) to `layer`.
  void append(int layer, const Buffer& k, const Buffer& v, const KvStep& step);
  // decode_attention over `layer` for this step (q_len = the step's new tokens, equal for all).
  void attend(int layer, const Buffer& q, const Buffer& out, DecodeAttentionParams params,
              const KvStep& step) const;

  // True while an fp8 store still takes its scales from its first append (a step that appends
  // then must not be captured into a graph for replay: it would calibrate again).
  bool fp8_calibration_pending() const;

  int64_t memory_bytes() const;  // every byte the cache holds on the device, exactly
  // The memory_bytes() of a cache built from `config`, without building it (to size a page pool
  // to a budget).
  static int64_t required_bytes(const KvCacheConfig& config);
  std::string memory_report() const;

 private:
  struct Group {
    int window = 0;
    int ring_pages = 0;
    int64_t num_pages = 0;
    std::vector<int32_t> free;  // free page ids, taken from the back
    Buffer page_ids;
  };
  struct Sequence {
    bool live = false;
    int64_t length = 0;
    std::vector<std::vector<int32_t>> pages;  // per group
  };
  void require_live(int sequence) const;  // throws unless `sequence` is a live sequence's id
  // Pages a sequence of `length` tokens holds in `group` (a ring never more than its size).
  int64_t pages_for(const Group& group, int64_t length) const;

  KvCacheConfig config_;
  Stream stream_;
  std::vector<Group> groups_;
  std::vector<KvLayerStorage> layers_;
  std::vector<int> layer_group_;
  std::vector<Fp8Calibration> fp8_pending_;  // per layer: fp8 stores still to calibrate
  std::vector<Sequence> sequences_;
};

}  // namespace mlxn
