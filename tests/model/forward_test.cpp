// The forward pass on the CPU against transformers (tests/fixtures/models, written by
// scripts/make_fixtures.py): f32 logits of every prompt token and of 16 greedy decode steps,
// whole and chunked prefill, batched decode of sequences of different lengths, quantized
// checkpoints written by the converter against the forward pass on their dequantized weights,
// the KV-cache policy, and the errors.
#include "mlxn/model/runner.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "formats/ggml.h"
#include "io/io_test_util.h"
#include "mlxn/io/convert.h"
#include "mlxn/io/gguf.h"
#include "mlxn/model/tensor_names.h"
#include "mlxn/ops/weights.h"
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
using mlxn::test::compare_row;
using mlxn::test::Golden;
using mlxn::test::kGoldenModels;
using mlxn::test::load_golden;
using mlxn::test::RowError;
using mlxn::test::throws_error;

const Stream& S() { return mlxn::test::cpu_stream(); }

// The bar for the f32 pass: every logit within 1e-4 of its row's largest magnitude.
// Both sides compute in f32 from the same bf16-representable weights; they differ in summation
// order and in this library's f64 matmul accumulation, far below this.
constexpr double kF32Relative = 1e-4;

RunnerOptions f32_options(int64_t chunk = 512) {
  RunnerOptions o;
  o.activations = DType::f32;
  o.kv.k = o.kv.v = o.kv.boundary_type = KvType::f32;
  o.prefill_chunk = chunk;
  o.max_sequences = 2;
  o.max_context = 64;
  return o;
}

std::vector<float> host(const Buffer& b) { return b.to_host<float>(S()); }

struct Worst {
  double relative = 0;
  int64_t row = -1;
  void add(const RowError& e, int64_t r) {
    const double rel = e.max_abs / e.row_absmax;
    if (rel > relative) relative = rel, row = r;
  }
};

// Over every row of two [rows, vocab] sets of logits, each row against the second set's.
Worst worst_row(const std::vector<float>& got, const std::vector<float>& want, int64_t vocab) {
  Worst w;
  for (int64_t r = 0; r < static_cast<int64_t>(want.size()) / vocab; ++r)
    w.add(compare_row(&got[r * vocab], &want[r * vocab], vocab), r);
  return w;
}

// The same model with every quantized matrix dequantized to dense f32: what its quantized
// forward pass must compute.
LoadedModel dequantized(const LoadedModel& quantized) {
  LoadedModel d = quantized;
  const auto dense = [](mlxn::Weight& w) {
    if (!w.defined() || w.format() == mlxn::WeightFormat::dense) return;
    const Buffer out = Buffer::empty({w.out_features(), w.in_features()}, DType::f32, S());
    mlxn::dequantize(w, out, S());
    w = mlxn::Weight::dense(out);
  };
  dense(d.weights.embed);
  dense(d.weights.lm_head);
  for (auto& l : d.weights.layers)
    for (mlxn::Weight* w : {&l.q, &l.k, &l.v, &l.o, &l.gate, &l.up, &l.down}) dense(*w);
  return d;
}

// The prompt by prefill (every row), then the golden tokens one decode step at a time; every
// row against the f32 golden and every greedy step's argmax against the golden token.
Worst check_against_golden(const Golden& g, Runner& runner) {
  const std::vector<float> logits = mlxn::test::run_golden_sequence(runner, g);
  EXPECT_EQ(mlxn::test::greedy_mismatches(g, logits), 0);
  return worst_row(logits, g.logits, g.vocab);
}

TEST(ModelForward, F32MatchesTransformers) {
  for (const char* name : kGoldenModels) {
    SCOPED_TRACE(name);
    const Golden g = load_golden(name);
    LoadedModel m = mlxn::model::load_model(g.dir, S());
    Runner runner(m.config, m.weights, f32_options(), S());
    const Worst w = check_against_golden(g, runner);
    std::printf(
        "%-8s f32 whole prefill + decode: worst row error %.2e of the row's max |logit| (row "
        "%lld)\n",
        name, w.relative, static_cast<long long>(w.row));
    EXPECT_LE(w.relative, kF32Relative) << "row " << w.row;
  }
}

