// The forward pass of a decoder-only transformer (llama, mistral, qwen2, qwen3, gemma3), built from
// the library's ops and the same on every device: chunked prefill of one sequence at a time,
// batched decode of one token per sequence over the paged KV cache, logits in f32. On a GPU a
// decode step is captured once per batch size (and context bucket) as a CUDA graph and replayed.
//
// Data flow of one block (T tokens, residual stream r, model config c):
//   h = rms_norm(r, input_norm)
//   q, k, v = h·Wqᵀ (+b), h·Wkᵀ (+b), h·Wvᵀ (+b)      [T, H·D], [T, KV·D], [T, KV·D]
//   q, k = rope(q_norm(q)), rope(k_norm(k))              (the norms when c.qk_norm)
//   a = attention(q over the cache + k, v)               (k, v appended to the cache)
//   o = a·Woᵀ (+b);  o = rms_norm(o, post_attn_norm)     (the norm in four-norm blocks)
//   r = r + o;  h = rms_norm(r, pre_ffn_norm)
//   m = act(h·Wgᵀ) * (h·Wuᵀ);  d = m·Wdᵀ;  d = rms_norm(d, post_ffn_norm) (four-norm blocks)
//   r = r + d
// then logits = rms_norm(r, final_norm)·lm_headᵀ (soft-capped when configured). Embeddings are
// scaled by c.embedding_scale rounded to the activation dtype (as transformers rounds it to the
// weights' dtype). docs/model.md has the details and the limits.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "mlxn/core/buffer.h"
#include "mlxn/core/graph.h"
#include "mlxn/core/stream.h"
#include "mlxn/model/config.h"
#include "mlxn/model/weights.h"
#include "mlxn/ops/kv_cache.h"
#include "mlxn/ops/rope.h"

namespace mlxn::model {

// The cache type of each layer's K and V, and the size of the page pool.
struct KvPolicy {
  KvType k = KvType::bf16;
  KvType v = KvType::bf16;
  // The first and the last `boundary_layers` layers store K and V as `boundary_type` (the
  // layers most sensitive to cache error keep more precision).
  int boundary_layers = 0;
  KvType boundary_type = KvType::bf16;
  int page_size = 16;
  // Bytes the whole cache may take on the device (pages, rings, scales and page tables). The
  // full-attention layers' page pool gets what the sliding-window rings leave. 0: room for
  // max_sequences sequences of max_context tokens.
  int64_t memory_budget = 0;
};

struct RunnerOptions {
  // The residual stream's and every intermediate's dtype: bf16, or f32 on the CPU (the reference
  // the golden tests compare with transformers in f32; f32 attention runs on the CPU only).
  DType activations = DType::bf16;
  int64_t prefill_chunk = 512;  // tokens per prefill step (> 0)
  int max_sequences = 1;        // live sequences at once
  int64_t max_context = 4096;   // tokens per sequence, prompt included
  KvPolicy kv;
  bool decode_graphs = true;  // capture and replay decode steps on a GPU (ignored on the CPU)
};

// The KvCache configuration a model and options give: per-layer types (boundary layers
// included) and windows, and the number of pages the budget affords. Throws Error("[model] ...")
// when the budget is below the rings plus one page, or for a type the device cannot hold.
KvCacheConfig kv_cache_config(const ModelConfig& config, const RunnerOptions& options,
                              const Device& device);

struct LoadedModel {
  ModelConfig config;
  ModelWeights weights;
};
// A Hugging Face / MLX directory (config.json and safetensors) or a .gguf file, onto the
// stream's device.
LoadedModel load_model(const std::string& path, const Stream& stream);

class Runner {
 public:
  // The weights must be on the stream's device. Projections computed together are stacked into
  // one weight each at construction (their parts are then released). Throws Error("[model] ...")
  // for options the model or device cannot run (f32 activations on a GPU, max_context beyond 2^31
  // positions ...).
  Runner(ModelConfig config, ModelWeights weights, RunnerOptions options, const Stream& stream);
  ~Runner();
  Runner(const Runner&) = delete;
  Runner& operator=(const Runner&) = delete;

  const ModelConfig& config() const { return config_; }
  const RunnerOptions& options() const { return options_; }
  const Stream& stream() const { return stream_; }
  const KvCache& cache() const { return *cache_; }
  // For tools that set sequence lengths directly (benchmarks plan a long context without
  // computing it; the unwritten slots read as zeros).
  KvCache& cache() { return *cache_; }

  int add_sequence();                // throws past max_sequences
  void free_sequence(int sequence);  // its pages return to the pool
  int64_t length(int sequence) const;

  // Appends `tokens` to `sequence`, prefill_chunk tokens per step, and returns the f32 logits of
  // its last token [1, vocab], or of every token [tokens, vocab] with all_logits. Token ids
  // outside [0, vocab), an empty token list and a sequence growing past max_context are errors;
  // running out of cache pages is an error that leaves the sequence as it was before the chunk
  // that did not fit.
  Buffer prefill(int sequence, std::span<const int32_t> tokens, bool all_logits = false);

  // One new token per sequence (distinct live sequences, each already holding a token or more
  // or none): f32 logits [batch, vocab], row b for sequences[b]. The buffer is valid until the
  // next decode call (a replayed graph writes the same buffer).
  Buffer decode(std::span<const int> sequences, std::span<const int32_t> tokens);

  // Decode steps replayed from a graph, and graphs captured, since construction.
  int64_t graph_replays() const { return graph_replays_; }
  int64_t graphs_captured() const { return static_cast<int64_t>(graphs_.size()); }

 private:
  struct DecodeGraph;
  // Attention of layer `l` for q [T, H, D] given this step's k and v [T, KV, D], written to out
  // [T, H, D]; also appends k and v to the cache.
  using Attend = std::function<void(int layer, const Buffer& q, const Buffer& k, const Buffer& v,
                                    const Buffer& out)>;
  // Embedding, every block and the final norm for T tokens; the logits of the rows of
  // [first_row, T) (none when first_row == T), into `logits` [T - first_row, vocab] f32.
  void forward(const Buffer& ids, const Buffer& positions, int64_t first_row, const Buffer& logits,
               const Attend& attend);
  Buffer decode_step(const Buffer& ids, const Buffer& positions, const KvStep& step);
  void check_tokens(std::span<const int32_t> tokens, const char* what) const;

  ModelConfig config_;
  ModelWeights weights_;
  RunnerOptions options_;
  Stream stream_;
  std::unique_ptr<KvCache> cache_;
  std::vector<RopeTable> rope_;  // per layer
  // Per layer, the projections one matmul computes together: Q, K and V stacked (with their
  // biases), and gate with up. Undefined where the parts differ in format (mixed-precision
  // checkpoints); those run one matmul each. A stacked weight replaces its parts in weights_.
  struct Stacked {
    Weight qkv;
    Buffer qkv_bias;
    Weight gate_up;
  };
  std::vector<Stacked> stacked_;
  std::map<std::pair<int, int64_t>, std::unique_ptr<DecodeGraph>> graphs_;
  int64_t graph_replays_ = 0;
};

}  // namespace mlxn::model
