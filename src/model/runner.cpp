#include "mlxn/model/runner.h"

#include <algorithm>
#include <filesystem>
#include <numeric>
#include <string_view>

#include "core/text.h"
#include "mlxn/core/error.h"
#include "mlxn/core/float_types.h"
#include "mlxn/io/gguf.h"
#include "mlxn/io/hf_config.h"
#include "mlxn/ops/activations.h"
#include "mlxn/ops/attention.h"
#include "mlxn/ops/elementwise.h"
#include "mlxn/ops/matmul.h"
#include "mlxn/ops/memory.h"
#include "mlxn/ops/norms.h"
#include "mlxn/ops/weights.h"

namespace mlxn::model {

namespace {

using text::cat;
using text::in_quotes;

constexpr const char* kOp = "model";

// Decode graphs are keyed by the context they were sized for (decode attention's split count
// follows it): the step's longest sequence rounded up to a power of two, at least this.
constexpr int64_t kMinContextBucket = 256;

int64_t context_bucket(int64_t max_length) {
  int64_t bucket = kMinContextBucket;
  while (bucket < max_length) bucket *= 2;
  return bucket;
}

Buffer upload_i32(const std::vector<int32_t>& values, const Stream& stream) {
  return Buffer::from_host(std::span<const int32_t>(values), {static_cast<int64_t>(values.size())},
                           DType::i32, stream);
}

}  // namespace

// ---- KV-cache configuration -------------------------------------------------------------------

KvCacheConfig kv_cache_config(const ModelConfig& config, const RunnerOptions& options,
                              const Device& device) {
  const KvPolicy& policy = options.kv;
  if (policy.boundary_layers < 0 || 2 * int64_t{policy.boundary_layers} > config.num_layers) {
    throw Error(kOp, cat("boundary_layers ", policy.boundary_layers, " must be in [0, ",
                         config.num_layers / 2, "] for ", config.num_layers, " layers"));
  }
  if (options.max_sequences < 1 || options.max_context < 1 || options.max_context > INT32_MAX) {
    throw Error(kOp, cat("max_sequences ", options.max_sequences, " and max_context ",
                         options.max_context, " must be >= 1 (max_context < 2^31)"));
  }
  if (!device.is_cpu()) {
    for (KvType t : {policy.k, policy.v, policy.boundary_type}) {
      if (t == KvType::f32) {
        throw Error(kOp, cat("an f32 KV cache runs on the CPU only; on ", device.str(),
                             " use bf16, f16, fp8 or tq2..tq8"));
      }
    }
  }
  KvCacheConfig c;
  c.kv_heads = static_cast<int>(config.num_kv_heads);
  c.head_dim = static_cast<int>(config.head_dim);
  c.page_size = policy.page_size;
  c.max_sequences = options.max_sequences;
  c.max_query_tokens = 1;  // decode appends one token per sequence; prefill appends any count
  const int64_t L = config.num_layers;
  for (int64_t i = 0; i < L; ++i) {
    const bool boundary = i < policy.boundary_layers || i >= L - policy.boundary_layers;
    KvLayerConfig layer;
    layer.k = boundary ? policy.boundary_type : policy.k;
    layer.v = boundary ? policy.boundary_type : policy.v;
    layer.window = config.layers[static_cast<size_t>(i)].window;
    c.layers.push_back(layer);
  }
  // The cache's size is linear in the pool: what does not scale with it (the sliding-window
  // rings, fp8 scales, page tables), plus a page of every full-attention layer per page.
  // required_bytes also validates page_size and head_dim.
  c.num_pages = 0;
  const int64_t fixed = KvCache::required_bytes(c);
  if (policy.memory_budget == 0) {  // every sequence at max_context
    c.num_pages =
        int64_t{options.max_sequences} * ((options.max_context + c.page_size - 1) / c.page_size);
    return c;
  }
  if (policy.memory_budget < 0) {
    throw Error(kOp, cat("memory_budget ", policy.memory_budget, " must be >= 0"));
  }
  c.num_pages = 1;
  const int64_t per_page = KvCache::required_bytes(c) - fixed;
  if (per_page == 0) {  // no full-attention layer
    if (fixed > policy.memory_budget) {
      throw Error(kOp, cat("memory_budget ", policy.memory_budget, " B is below the ", fixed,
                           " B the sliding-window rings need"));
    }
    c.num_pages = 0;
    return c;
  }
  const int64_t pages = (policy.memory_budget - fixed) / per_page;
  if (pages < 1) {
    throw Error(kOp,
                cat("memory_budget ", policy.memory_budget, " B leaves no page: the rings take ",
                    fixed, " B and one page of every full-attention layer ", per_page, " B"));
  }
  c.num_pages = pages;
  return c;
}

LoadedModel load_model(const std::string& path, const Stream& stream) {
  namespace fs = std::filesystem;
  if (fs::is_directory(path)) {
    const io::HfConfig hf = io::HfConfig::load((fs::path(path) / "config.json").string());
    LoadedModel m{from_hf_config(hf), {}};
    m.weights = load_hf_weights(m.config, hf, path, stream);
    return m;
  }
  if (!fs::exists(path)) {
    throw Error(
        kOp, cat(in_quotes(path), " does not exist (expected a model directory or a .gguf file)"));
  }
  const io::GgufFile file = io::GgufFile::open(path);
  LoadedModel m{from_gguf(file), {}};
  m.weights = load_gguf_weights(m.config, file, stream);
  return m;
}

// ---- Runner -----------------------------------------------------------------------------------

// A decode step captured for one batch size and context bucket. The graph reads its inputs from
// these buffers, refreshed before each replay; `step` names them as the cache's tables.
struct Runner::DecodeGraph {
  Buffer ids, positions, lengths;
  std::vector<Buffer> slots, tables;  // per page group, tables [batch, widest]
  KvStep step;
  Buffer logits;
  std::unique_ptr<Graph> graph;
};

Runner::Runner(ModelConfig config, ModelWeights weights, RunnerOptions options,
               const Stream& stream)
    : config_(std::move(config)),
      weights_(std::move(weights)),
      options_(std::move(options)),
      stream_(stream) {
  const Device device = stream_.device();
  if (options_.activations != DType::bf16 && options_.activations != DType::f32) {
    throw Error(kOp,
                cat("activations must be bf16 or f32, got ", dtype_name(options_.activations)));
  }
  if (options_.activations == DType::f32 && !device.is_cpu()) {
    throw Error(kOp, cat("f32 activations run on the CPU only (the reference); on ", device.str(),
                         " use bf16"));
  }
  if (options_.prefill_chunk < 1) {
    throw Error(kOp, cat("prefill_chunk ", options_.prefill_chunk, " must be >= 1"));
  }
  if (static_cast<int64_t>(weights_.layers.size()) != config_.num_layers ||
      !weights_.embed.defined() || !weights_.lm_head.defined() || !weights_.final_norm.defined()) {
    throw Error(kOp, cat("the weights do not match the config's ", config_.num_layers,
                         " layers (load them with load_hf_weights / load_gguf_weights)"));
  }
  if (weights_.embed.device() != device) {
    throw Error(kOp, cat("the weights are on ", weights_.embed.device().str(), ", the stream on ",
                         device.str()));
  }
  cache_ = std::make_unique<KvCache>(kv_cache_config(config_, options_, device), stream_);
  for (LayerWeights& w : weights_.layers) {
    Stacked s;
    const bool biases_stack = !config_.qkv_bias || (w.q_bias.dtype() == w.k_bias.dtype() &&
                                                    w.q_bias.dtype() == w.v_bias.dtype());
    if (same_layout(w.q, w.k) && same_layout(w.q, w.v) && biases_stack) {
      const Weight parts[] = {w.q, w.k, w.v};
      s.qkv = concat_rows(parts, stream_);
      if (config_.qkv_bias) {
        s.qkv_bias = Buffer::empty_exact({s.qkv.out_features()}, w.q_bias.dtype(), stream_);
        int64_t at = 0;
        for (const Buffer* b : {&w.q_bias, &w.k_bias, &w.v_bias}) {
          copy(*b, s.qkv_bias.slice(0, at, at + b->numel()), stream_);
          at += b->numel();
        }
        w.q_bias = w.k_bias = w.v_bias = Buffer();
      }
      w.q = w.k = w.v = Weight();
    }
    if (same_layout(w.gate, w.up) && !config_.mlp_bias) {
      const Weight parts[] = {w.gate, w.up};
      s.gate_up = concat_rows(parts, stream_);
      w.gate = w.up = Weight();
    }
    stacked_.push_back(std::move(s));
  }
  rope_.reserve(config_.layers.size());
  for (const LayerConfig& l : config_.layers)
    rope_.emplace_back(l.rope, stream_, options_.max_context);
  // From here on nothing writes the weights (the runner holds them read-only): once the copies
  // above have completed, kernels may read them ahead of their inputs (Weight::settle).
  stream_.synchronize();
  const auto settle = [](Weight& w) {
    if (w.defined()) w.settle();
  };
  settle(weights_.embed);
  settle(weights_.lm_head);
  for (LayerWeights& w : weights_.layers) {
    for (Weight* m : {&w.q, &w.k, &w.v, &w.o, &w.gate, &w.up, &w.down}) settle(*m);
  }
  for (Stacked& s : stacked_) {
    settle(s.qkv);
    settle(s.gate_up);
  }
}

Runner::~Runner() = default;

int Runner::add_sequence() { return cache_->add_sequence(); }
void Runner::free_sequence(int sequence) { cache_->free_sequence(sequence); }
int64_t Runner::length(int sequence) const { return cache_->length(sequence); }

void Runner::check_tokens(std::span<const int32_t> tokens, const char* what) const {
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (tokens[i] < 0 || tokens[i] >= config_.vocab_size) {
      throw Error(kOp, cat(what, " token ", i, " is ", tokens[i], ", outside the vocabulary [0, ",
                           config_.vocab_size, ")"));
    }
  }
}