TEST(ModelForward, ChunkedPrefillMatchesTransformers) {
  // Chunks of 5 and 8: boundaries inside the sliding windows (8) and off every tile.
  for (int64_t chunk : {5, 8}) {
    for (const char* name : kGoldenModels) {
      SCOPED_TRACE(::testing::Message() << name << " chunk " << chunk);
      const Golden g = load_golden(name);
      LoadedModel m = mlxn::model::load_model(g.dir, S());
      Runner runner(m.config, m.weights, f32_options(chunk), S());
      const Worst w = check_against_golden(g, runner);
      EXPECT_LE(w.relative, kF32Relative) << "row " << w.row;
    }
  }
}

TEST(ModelForward, BatchedDecodeOfDifferentLengths) {
  for (const char* name : kGoldenModels) {
    SCOPED_TRACE(name);
    const Golden g = load_golden(name);
    LoadedModel m = mlxn::model::load_model(g.dir, S());
    Runner runner(m.config, m.weights, f32_options(7), S());
    // Sequence a holds the whole prompt, b its first 9 tokens; both then decode the golden
    // tokens that follow their own prefix, in one batch.
    const int a = runner.add_sequence(), b = runner.add_sequence();
    const int64_t la = g.prompt_len, lb = 9;
    runner.prefill(a, {g.tokens.data(), static_cast<size_t>(la)});
    const std::vector<float> last_b =
        host(runner.prefill(b, {g.tokens.data(), static_cast<size_t>(lb)}));
    Worst worst;
    worst.add(compare_row(last_b.data(), g.row(lb - 1), g.vocab), lb - 1);
    for (int64_t step = 0; step < 6; ++step) {
      const int seqs[] = {b, a};  // not in creation order
      const int32_t tokens[] = {g.tokens[lb + step], g.tokens[la + step]};
      const std::vector<float> logits = host(runner.decode(seqs, tokens));
      worst.add(compare_row(&logits[0], g.row(lb + step), g.vocab), lb + step);
      worst.add(compare_row(&logits[g.vocab], g.row(la + step), g.vocab), la + step);
    }
    EXPECT_EQ(runner.length(a), la + 6);
    EXPECT_EQ(runner.length(b), lb + 6);
    EXPECT_LE(worst.relative, kF32Relative) << "row " << worst.row;
  }
}

// bf16 activations and a bf16 cache, as a GPU runs the model: every logit within twice the
// largest deviation of transformers' own bf16 pass from its f32 pass, and the same greedy tokens
// (the fixtures' margins exceed three times that deviation on every greedy row).
TEST(ModelForward, Bf16WithinTransformersBf16Deviation) {
  for (const char* name : kGoldenModels) {
    SCOPED_TRACE(name);
    const Golden g = load_golden(name);
    LoadedModel m = mlxn::model::load_model(g.dir, S());
    RunnerOptions o = f32_options(8);
    o.activations = DType::bf16;
    o.kv.k = o.kv.v = o.kv.boundary_type = KvType::bf16;
    Runner runner(m.config, m.weights, o, S());
    const std::vector<float> logits = mlxn::test::run_golden_sequence(runner, g);
    const auto d = mlxn::test::bf16_deviation(g, logits);
    std::printf("%-8s bf16: max |logit - f32 golden| %.4f (transformers bf16: %.4f)\n", name,
                d.ours, d.transformers_bf16);
    EXPECT_LE(d.ours, 2 * d.transformers_bf16);
    EXPECT_EQ(mlxn::test::greedy_mismatches(g, logits), 0);
  }
}

