// The forward pass on the GPU against transformers (tests/fixtures/models): bf16 activations and
// cache, chunked prefill, decode steps replayed from CUDA graphs; graph replay equal to eager
// launches bit for bit; batched decode of sequences of different lengths; TurboQuant and fp8
// caches; the options a GPU refuses.
#include <gtest/gtest.h>

#include <cstdio>
#include <string>
#include <vector>

#include "model/golden.h"
#include "support/support.h"

namespace {

using mlxn::Buffer;
using mlxn::DType;
using mlxn::KvType;
using mlxn::Stream;
using mlxn::model::LoadedModel;
using mlxn::model::Runner;
using mlxn::model::RunnerOptions;
using mlxn::test::Golden;
using mlxn::test::kGoldenModels;
using mlxn::test::load_golden;

RunnerOptions gpu_options(KvType kv = KvType::bf16, bool graphs = true) {
  RunnerOptions o;
  o.activations = DType::bf16;
  o.kv.k = o.kv.v = o.kv.boundary_type = kv;
  o.prefill_chunk = 8;  // three chunks for the 21-token prompts, boundaries inside the windows
  o.max_sequences = 2;
  o.max_context = 64;
  o.decode_graphs = graphs;
  return o;
}

// As the CPU bf16 test holds the CPU: within twice transformers' own bf16 deviation from its f32
// pass, and the same greedy tokens (the fixtures' margins exceed three times that deviation).
TEST(GpuModel, Bf16MatchesTransformersWithGraphReplay) {
  MLXN_REQUIRE_CUDA();
  const Stream gpu(mlxn::Device::cuda(0));
  for (const char* name : kGoldenModels) {
    SCOPED_TRACE(name);
    const Golden g = load_golden(name);
    LoadedModel m = mlxn::model::load_model(g.dir, gpu);
    Runner runner(m.config, m.weights, gpu_options(), gpu);
    const std::vector<float> logits = mlxn::test::run_golden_sequence(runner, g);
    const auto d = mlxn::test::bf16_deviation(g, logits);
    std::printf(
        "%-8s gpu bf16: max |logit - f32 golden| %.4f (transformers bf16: %.4f), %lld graph "
        "replays\n",
        name, d.ours, d.transformers_bf16, static_cast<long long>(runner.graph_replays()));
    EXPECT_LE(d.ours, 2 * d.transformers_bf16);
    EXPECT_EQ(mlxn::test::greedy_mismatches(g, logits), 0);
    EXPECT_EQ(runner.graph_replays(), g.rows() - g.prompt_len);  // every decode step
  }
}

// A replayed graph runs the same kernels on the same inputs as eager launches: the same bits.
TEST(GpuModel, GraphReplayEqualsEagerLaunches) {
  MLXN_REQUIRE_CUDA();
  const Stream gpu(mlxn::Device::cuda(0));
  for (const char* name : {"mistral", "gemma3"}) {  // sliding-window rings in the graph's tables
    SCOPED_TRACE(name);
    const Golden g = load_golden(name);
    LoadedModel m = mlxn::model::load_model(g.dir, gpu);
    Runner eager(m.config, m.weights, gpu_options(KvType::bf16, false), gpu);
    Runner graphed(m.config, m.weights, gpu_options(KvType::bf16, true), gpu);
    const std::vector<float> a = mlxn::test::run_golden_sequence(eager, g);
    const std::vector<float> b = mlxn::test::run_golden_sequence(graphed, g);
    EXPECT_EQ(eager.graph_replays(), 0);
    EXPECT_GT(graphed.graph_replays(), 0);
    EXPECT_EQ(a, b);
  }
}

// Two sequences of different lengths in one graph-replayed batch: each row within the bf16 bound
// of the golden row at its own position, and each greedy choice the golden token.
TEST(GpuModel, BatchedDecodeOfDifferentLengths) {
  MLXN_REQUIRE_CUDA();
  const Stream gpu(mlxn::Device::cuda(0));
  for (const char* name : {"llama", "gemma3"}) {
    SCOPED_TRACE(name);
    const Golden g = load_golden(name);
    const double bound = 2 * g.bf16_deviation;
    LoadedModel m = mlxn::model::load_model(g.dir, gpu);
    Runner runner(m.config, m.weights, gpu_options(), gpu);
    const int64_t la = g.prompt_len, lb = 9;
    const int a = runner.add_sequence(), b = runner.add_sequence();
    runner.prefill(a, {g.tokens.data(), static_cast<size_t>(la)});
    runner.prefill(b, {g.tokens.data(), static_cast<size_t>(lb)});
    double worst = 0;
    for (int64_t step = 0; step < 6; ++step) {
      const int seqs[] = {b, a};
      const int32_t tokens[] = {g.tokens[lb + step], g.tokens[la + step]};
      const std::vector<float> both = runner.decode(seqs, tokens).to_host<float>(gpu);
      for (int i = 0; i < 2; ++i) {
        const int64_t row = (i == 0 ? lb : la) + step;
        const auto e = mlxn::test::compare_row(&both[i * g.vocab], g.row(row), g.vocab);
        worst = std::max(worst, e.max_abs);
        if (row >= g.prompt_len - 1 && row + 1 < g.rows()) {
          EXPECT_EQ(e.argmax, g.tokens[row + 1]) << "row " << row;
        }
      }
    }
    EXPECT_LE(worst, bound);
    EXPECT_EQ(runner.graph_replays(), 6);
  }
}

// Compressed caches on the GPU against the GPU's bf16 cache: divergence printed; at 8 bits the
// greedy tokens stay the golden ones. fp8 calibrates its scales in the first prefill
// chunk, before any decode graph is captured.
TEST(GpuModel, CompressedCaches) {
  MLXN_REQUIRE_CUDA();
  const Stream gpu(mlxn::Device::cuda(0));
  for (const char* name : kGoldenModels) {
    const Golden g = load_golden(name);
    LoadedModel m = mlxn::model::load_model(g.dir, gpu);
    Runner reference_runner(m.config, m.weights, gpu_options(), gpu);
    const std::vector<float> reference = mlxn::test::run_golden_sequence(reference_runner, g);
    for (KvType t : {KvType::fp8, KvType::tq8, KvType::tq4, KvType::tq3}) {
      SCOPED_TRACE(::testing::Message() << name << " " << mlxn::kv_type_name(t));
      Runner runner(m.config, m.weights, gpu_options(t), gpu);
      const std::vector<float> logits = mlxn::test::run_golden_sequence(runner, g);
      const auto d = mlxn::test::divergence(reference, logits, g.vocab, 8);
      std::printf("%-8s gpu %s: mean KL %.2e, max KL %.2e, top-1 agreement %.3f\n", name,
                  std::string(mlxn::kv_type_name(t)).c_str(), d.mean_kl, d.max_kl,
                  d.top1_agreement);
      EXPECT_TRUE(std::isfinite(d.max_kl));
      if (t == KvType::tq8) {
        // The greedy rows, whose margins the fixtures guarantee above the bf16 noise (other rows
        // may flip between two bf16 runs on noise alone).
        EXPECT_EQ(mlxn::test::greedy_mismatches(g, logits), 0);
      }
      EXPECT_EQ(runner.graph_replays(), g.rows() - g.prompt_len);
    }
  }
}

TEST(GpuModel, F32IsRefusedOnTheGpu) {
  MLXN_REQUIRE_CUDA();
  const Stream gpu(mlxn::Device::cuda(0));
  const Golden g = load_golden("qwen3");
  LoadedModel m = mlxn::model::load_model(g.dir, gpu);
  RunnerOptions o = gpu_options();
  o.activations = DType::f32;
  EXPECT_TRUE(mlxn::test::throws_error([&] { Runner r(m.config, m.weights, o, gpu); }, "[model]",
                                       {"f32 activations run on the CPU only"}));
  o = gpu_options(KvType::f32);
  EXPECT_TRUE(mlxn::test::throws_error([&] { Runner r(m.config, m.weights, o, gpu); }, "[model]",
                                       {"f32 KV cache runs on the CPU only"}));
  EXPECT_TRUE(
      mlxn::test::throws_error([&] { mlxn::KvStore::allocate(KvType::f32, 1, 1, 16, 64, gpu); },
                               "[kv_cache]", {"f32 cache lives on the CPU only"}));
  // Weights on the CPU, stream on the GPU.
  LoadedModel host = mlxn::model::load_model(g.dir, mlxn::test::cpu_stream());
  EXPECT_TRUE(
      mlxn::test::throws_error([&] { Runner r(host.config, host.weights, gpu_options(), gpu); },
                               "[model]", {"weights are on cpu"}));
}

}  // namespace