void Runner::forward(const Buffer& ids, const Buffer& positions, int64_t first_row,
                     const Buffer& logits, const Attend& attend) {
  const ModelConfig& c = config_;
  const DType act = options_.activations;
  const int64_t T = ids.numel(), E = c.hidden_size, H = c.num_heads, KV = c.num_kv_heads,
                D = c.head_dim, I = c.intermediate_size;
  const float eps = c.rms_norm_eps;
  const RmsWeight norm = c.norm_weight;

  Buffer residual = Buffer::empty({T, E}, act, stream_);
  embedding(ids, weights_.embed, residual, stream_);
  if (c.embedding_scale != 1.0f) {
    // transformers multiplies by the scale rounded to the weights' dtype (Gemma).
    const float s = act == DType::bf16
                        ? float_bits::bf16_to_f32(float_bits::f32_to_bf16(c.embedding_scale))
                        : c.embedding_scale;
    scale(residual, s, residual, stream_);
  }
  Buffer h = Buffer::empty({T, E}, act, stream_);
  rms_norm(residual, weights_.layers[0].input_norm, eps, h, stream_, norm);

  for (int64_t l = 0; l < c.num_layers; ++l) {
    const LayerWeights& w = weights_.layers[static_cast<size_t>(l)];
    const RopeTable& rope_table = rope_[static_cast<size_t>(l)];
    const Stacked& st = stacked_[static_cast<size_t>(l)];
    // RoPE reads q and k where the projection left them (views of the stacked output) and
    // writes them contiguous, as attention and the cache take them. With one token the views
    // are contiguous already: RoPE then works in place and v needs no copy.
    Buffer q, k, v, q_in, k_in;
    Buffer qk_in_place;  // one token: q and k heads side by side in the stacked output
    if (st.qkv.defined()) {
      const Buffer qkv = Buffer::empty({T, H + 2 * KV, D}, act, stream_);
      matmul(h, st.qkv, st.qkv_bias, qkv.reshape({T, (H + 2 * KV) * D}), stream_);
      q_in = qkv.slice(1, 0, H);
      k_in = qkv.slice(1, H, H + KV);
      const Buffer v_in = qkv.slice(1, H + KV, H + 2 * KV);
      const bool in_place = v_in.is_contiguous();
      q = in_place ? q_in : Buffer::empty({T, H, D}, act, stream_);
      k = in_place ? k_in : Buffer::empty({T, KV, D}, act, stream_);
      v = in_place ? v_in : Buffer::empty({T, KV, D}, act, stream_);
      if (in_place) {
        qk_in_place = qkv.slice(1, 0, H + KV);  // RoPE of q and k in one launch
      } else {
        copy(v_in, v, stream_);
      }
    } else {
      q = q_in = Buffer::empty({T, H, D}, act, stream_);
      k = k_in = Buffer::empty({T, KV, D}, act, stream_);
      v = Buffer::empty({T, KV, D}, act, stream_);
      matmul(h, w.q, w.q_bias, q.reshape({T, H * D}), stream_);
      matmul(h, w.k, w.k_bias, k.reshape({T, KV * D}), stream_);
      matmul(h, w.v, w.v_bias, v.reshape({T, KV * D}), stream_);
    }
    if (c.qk_norm) {
      rms_norm_rope(q_in, w.q_norm, eps, norm, positions, rope_table, q, stream_);
      rms_norm_rope(k_in, w.k_norm, eps, norm, positions, rope_table, k, stream_);
    } else if (qk_in_place.defined()) {
      rope(qk_in_place, positions, rope_table, qk_in_place, stream_);
    } else {
      rope(q_in, positions, rope_table, q, stream_);
      rope(k_in, positions, rope_table, k, stream_);
    }
    const Buffer attn = Buffer::empty({T, H, D}, act, stream_);
    attend(static_cast<int>(l), q, k, v, attn);

    Buffer o = Buffer::empty({T, E}, act, stream_);
    matmul(attn.reshape({T, H * D}), w.o, w.o_bias, o, stream_);
    if (c.four_norms) {
      const Buffer normed = Buffer::empty({T, E}, act, stream_);
      rms_norm(o, w.post_attn_norm, eps, normed, stream_, norm);
      o = normed;
    }
    Buffer sum = Buffer::empty({T, E}, act, stream_);
    add_rms_norm(o, residual, w.pre_ffn_norm, eps, sum, h, stream_, norm);
    residual = sum;

    const Buffer gated = Buffer::empty({T, I}, act, stream_);
    if (st.gate_up.defined()) {
      const Buffer gate_up = Buffer::empty({T, 2 * I}, act, stream_);
      matmul(h, st.gate_up, Buffer(), gate_up, stream_);
      gated_activation(gate_up.slice(1, 0, I), gate_up.slice(1, I, 2 * I), c.activation, gated,
                       stream_);
    } else {
      const Buffer up = Buffer::empty({T, I}, act, stream_);
      matmul(h, w.gate, w.gate_bias, gated, stream_);
      matmul(h, w.up, w.up_bias, up, stream_);
      gated_activation(gated, up, c.activation, gated, stream_);
    }
    Buffer d = Buffer::empty({T, E}, act, stream_);
    matmul(gated, w.down, w.down_bias, d, stream_);
    if (c.four_norms) {
      const Buffer normed = Buffer::empty({T, E}, act, stream_);
      rms_norm(d, w.post_ffn_norm, eps, normed, stream_, norm);
      d = normed;
    }
    // The residual sum with the next block's input norm, or with the final norm.
    const Buffer& next_norm = l + 1 < c.num_layers
                                  ? weights_.layers[static_cast<size_t>(l + 1)].input_norm
                                  : weights_.final_norm;
    sum = Buffer::empty({T, E}, act, stream_);
    add_rms_norm(d, residual, next_norm, eps, sum, h, stream_, norm);
    residual = sum;
  }
  if (first_row == T) return;
  matmul(h.slice(0, first_row, T), weights_.lm_head, Buffer(), logits, stream_);
  if (c.final_logit_softcap > 0) softcap(logits, c.final_logit_softcap, logits, stream_);
}