// TurboQuant caches against the bf16 cache (f32 activations, so that only the cache differs):
// the KL divergence of next-token distributions and top-1 agreement over the decode rows and the
// rows of every prefill chunk after the first (chunks of 8: the first attends to itself, not to
// the cache). Printed per bit width; docs/model.md keeps the table.
TEST(ModelForward, TurboQuantCacheDivergence) {
  const KvType types[] = {KvType::tq8, KvType::tq6, KvType::tq5,
                          KvType::tq4, KvType::tq3, KvType::tq2};
  std::vector<double> mean_kl(std::size(types), 0.0), agreement(std::size(types), 0.0);
  for (const char* name : kGoldenModels) {
    const Golden g = load_golden(name);
    LoadedModel m = mlxn::model::load_model(g.dir, S());
    RunnerOptions o = f32_options(8);
    o.kv.k = o.kv.v = o.kv.boundary_type = KvType::bf16;
    Runner reference_runner(m.config, m.weights, o, S());
    const std::vector<float> reference = mlxn::test::run_golden_sequence(reference_runner, g);
    for (size_t i = 0; i < std::size(types); ++i) {
      o.kv.k = o.kv.v = o.kv.boundary_type = types[i];
      Runner runner(m.config, m.weights, o, S());
      const auto d =
          mlxn::test::divergence(reference, mlxn::test::run_golden_sequence(runner, g), g.vocab, 8);
      std::printf("%-8s %s: mean KL %.2e, max KL %.2e, top-1 agreement %.3f\n", name,
                  std::string(mlxn::kv_type_name(types[i])).c_str(), d.mean_kl, d.max_kl,
                  d.top1_agreement);
      EXPECT_TRUE(std::isfinite(d.max_kl) && d.mean_kl >= 0);
      mean_kl[i] += d.mean_kl / std::size(kGoldenModels);
      agreement[i] += d.top1_agreement / std::size(kGoldenModels);
    }
  }
  for (size_t i = 0; i < std::size(types); ++i) {
    std::printf("all models %s: mean KL %.2e, top-1 agreement %.3f\n",
                std::string(mlxn::kv_type_name(types[i])).c_str(), mean_kl[i], agreement[i]);
  }
  // Fewer bits, more error: each width's mean KL above the one two bits wider.
  EXPECT_LT(mean_kl[0], mean_kl[3]);  // tq8 < tq4
  EXPECT_LT(mean_kl[3], mean_kl[5]);  // tq4 < tq2
  // At 8 bits the cache error (design target: relative MSE below 1e-4) is far below the
  // fixtures' greedy margins: the argmax never moves.
  EXPECT_EQ(agreement[0], 1.0);
}

