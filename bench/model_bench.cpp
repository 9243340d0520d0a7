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
#include "mlxn/model/synthetic.h"

using namespace mlxn;
using namespace mlxn::bench;

namespace {

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
    for (const std::string& shape_name : model::synthetic_model_names()) {
      if (!decode_cases.contains(shape_name)) continue;  // the CPU-sized shapes
      if (!only.empty() && shape_name.find(only) == std::string::npos &&
          only.find(shape_name) == std::string::npos)
        continue;
      const model::ModelConfig config = model::synthetic_config(shape_name);
      const model::ModelWeights weights = model::random_mlx_weights(config, 4, 64, s);
      s.synchronize();
      std::fprintf(stderr, "%s: %.2f GB of MLX 4-bit weights\n", shape_name.c_str(),
                   static_cast<double>(weights.bytes()) / 1e9);

      for (const DecodeCase& dc : decode_cases.at(shape_name)) {
        const std::string name = "model_" + shape_name + "_decode_b" + std::to_string(dc.batch) +
                                 "_ctx" + std::to_string(dc.context / 1024) + "k_" +
                                 std::string(kv_type_name(dc.kv)) + (dc.graphs ? "" : "_eager");
        if (!only.empty() && name.find(only) == std::string::npos && only != shape_name) continue;
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
        c.shape = {{"model", shape_name},
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

      const std::string prefill_name = "model_" + shape_name + "_prefill_4k";
      if (only.empty() || prefill_name.find(only) != std::string::npos || only == shape_name) {
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
        c.shape = {{"model", shape_name},
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