Buffer Runner::prefill(int sequence, std::span<const int32_t> tokens, bool all_logits) {
  if (tokens.empty()) throw Error(kOp, "prefill needs at least one token");
  check_tokens(tokens, "prompt");
  const int64_t n = static_cast<int64_t>(tokens.size());
  const int64_t start = cache_->length(sequence);  // throws for a sequence that is not live
  if (start + n > options_.max_context) {
    throw Error(kOp, cat("sequence ", sequence, " would hold ", start + n,
                         " tokens, past max_context ", options_.max_context));
  }
  const Buffer logits =
      Buffer::empty({all_logits ? n : 1, config_.vocab_size}, DType::f32, stream_);
  const int64_t chunk = options_.prefill_chunk;
  for (int64_t first = 0; first < n; first += chunk) {
    const int64_t L = std::min(chunk, n - first);
    const int64_t prefix = start + first;
    const int seqs[] = {sequence};
    const int counts[] = {static_cast<int>(L)};
    const KvStep step = cache_->plan(seqs, counts);  // throws, changing nothing, when short
    std::vector<int32_t> pos(static_cast<size_t>(L));
    std::iota(pos.begin(), pos.end(), static_cast<int32_t>(prefix));
    const Buffer ids = upload_i32(
        std::vector<int32_t>(tokens.begin() + first, tokens.begin() + first + L), stream_);
    const Buffer positions = upload_i32(pos, stream_);
    const Attend attend = [&](int layer, const Buffer& q, const Buffer& k, const Buffer& v,
                              const Buffer& out) {
      PrefillAttentionParams p;
      p.scale = config_.attention_scale;
      p.softcap = config_.attn_logit_softcap;
      p.causal = true;
      prefill_attention_cached(q, k, v, cache_->layer(layer),
                               step.page_table_of(layer).select(0, 0), prefix, out, p, stream_);
      cache_->append(layer, k, v, step);
    };
    const bool last = first + L == n;
    if (all_logits) {
      forward(ids, positions, 0, logits.slice(0, first, first + L), attend);
    } else {
      forward(ids, positions, last ? L - 1 : L, logits, attend);
    }
  }
  return logits;
}