// A checkpoint converted to MLX affine 4 and 8 bit by the project's converter, loaded and run
// quantized, against the same model run on its dequantized weights (dense f32): the quantized
// matmul and embedding must compute exactly the dequantized model.
TEST(ModelForward, MlxQuantizedMatchesDequantized) {
  // "mixed_3_6" quantizes v_proj and down_proj of some layers at 6 bits: Q/K/V then differ in
  // format and run unstacked.
  for (auto [bits, recipe] : {std::pair{4, ""}, std::pair{8, ""}, std::pair{3, "mixed_3_6"}}) {
    for (const char* name : {"llama", "qwen3", "gemma3"}) {
      SCOPED_TRACE(::testing::Message() << name << " " << bits << "-bit " << recipe);
      const Golden g = load_golden(name);
      mlxn::test::TestDir dir;
      const std::string mlx_dir = dir.file("mlx");
      mlxn::io::ConvertOptions c;
      c.quantize = true;
      c.bits = bits;
      c.group_size = 64;
      c.recipe = recipe;
      c.show_progress = false;
      mlxn::io::convert_hf_to_mlx(g.dir, mlx_dir, c);
      LoadedModel q = mlxn::model::load_model(mlx_dir, S());
      ASSERT_EQ(q.weights.layers[0].q.format(), mlxn::WeightFormat::mlx_affine);
      ASSERT_EQ(q.weights.layers[0].q.bits(), bits);
      if (*recipe != '\0') {
        ASSERT_EQ(q.weights.layers[1].v.bits(), 6)
            << "the recipe's wider layer (mlx-lm: the last 1/8)";
      }
      const LoadedModel d = dequantized(q);

      Runner quantized(q.config, q.weights, f32_options(8), S());
      Runner dequantized(d.config, d.weights, f32_options(8), S());
      const std::vector<float> lq = mlxn::test::run_golden_sequence(quantized, g);
      const std::vector<float> ld = mlxn::test::run_golden_sequence(dequantized, g);
      // Both accumulate the same f32 weight values in f64: equal up to the f32 rounding of each
      // op's output, far below 1e-5 of a row's largest logit.
      const Worst w = worst_row(lq, ld, g.vocab);
      EXPECT_LE(w.relative, 1e-5) << "row " << w.row;
      // And against the unquantized model: the quantization's own effect, printed.
      const auto div = mlxn::test::divergence(g.logits, lq, g.vocab, 0);
      std::printf("%-8s MLX %d-bit g64 %s vs bf16 weights: mean KL %.2e, top-1 agreement %.3f\n",
                  name, bits, recipe, div.mean_kl, div.top1_agreement);
    }
  }
}

TEST(ModelForward, KvPolicyBoundaryLayersAndBudget) {
  const Golden g = load_golden("gemma3");  // layer 0 sliding (window 8), layer 1 global
  LoadedModel m = mlxn::model::load_model(g.dir, S());
  RunnerOptions o = f32_options();
  o.kv.k = KvType::tq4;
  o.kv.v = KvType::tq3;
  o.kv.boundary_layers = 1;
  o.kv.boundary_type = KvType::bf16;
  mlxn::KvCacheConfig c = mlxn::model::kv_cache_config(m.config, o, mlxn::Device::cpu());
  ASSERT_EQ(c.layers.size(), 2u);
  EXPECT_EQ(c.layers[0].k, KvType::bf16);  // first and last layer: the boundary type
  EXPECT_EQ(c.layers[1].v, KvType::bf16);
  EXPECT_EQ(c.layers[0].window, 8);
  EXPECT_EQ(c.layers[1].window, 0);
  EXPECT_EQ(c.num_pages, 2 * 4);  // two sequences of 64 tokens, pages of 16

  o.kv.boundary_layers = 0;
  c = mlxn::model::kv_cache_config(m.config, o, mlxn::Device::cpu());
  EXPECT_EQ(c.layers[0].k, KvType::tq4);
  EXPECT_EQ(c.layers[1].v, KvType::tq3);

  // A budget buys pages for the global layer after the ring of the sliding one; the cache then
  // takes no more than the budget.
  for (int64_t budget : {int64_t{40000}, int64_t{100000}}) {
    o.kv.memory_budget = budget;
    c = mlxn::model::kv_cache_config(m.config, o, mlxn::Device::cpu());
    const mlxn::KvCache cache(c, S());
    EXPECT_LE(cache.memory_bytes(), budget);
    // One more page would not fit.
    const int64_t page =
        16 * (mlxn::kv_vector_bytes(KvType::tq4, 64) + mlxn::kv_vector_bytes(KvType::tq3, 64));
    EXPECT_GT(cache.memory_bytes() + page + 4, budget);
  }
  o.kv.memory_budget = 1000;
  EXPECT_TRUE(throws_error([&] { mlxn::model::kv_cache_config(m.config, o, mlxn::Device::cpu()); },
                           "[model]", {"memory_budget 1000", "rings"}));
}

