#include "mlxn/model/synthetic.h"

#include <algorithm>
#include <map>
#include <string_view>
#include <utility>

#include "core/text.h"
#include "mlxn/core/error.h"
#include "mlxn/io/hf_config.h"
#include "mlxn/ops/elementwise.h"
#include "mlxn/ops/memory.h"
#include "mlxn/ops/weights.h"

namespace mlxn::model {

namespace {

using text::cat;

struct SyntheticShape {
  std::string_view name;
  std::string_view config_json;
};

// Public config.json values (sizes, heads, windows, rope), trimmed to what the forward pass reads;
// "tiny" is no published model, only small enough for the CPU reference.
constexpr SyntheticShape kShapes[] = {
    {"tiny", R"({"architectures": ["LlamaForCausalLM"], "hidden_size": 256,
      "intermediate_size": 768, "num_hidden_layers": 4, "num_attention_heads": 4,
      "num_key_value_heads": 2, "vocab_size": 1024, "rms_norm_eps": 1e-5,
      "max_position_embeddings": 4096, "rope_theta": 10000.0, "tie_word_embeddings": false})"},
    {"llama3_8b", R"({"architectures": ["LlamaForCausalLM"], "hidden_size": 4096,
      "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32,
      "num_key_value_heads": 8, "vocab_size": 128256, "rms_norm_eps": 1e-5,
      "max_position_embeddings": 131072, "rope_theta": 500000.0,
      "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                       "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
      "tie_word_embeddings": false})"},
    {"qwen3_8b", R"({"architectures": ["Qwen3ForCausalLM"], "hidden_size": 4096,
      "intermediate_size": 12288, "num_hidden_layers": 36, "num_attention_heads": 32,
      "num_key_value_heads": 8, "head_dim": 128, "vocab_size": 151936, "rms_norm_eps": 1e-6,
      "max_position_embeddings": 40960, "rope_theta": 1000000.0, "tie_word_embeddings": false})"},
    {"gemma3_12b", R"({"architectures": ["Gemma3ForCausalLM"], "model_type": "gemma3_text",
      "hidden_size": 3840, "intermediate_size": 15360, "num_hidden_layers": 48,
      "num_attention_heads": 16, "num_key_value_heads": 8, "head_dim": 256,
      "vocab_size": 262208, "rms_norm_eps": 1e-6, "max_position_embeddings": 131072,
      "query_pre_attn_scalar": 256, "sliding_window": 1024, "sliding_window_pattern": 6,
      "rope_theta": 1000000.0, "rope_local_base_freq": 10000.0,
      "rope_scaling": {"rope_type": "linear", "factor": 8.0}, "tie_word_embeddings": true})"},
};

// Rows quantized on the CPU per input size; the device copies repeat them down the rows.
constexpr int64_t kBlockRows = 64;

class WeightFactory {
 public:
  WeightFactory(int bits, int group_size, const Stream& stream)
      : bits_(bits), group_size_(group_size), stream_(stream) {}

  Weight matrix(int64_t n, int64_t k) {
    auto it = blocks_.find(k);
    if (it == blocks_.end()) {
      const Stream cpu(Device::cpu());
      Buffer v = Buffer::empty({kBlockRows, k}, DType::f32, cpu),
             b = Buffer::empty({kBlockRows, k}, DType::bf16, cpu);
      fill_random(v, {Distribution::normal, static_cast<uint64_t>(k), 0.0f, 0.02f}, cpu);
      cast(v, b, cpu);
      it = blocks_.emplace(k, quantize_mlx_affine(b, bits_, group_size_, cpu)).first;
    }
    const Weight& w = it->second;
    return Weight::mlx_affine(tile(w.data(), n), tile(w.scales(), n), tile(w.biases(), n), bits_,
                              group_size_);
  }
  Buffer vector(int64_t n, float value) {
    Buffer b = Buffer::empty_exact({n}, DType::bf16, stream_);
    fill(b, value, stream_);
    return b;
  }