Buffer Runner::decode_step(const Buffer& ids, const Buffer& positions, const KvStep& step) {
  const int64_t B = ids.numel();
  const Buffer logits = Buffer::empty({B, config_.vocab_size}, DType::f32, stream_);
  const Attend attend = [&](int layer, const Buffer& q, const Buffer& k, const Buffer& v,
                            const Buffer& out) {
    cache_->append(layer, k, v, step);
    DecodeAttentionParams p;
    p.scale = config_.attention_scale;
    p.softcap = config_.attn_logit_softcap;
    const int64_t H = q.dim(1), D = q.dim(2);
    cache_->attend(layer, q.reshape({B, 1, H, D}), out.reshape({B, 1, H, D}), p, step);
  };
  forward(ids, positions, 0, logits, attend);
  return logits;
}

Buffer Runner::decode(std::span<const int> sequences, std::span<const int32_t> tokens) {
  if (sequences.empty() || sequences.size() != tokens.size()) {
    throw Error(kOp, cat("decode needs one token per sequence and at least one, got ",
                         sequences.size(), " sequences and ", tokens.size(), " tokens"));
  }
  check_tokens(tokens, "decode");
  const int B = static_cast<int>(sequences.size());
  std::vector<int32_t> pos(static_cast<size_t>(B));
  for (int b = 0; b < B; ++b) {
    const int64_t len = cache_->length(sequences[static_cast<size_t>(b)]);
    if (len + 1 > options_.max_context) {
      throw Error(kOp, cat("sequence ", sequences[static_cast<size_t>(b)], " would hold ", len + 1,
                           " tokens, past max_context ", options_.max_context));
    }
    pos[static_cast<size_t>(b)] = static_cast<int32_t>(len);
  }
  // Graphs need settled fp8 scales (a captured append would calibrate on every replay).
  const bool graphs =
      options_.decode_graphs && !stream_.device().is_cpu() && !cache_->fp8_calibration_pending();
  const std::vector<int> ones(static_cast<size_t>(B), 1);
  const KvStep step = cache_->plan(sequences, ones);
  if (!graphs) {
    return decode_step(upload_i32({tokens.begin(), tokens.end()}, stream_),
                       upload_i32(pos, stream_), step);
  }

  const int64_t bucket = context_bucket(step.max_length);
  std::unique_ptr<DecodeGraph>& slot = graphs_[{B, bucket}];
  if (!slot) {
    auto g = std::make_unique<DecodeGraph>();
    g->ids = Buffer::empty({B}, DType::i32, stream_);
    g->positions = Buffer::empty({B}, DType::i32, stream_);
    g->lengths = Buffer::empty({B}, DType::i32, stream_);
    g->step.layer_group = step.layer_group;
    g->step.sequences = step.sequences;
    g->step.new_tokens = step.new_tokens;
    g->step.max_length = bucket;
    g->step.lengths = g->lengths;
    const int64_t P = options_.kv.page_size;
    for (size_t grp = 0; grp < step.page_tables.size(); ++grp) {
      if (!step.page_tables[grp].defined()) {
        g->slots.emplace_back();
        g->tables.emplace_back();
        continue;
      }
      // A ring's table is as wide in every step; a full group's grows to the bucket's pages.
      const int64_t width = std::max(step.page_tables[grp].dim(1), (bucket + P - 1) / P);
      g->slots.push_back(Buffer::empty({B}, DType::i32, stream_));
      g->tables.push_back(Buffer::empty({B, width}, DType::i32, stream_));
      fill(g->tables.back(), 0, stream_);
    }
    g->step.slots = g->slots;
    g->step.page_tables = g->tables;
    slot = std::move(g);
  }
  DecodeGraph& g = *slot;
  g.ids.copy_from_host(tokens.data(), int64_t{B} * 4, stream_);
  g.positions.copy_from_host(pos.data(), int64_t{B} * 4, stream_);
  copy(step.lengths, g.lengths, stream_);
  for (size_t grp = 0; grp < g.tables.size(); ++grp) {
    if (!g.tables[grp].defined()) continue;
    copy(step.slots[grp], g.slots[grp], stream_);
    copy(step.page_tables[grp], g.tables[grp].slice(1, 0, step.page_tables[grp].dim(1)), stream_);
  }
  if (!g.graph) {
    g.graph = std::make_unique<Graph>(
        Graph::capture(stream_, [&] { g.logits = decode_step(g.ids, g.positions, g.step); }));
  }
  g.graph->replay(stream_);
  ++graph_replays_;
  return g.logits;
}

}  // namespace mlxn::model