TEST(ModelForward, RunningOutOfPagesIsAnErrorThatChangesNothing) {
  const Golden g = load_golden("llama");
  LoadedModel m = mlxn::model::load_model(g.dir, S());
  RunnerOptions o = f32_options(8);
  // Two layers of f32 K and V, 1 kv-head of 64: 16 * 2 * 2 * 256 B = 16 KiB a page: one page,
  // 16 tokens.
  o.kv.memory_budget = 16384 + 100;
  Runner runner(m.config, m.weights, o, S());
  const int seq = runner.add_sequence();
  const std::vector<int32_t> prompt(g.tokens.begin(), g.tokens.begin() + 21);
  // 21 tokens: chunks of 8, 8 and 5; the third chunk needs a second page.
  EXPECT_TRUE(
      throws_error([&] { runner.prefill(seq, prompt); }, "[kv_cache]", {"out of cache pages"}));
  EXPECT_EQ(runner.length(seq), 16);  // the chunks that fit stay
  const std::vector<int32_t> rest(prompt.begin(), prompt.begin() + 16);
  runner.free_sequence(seq);
  const int again = runner.add_sequence();
  EXPECT_NO_THROW(runner.prefill(again, rest));
}

TEST(ModelForward, BadInputsAreErrors) {
  const Golden g = load_golden("qwen2");
  LoadedModel m = mlxn::model::load_model(g.dir, S());
  Runner runner(m.config, m.weights, f32_options(), S());
  const int seq = runner.add_sequence();
  const int32_t bad[] = {1, 256};
  EXPECT_TRUE(throws_error([&] { runner.prefill(seq, bad); }, "[model]",
                           {"prompt token 1 is 256", "[0, 256)"}));
  EXPECT_TRUE(throws_error([&] { runner.prefill(seq, {}); }, "[model]", {"at least one token"}));
  const std::vector<int32_t> long_prompt(65, 3);
  EXPECT_TRUE(throws_error([&] { runner.prefill(seq, long_prompt); }, "[model]",
                           {"65 tokens", "max_context 64"}));
  EXPECT_EQ(runner.length(seq), 0);
  const int32_t negative[] = {-1};
  const int seqs[] = {seq};
  EXPECT_TRUE(
      throws_error([&] { runner.decode(seqs, negative); }, "[model]", {"decode token 0 is -1"}));
  const int missing[] = {7};
  const int32_t ok[] = {3};
  EXPECT_THROW(runner.decode(missing, ok), mlxn::Error);
  EXPECT_TRUE(
      throws_error([&] { runner.decode(seqs, {}); }, "[model]", {"one token per sequence"}));

  RunnerOptions o = f32_options();
  o.prefill_chunk = 0;
  EXPECT_TRUE(
      throws_error([&] { Runner r(m.config, m.weights, o, S()); }, "[model]", {"prefill_chunk 0"}));
  o = f32_options();
  o.activations = DType::f16;
  EXPECT_TRUE(throws_error([&] { Runner r(m.config, m.weights, o, S()); }, "[model]",
                           {"activations must be bf16 or f32"}));
  o = f32_options();
  o.kv.boundary_layers = 2;  // of 2 layers: first 2 and last 2 overlap
  EXPECT_TRUE(throws_error([&] { Runner r(m.config, m.weights, o, S()); }, "[model]",
                           {"boundary_layers 2"}));
  EXPECT_TRUE(throws_error([&] { mlxn::model::load_model(g.dir + "/missing", S()); }, "[model]",
                           {"does not exist"}));
}

// ---- GGUF ----------------------------------------------------------------------------------

