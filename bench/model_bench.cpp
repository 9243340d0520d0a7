// Whole-model decode and prefill on the GPU, random weights in MLX affine 4-bit (group 64) with
// the shapes of Llama-3-8B, Qwen3-8B and Gemma-3-12B (configs parsed by from_hf_config, so every
// architecture rule applies).
//
// Decode: one step = Runner::decode of one token per sequence, argmax on the device, the token ids
// read back (what a generate loop does), timed between device events. The cache is planned to
// the context without being written (unwritten slots are zero vectors; the kernels read the same
// bytes whatever they hold), and sequences start 32 tokens below the context so that no step
// crosses a graph's context bucket. Roofline of a step: (weight bytes + KV bytes it must read) /
// the device copy bandwidth measured in the same run; weight bytes count every matrix once (the
// embedding only for the rows gathered unless it is the tied head). Eager launches are timed
// beside graph replay at batch 1 and context 1K: the difference is the launch overhead per step.
// Prefill: 4096 tokens of a fresh sequence in one chunk.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include "harness.h"
#include "mlxn/io/hf_config.h"

using namespace mlxn;
using namespace mlxn::bench;

namespace {

struct ModelShape {
  std::string name;
  std::string config_json;
};

// Public config.json values of the three models (sizes, heads, windows, rope), trimmed to what
// the forward pass reads.
const ModelShape kShapes[] = {
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

// Random MLX 4-bit weights: a 64-row block quantized on the CPU from normal values (scales like
// a trained layer's), repeated down the rows on the GPU by doubling copies.
class WeightFactory {
 public:
  explicit WeightFactory(const Stream& gpu) : gpu_(gpu) {}

  Weight matrix(int64_t n, int64_t k) {
    auto it = blocks_.find(k);
    if (it == blocks_.end()) {
      const Stream cpu(Device::cpu());
      Buffer v = Buffer::empty({64, k}, DType::f32, cpu),
             b = Buffer::empty({64, k}, DType::bf16, cpu);
      fill_random(v, {Distribution::normal, static_cast<uint64_t>(k), 0.0f, 0.02f}, cpu);
      cast(v, b, cpu);
      it = blocks_.emplace(k, quantize_mlx_affine(b, 4, 64, cpu)).first;
    }
    const Weight& w = it->second;
    return Weight::mlx_affine(tile(w.data(), n), tile(w.scales(), n), tile(w.biases(), n), 4, 64);
  }
  Buffer vector(int64_t n, float value) {
    Buffer b = Buffer::empty_exact({n}, DType::bf16, gpu_);
    fill(b, value, gpu_);
    return b;
  }

 private:
  Buffer tile(const Buffer& block, int64_t n) {
    Buffer out = Buffer::empty_exact({n, block.dim(1)}, block.dtype(), gpu_);
    const int64_t first = std::min(block.dim(0), n);
    Buffer staged = Buffer::empty({first, block.dim(1)}, block.dtype(), gpu_);
    copy(block.slice(0, 0, first), staged, gpu_);
    copy(staged, out.slice(0, 0, first), gpu_);
    for (int64_t done = first; done < n; done *= 2) {
      const int64_t rows = std::min(done, n - done);
      copy(out.slice(0, 0, rows), out.slice(0, done, done + rows), gpu_);
    }
    return out;
  }
  Stream gpu_;
  std::map<int64_t, Weight> blocks_;
};

model::ModelWeights random_weights(const model::ModelConfig& c, WeightFactory& f) {
  const int64_t E = c.hidden_size, H = c.num_heads, KV = c.num_kv_heads, D = c.head_dim,
                I = c.intermediate_size;
  // Gemma's norms apply 1 + w: zero weights are the identity, as ones are for the others.
  const float unit = c.norm_weight == RmsWeight::one_plus ? 0.0f : 1.0f;
  model::ModelWeights w;
  w.embed = f.matrix(c.vocab_size, E);
  w.lm_head = c.tie_word_embeddings ? w.embed : f.matrix(c.vocab_size, E);
  w.final_norm = f.vector(E, unit);
  for (int64_t l = 0; l < c.num_layers; ++l) {
    model::LayerWeights lw;
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
    w.layers.push_back(std::move(lw));
  }
  return w;
}

// Bytes one decode step of `batch` sequences must read from the weights.
double weight_bytes_per_step(const model::ModelWeights& w, int batch) {
  double bytes = static_cast<double>(w.bytes());
  if (w.embed.data().allocation() != w.lm_head.data().allocation()) {
    // Untied: the embedding is gathered, `batch` rows of it.
    bytes -= static_cast<double>(w.embed.nbytes());
    bytes +=
        static_cast<double>(w.embed.nbytes()) / static_cast<double>(w.embed.out_features()) * batch;
  }
  return bytes;
}

// Bytes one decode step must read from the cache: every visible cached vector of every layer.
double kv_bytes_per_step(const model::ModelConfig& c, const KvCacheConfig& kv, int batch,
                         int64_t context) {
  double bytes = 0;
  for (const KvLayerConfig& l : kv.layers) {
    const int64_t visible = l.window > 0 ? std::min<int64_t>(context, l.window) : context;
    bytes +=
        static_cast<double>(visible) * batch * static_cast<double>(c.num_kv_heads) *
        static_cast<double>(kv_vector_bytes(l.k, kv.head_dim) + kv_vector_bytes(l.v, kv.head_dim));
  }
  return bytes;
}

struct DecodeCase {
  int batch;
  int64_t context;
  KvType kv;
  bool graphs = true;
};

}  // namespace

// An optional argument keeps only the cases whose name contains it, or every case of the model
// shape it names exactly ("llama3_8b").
int main(int argc, char** argv) {
  try {
    const std::string only = argc > 1 ? argv[1] : "";
    if (!have_gpu()) return 1;
    Stream s(Device::cuda(0));
    const double copy_gbps = report_copy_ceiling(s);
    const std::map<std::string, std::vector<DecodeCase>> decode_cases = {
        {"llama3_8b",
         {{1, 1024, KvType::bf16},
          {1, 1024, KvType::bf16, false},
          {1, 1024, KvType::tq4},
          {1, 32768, KvType::bf16},
          {1, 32768, KvType::fp8},
          {1, 32768, KvType::tq4},
          {1, 32768, KvType::tq3},
          {1, 131072, KvType::bf16},
          {1, 131072, KvType::tq4},
          {16, 1024, KvType::bf16},
          {16, 32768, KvType::bf16},
          {16, 32768, KvType::tq4},
          {16, 32768, KvType::tq3}}},
        {"qwen3_8b",
         {{1, 1024, KvType::bf16}, {16, 32768, KvType::bf16}, {16, 32768, KvType::tq4}}},
        {"gemma3_12b",
         {{1, 1024, KvType::bf16},
          {1, 32768, KvType::bf16},
          {1, 32768, KvType::tq4},
          {16, 32768, KvType::bf16},
          {16, 32768, KvType::tq4}}},
    };
    for (const ModelShape& shape : kShapes) {
      if (!only.empty() && shape.name.find(only) == std::string::npos &&
          only.find(shape.name) == std::string::npos)
        continue;
      const model::ModelConfig config =
          model::from_hf_config(io::HfConfig::parse(shape.config_json, shape.name + ".json"));
      WeightFactory factory(s);
      const model::ModelWeights weights = random_weights(config, factory);
      s.synchronize();
      std::fprintf(stderr, "%s: %.2f GB of MLX 4-bit weights\n", shape.name.c_str(),
                   static_cast<double>(weights.bytes()) / 1e9);

      for (const DecodeCase& dc : decode_cases.at(shape.name)) {
        const std::string name = "model_" + shape.name + "_decode_b" + std::to_string(dc.batch) +
                                 "_ctx" + std::to_string(dc.context / 1024) + "k_" +
                                 std::string(kv_type_name(dc.kv)) + (dc.graphs ? "" : "_eager");
        if (!only.empty() && name.find(only) == std::string::npos && only != shape.name) continue;
        model::RunnerOptions o;
        o.kv.k = o.kv.v = o.kv.boundary_type = dc.kv;
        o.max_sequences = dc.batch;
        o.max_context = dc.context;
        o.decode_graphs = dc.graphs;
        model::Runner runner(config, weights, o, s);
        std::vector<int> seqs;
        for (int b = 0; b < dc.batch; ++b) seqs.push_back(runner.add_sequence());
        const std::vector<int> start(static_cast<size_t>(dc.batch),
                                     static_cast<int>(dc.context - 32));
        runner.cache().plan(seqs, start);
        std::vector<int32_t> tokens(static_cast<size_t>(dc.batch), 1);
        const Buffer ids = Buffer::empty({dc.batch}, DType::i32, s);
        bool finite = true;
        const auto step = [&](int) {
          const Buffer logits = runner.decode(seqs, tokens);
          argmax(logits, ids, s);
          tokens = ids.to_host<int32_t>(s);
        };
        step(0);
        {
          const std::vector<float> l = runner.decode(seqs, tokens).to_host<float>(s);
          for (float x : l) finite = finite && std::isfinite(x);
        }
        validate(finite, name + ": finite logits");
        Case c;
        c.name = name;
        const KvCacheConfig kv = model::kv_cache_config(config, o, s.device());
        const double wbytes = weight_bytes_per_step(weights, dc.batch);
        const double kbytes = kv_bytes_per_step(config, kv, dc.batch, dc.context);
        c.timing = time_device(s, step, 2, 20);
        c.bytes = wbytes + kbytes;
        c.shape = {{"model", shape.name},
                   {"batch", dc.batch},
                   {"context", dc.context},
                   {"kv", std::string(kv_type_name(dc.kv))},
                   {"graphs", dc.graphs},
                   {"weight_bytes_read", wbytes},
                   {"kv_bytes_read", kbytes},
                   {"roofline_us", c.bytes / (copy_gbps * 1e3)},
                   {"tokens_per_s", dc.batch * 1e6 / c.timing.median_us},
                   {"weights_bytes", weights.bytes()},
                   {"kv_cache_bytes", runner.cache().memory_bytes()},
                   {"graph_replays", runner.graph_replays()}};
        emit(c, copy_gbps);
      }

      const std::string prefill_name = "model_" + shape.name + "_prefill_4k";
      if (only.empty() || prefill_name.find(only) != std::string::npos || only == shape.name) {
        model::RunnerOptions o;
        o.prefill_chunk = 4096;
        o.max_context = 4096;
        model::Runner runner(config, weights, o, s);
        std::vector<int32_t> prompt(4096);
        for (size_t i = 0; i < prompt.size(); ++i)
          prompt[i] = static_cast<int32_t>((i * 7919) % 32000);
        const auto run = [&](int) {
          const int seq = runner.add_sequence();
          runner.prefill(seq, prompt);
          runner.free_sequence(seq);
        };
        Case c;
        c.name = prefill_name;
        c.timing = time_device(s, run, 1, 5);
        // Matmul FLOPs (2 per weight element per token) and causal attention (4·L²·D·H / 2).
        double flops = 0;
        for (const auto& l : weights.layers)
          for (const Weight* w : {&l.q, &l.k, &l.v, &l.o, &l.gate, &l.up, &l.down})
            flops += 2.0 * static_cast<double>(w->out_features()) *
                     static_cast<double>(w->in_features()) * 4096;
        flops += 2.0 * static_cast<double>(weights.lm_head.out_features()) *
                 static_cast<double>(weights.lm_head.in_features());  // last token only
        for (const auto& lc : config.layers) {
          const double keys = lc.window > 0 ? std::min<double>(lc.window, 4096) : 4096;
          flops += 4.0 * 4096 * keys * static_cast<double>(config.head_dim * config.num_heads) /
                   (lc.window > 0 ? 1.0 : 2.0);
        }
        c.flops = flops;
        c.shape = {{"model", shape.name},
                   {"tokens", 4096},
                   {"tokens_per_s", 4096 * 1e6 / c.timing.median_us}};
        emit(c);
      }
    }
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "model bench: %s\n", e.what());
    return 1;
  }
}