 private:
  // [n, cols] on the device from the first rows of `block`, by doubling copies.
  Buffer tile(const Buffer& block, int64_t n) {
    Buffer out = Buffer::empty_exact({n, block.dim(1)}, block.dtype(), stream_);
    const int64_t first = std::min(block.dim(0), n);
    Buffer staged = Buffer::empty({first, block.dim(1)}, block.dtype(), stream_);
    copy(block.slice(0, 0, first), staged, stream_);
    copy(staged, out.slice(0, 0, first), stream_);
    for (int64_t done = first; done < n; done *= 2) {
      const int64_t rows = std::min(done, n - done);
      copy(out.slice(0, 0, rows), out.slice(0, done, done + rows), stream_);
    }
    return out;
  }
  int bits_;
  int group_size_;
  Stream stream_;
  std::map<int64_t, Weight> blocks_;
};

}  // namespace

std::vector<std::string> synthetic_model_names() {
  std::vector<std::string> names;
  for (const SyntheticShape& s : kShapes) names.emplace_back(s.name);
  return names;
}

ModelConfig synthetic_config(const std::string& name) {
  for (const SyntheticShape& s : kShapes) {
    if (s.name == name) {
      return from_hf_config(io::HfConfig::parse(std::string(s.config_json), name + ".json"));
    }
  }
  std::string known;
  for (const SyntheticShape& s : kShapes) known += cat(known.empty() ? "" : ", ", s.name);
  throw Error("model", cat("no synthetic model ", text::in_quotes(name), " (known: ", known, ")"));
}

ModelWeights random_mlx_weights(const ModelConfig& c, int bits, int group_size,
                                const Stream& stream) {
  const int64_t E = c.hidden_size, H = c.num_heads, KV = c.num_kv_heads, D = c.head_dim,
                I = c.intermediate_size;
  for (int64_t k : {E, H * D, I}) {
    if (group_size <= 0 || k % group_size != 0) {
      throw Error("model", cat("group_size ", group_size, " does not divide the input size ", k,
                               " of a matrix of ", c.source));
    }
  }
  WeightFactory f(bits, group_size, stream);
  // Gemma's norms apply 1 + w: zero weights are the identity, as ones are for the others.
  const float unit = c.norm_weight == RmsWeight::one_plus ? 0.0f : 1.0f;
  ModelWeights w;
  w.embed = f.matrix(c.vocab_size, E);
  w.lm_head = c.tie_word_embeddings ? w.embed : f.matrix(c.vocab_size, E);
  w.final_norm = f.vector(E, unit);
  for (int64_t l = 0; l < c.num_layers; ++l) {
    LayerWeights lw;
    lw.q = f.matrix(H * D, E);
    lw.k = f.matrix(KV * D, E);
    lw.v = f.matrix(KV * D, E);
    lw.o = f.matrix(E, H * D);
    lw.gate = f.matrix(I, E);
    lw.up = f.matrix(I, E);
    lw.down = f.matrix(E, I);
    lw.input_norm = f.vector(E, unit);
    lw.pre_ffn_norm = f.vector(E, unit);
    if (c.four_norms) {
      lw.post_attn_norm = f.vector(E, unit);
      lw.post_ffn_norm = f.vector(E, unit);
    }
    if (c.qk_norm) {
      lw.q_norm = f.vector(D, unit);
      lw.k_norm = f.vector(D, unit);
    }
    if (c.qkv_bias) {
      lw.q_bias = f.vector(H * D, 0.0f);
      lw.k_bias = f.vector(KV * D, 0.0f);
      lw.v_bias = f.vector(KV * D, 0.0f);
    }
    if (c.o_bias) lw.o_bias = f.vector(E, 0.0f);
    if (c.mlp_bias) {
      lw.gate_bias = f.vector(I, 0.0f);
      lw.up_bias = f.vector(I, 0.0f);
      lw.down_bias = f.vector(E, 0.0f);
    }
    w.layers.push_back(std::move(lw));
  }
  return w;
}

}  // namespace mlxn::model