// The fixture as a GGUF file, written the way llama.cpp's converter writes these architectures:
// its metadata keys, matrices quantized by ggml's reference quantizer, 1-D tensors in f32, Gemma
// norms stored as 1 + w. Qwen2, Qwen3 and Gemma 3 use NeoX RoPE in llama.cpp, so Q and K rows
// keep their order (a llama GGUF would need llama.cpp's row permutation).
std::string write_gguf(const Golden& g, const std::string& arch, mlxn::WeightFormat format,
                       const mlxn::test::TestDir& dir) {
  const LoadedModel hf = mlxn::model::load_model(g.dir, S());
  const mlxn::model::ModelConfig& c = hf.config;
  mlxn::io::GgufWriter w;
  const auto u32 = [](int64_t v) { return static_cast<uint32_t>(v); };
  w.add("general.architecture", arch);
  w.add(arch + ".vocab_size", u32(c.vocab_size));
  w.add(arch + ".embedding_length", u32(c.hidden_size));
  w.add(arch + ".feed_forward_length", u32(c.intermediate_size));
  w.add(arch + ".block_count", u32(c.num_layers));
  w.add(arch + ".context_length", u32(c.max_position_embeddings));
  w.add(arch + ".attention.head_count", u32(c.num_heads));
  w.add(arch + ".attention.head_count_kv", u32(c.num_kv_heads));
  w.add(arch + ".attention.key_length", u32(c.head_dim));
  w.add(arch + ".attention.value_length", u32(c.head_dim));
  w.add(arch + ".attention.layer_norm_rms_epsilon", c.rms_norm_eps);
  const bool gemma = arch == "gemma3";
  // Gemma 3: layer 0 slides with the local theta, layer 1 is global with linear scaling.
  const mlxn::RopeConfig& global = c.layers[gemma ? 1 : 0].rope;
  w.add(arch + ".rope.freq_base", static_cast<float>(global.theta));
  if (gemma) {
    w.add(arch + ".attention.sliding_window", u32(c.layers[0].window));
    w.add(arch + ".attention.sliding_window_pattern", u32(2));
    w.add(arch + ".rope.freq_base_swa", static_cast<float>(c.layers[0].rope.theta));
    w.add(arch + ".rope.scaling.type", std::string("linear"));
    w.add(arch + ".rope.scaling.factor", static_cast<float>(global.factor));
    w.add(arch + ".final_logit_softcapping", c.final_logit_softcap);
  }
  const auto add = [&](mlxn::model::TensorRole role, int64_t layer) {
    const std::string name = mlxn::model::gguf_tensor_name(c, role, layer);
    if (const mlxn::Weight* m = hf.weights.weight(role, layer)) {
      const int64_t n = m->out_features(), k = m->in_features();
      Buffer dense = Buffer::empty({n, k}, DType::f32, S());
      mlxn::dequantize(*m, dense, S());
      const int64_t row_bytes =
          k / mlxn::ggml_block_elements(format) * mlxn::ggml_block_bytes(format);
      std::vector<std::byte> bytes(static_cast<size_t>(n * row_bytes));
      for (int64_t r = 0; r < n; ++r) {
        mlxn::formats::quantize_row(format, dense.data_as<float>() + r * k, k,
                                    reinterpret_cast<uint8_t*>(bytes.data()) + r * row_bytes);
      }
      w.add_tensor(name,
                   format == mlxn::WeightFormat::q8_0 ? mlxn::GgmlType::q8_0 : mlxn::GgmlType::q4_0,
                   {k, n}, bytes);
      return;
    }
    const Buffer* b = hf.weights.buffer(role, layer);
    ASSERT_NE(b, nullptr) << name;
    Buffer values = Buffer::empty({b->numel()}, DType::f32, S());
    mlxn::cast(*b, values, S());
    std::vector<float> v = values.to_host<float>(S());
    const bool norm = name.find("norm") != std::string::npos;
    if (gemma && norm) {
      for (float& x : v) x += 1.0f;  // llama.cpp's Gemma converter stores 1 + w
    }
    w.add_tensor(name, mlxn::GgmlType::f32, {b->numel()}, std::as_bytes(std::span(v)));
  };
  for (auto role : mlxn::model::global_tensor_roles(c)) add(role, -1);
  for (int64_t l = 0; l < c.num_layers; ++l)
    for (auto role : mlxn::model::layer_tensor_roles(c)) add(role, l);
  const std::string path = dir.file(arch + ".gguf");
  w.write(path);
  return path;
}

// The fixtures converted to GGUF Q8_0 and Q4_0: run quantized, they compute exactly the model of
// their dequantized weights; and the Q8_0 model stays close to transformers' logits (a wrong
// window, RoPE or norm offset read from the metadata would not: 4-bit noise alone gives these
// random models a mean KL of 0.36-0.45, MLX 8-bit 2e-3).
TEST(ModelForward, GgufQuantizedMatchesDequantized) {
  for (const char* name : {"qwen2", "qwen3", "gemma3"}) {
    for (mlxn::WeightFormat format : {mlxn::WeightFormat::q8_0, mlxn::WeightFormat::q4_0}) {
      SCOPED_TRACE(::testing::Message() << name << " " << mlxn::weight_format_name(format));
      const Golden g = load_golden(name);
      mlxn::test::TestDir dir;
      const std::string path = write_gguf(g, name, format, dir);
      const mlxn::io::GgufFile file = mlxn::io::GgufFile::open(path);
      LoadedModel q{mlxn::model::from_gguf(file), {}};
      q.weights = mlxn::model::load_gguf_weights(q.config, file, S());
      ASSERT_EQ(q.weights.layers[0].q.format(), format);
      // What llama.cpp's keys say must be what config.json said (the random Gemma fixture's
      // logits hardly depend on its attention, so its windows and RoPE are checked here).
      const mlxn::model::ModelConfig hf = mlxn::model::load_model(g.dir, S()).config;
      for (size_t l = 0; l < hf.layers.size(); ++l) {
        EXPECT_EQ(q.config.layers[l].window, hf.layers[l].window) << "layer " << l;
        EXPECT_EQ(q.config.layers[l].rope.theta, hf.layers[l].rope.theta) << "layer " << l;
        EXPECT_EQ(q.config.layers[l].rope.scaling, hf.layers[l].rope.scaling) << "layer " << l;
        EXPECT_EQ(q.config.layers[l].rope.factor, hf.layers[l].rope.factor) << "layer " << l;
        EXPECT_EQ(q.config.layers[l].rope.pairing, hf.layers[l].rope.pairing) << "layer " << l;
      }
      EXPECT_EQ(q.config.attention_scale, hf.attention_scale);
      EXPECT_EQ(q.config.embedding_scale, hf.embedding_scale);
      EXPECT_EQ(q.config.final_logit_softcap, hf.final_logit_softcap);
      EXPECT_EQ(q.config.qk_norm, hf.qk_norm);
      EXPECT_EQ(q.config.qkv_bias, hf.qkv_bias);
      EXPECT_EQ(q.config.four_norms, hf.four_norms);
      EXPECT_EQ(q.config.activation, hf.activation);
      EXPECT_EQ(q.config.tie_word_embeddings, hf.tie_word_embeddings);
      const LoadedModel d = dequantized(q);
      Runner quantized(q.config, q.weights, f32_options(8), S());
      Runner dequantized(d.config, d.weights, f32_options(8), S());
      const std::vector<float> lq = mlxn::test::run_golden_sequence(quantized, g);
      const std::vector<float> ld = mlxn::test::run_golden_sequence(dequantized, g);
      const Worst w = worst_row(lq, ld, g.vocab);
      EXPECT_LE(w.relative, 1e-5) << "row " << w.row;
      const auto div = mlxn::test::divergence(g.logits, lq, g.vocab, 0);
      std::printf("%-8s GGUF %s vs bf16 weights: mean KL %.2e, top-1 agreement %.3f\n", name,
                  std::string(mlxn::weight_format_name(format)).c_str(), div.mean_kl,
                  div.top1_agreement);
      if (format == mlxn::WeightFormat::q8_0) {
        EXPECT_LT(div.mean_kl, 0.05);
      }
    }
  }
}

}  // namespace
