// `mlxn bench` and the synthetic models it runs: options, parser errors, a CPU run of the tiny
// preset as JSON and of a model directory as a table.
#include <gtest/gtest.h>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "bench_command.h"
#include "cli/cli_test_util.h"
#include "mlxn/model/synthetic.h"
#include "mlxn/ops/weights.h"
#include "support/support.h"

namespace {

using mlxn::cli::BenchArgs;
using mlxn::test::CapturedFile;
using mlxn::test::throws_error;

BenchArgs parse(const std::string& line) {
  return mlxn::test::parse_command<BenchArgs>(mlxn::cli::add_bench_command, line);
}

TEST(BenchCli, ParsesOptions) {
  const BenchArgs a = parse(
      "bench --preset tiny --device cpu --prompt-tokens 64 --decode-tokens 8 --batch 4 --kv tq4 "
      "--json");
  EXPECT_EQ(a.preset, "tiny");
  EXPECT_EQ(a.model, "");
  EXPECT_EQ(a.device, "cpu");
  EXPECT_EQ(a.prompt_tokens, 64);
  EXPECT_EQ(a.decode_tokens, 8);
  EXPECT_EQ(a.batch, 4);
  EXPECT_EQ(a.kv, "tq4");
  EXPECT_TRUE(a.json);
  const BenchArgs d = parse("bench --model some/dir");
  EXPECT_EQ(d.model, "some/dir");
  EXPECT_EQ(d.prompt_tokens, 128);
  EXPECT_EQ(d.decode_tokens, 32);
  EXPECT_EQ(d.batch, 1);
  EXPECT_EQ(d.kv, "bf16");
  EXPECT_EQ(d.device, "");
  EXPECT_FALSE(d.json);
}

TEST(BenchCli, ArgumentErrors) {
  for (const char* bad :
       {"bench --model m --preset tiny", "bench --preset llama9", "bench --batch 0",
        "bench --prompt-tokens 0", "bench --decode-tokens -1", "bench --kv q4",
        "bench --device gpu", "bench --frobnicate", "bench extra"}) {
    EXPECT_THROW(parse(bad), CLI::ParseError) << bad;
  }
  EXPECT_TRUE(throws_error([] { (void)mlxn::cli::measure_bench(BenchArgs()); }, "[bench]",
                           {"--model PATH or --preset NAME", "tiny", "llama3_8b"}));
}

TEST(BenchCli, SyntheticPresets) {
  const std::vector<std::string> names = mlxn::model::synthetic_model_names();
  EXPECT_EQ(names, (std::vector<std::string>{"tiny", "llama3_8b", "qwen3_8b", "gemma3_12b"}));
  for (const std::string& name : names) {
    const mlxn::model::ModelConfig c = mlxn::model::synthetic_config(name);
    EXPECT_EQ(c.source, name + ".json");
  }
  const mlxn::model::ModelConfig gemma = mlxn::model::synthetic_config("gemma3_12b");
  EXPECT_EQ(gemma.arch, mlxn::model::Architecture::gemma3);
  EXPECT_EQ(gemma.num_layers, 48);
  EXPECT_TRUE(throws_error([] { (void)mlxn::model::synthetic_config("huge"); }, "[model]",
                           {"'huge'", "tiny, llama3_8b, qwen3_8b, gemma3_12b"}));

  const mlxn::model::ModelConfig tiny = mlxn::model::synthetic_config("tiny");
  EXPECT_EQ(tiny.hidden_size, 256);
  EXPECT_EQ(tiny.num_layers, 4);
  const mlxn::Stream& s = mlxn::test::cpu_stream();
  const mlxn::model::ModelWeights w = mlxn::model::random_mlx_weights(tiny, 4, 64, s);
  ASSERT_EQ(static_cast<int64_t>(w.layers.size()), tiny.num_layers);
  for (const mlxn::Weight* m : {&w.embed, &w.lm_head, &w.layers[3].q, &w.layers[3].down}) {
    EXPECT_EQ(m->format(), mlxn::WeightFormat::mlx_affine);
    EXPECT_EQ(m->bits(), 4);
    EXPECT_EQ(m->group_size(), 64);
  }
  EXPECT_EQ(w.layers[0].down.in_features(), tiny.intermediate_size);
  EXPECT_EQ(w.embed.out_features(), tiny.vocab_size);
  // Deterministic: the same call gives the same bits.
  const mlxn::model::ModelWeights again = mlxn::model::random_mlx_weights(tiny, 4, 64, s);
  EXPECT_TRUE(mlxn::test::same_bits(w.layers[2].up.data(), again.layers[2].up.data(), s, s));
  // 3 bits, group 128 divides 256 and 768 as well; 48 does not divide 256.
  EXPECT_EQ(mlxn::model::random_mlx_weights(tiny, 3, 128, s).layers[0].o.bits(), 3);
  EXPECT_TRUE(throws_error([&] { (void)mlxn::model::random_mlx_weights(tiny, 4, 48, s); },
                           "[model]", {"group_size 48", "256"}));
}

TEST(BenchCli, TinyPresetOnTheCpuAsJson) {
  BenchArgs a;
  a.preset = "tiny";
  a.device = "cpu";
  a.prompt_tokens = 16;
  a.decode_tokens = 4;
  a.batch = 2;
  a.kv = "tq4";
  a.json = true;
  CapturedFile out;
  EXPECT_EQ(mlxn::cli::run_bench(a, out.get()), 0);
  const std::string text = out.text();
  ASSERT_FALSE(text.empty());
  EXPECT_EQ(text.find('\n'), text.size() - 1) << "one line: " << text;
  const nlohmann::json j = nlohmann::json::parse(text);
  for (const char* key : {"model", "architecture", "layers", "hidden", "vocab", "device", "kv",
                          "batch", "prompt_tokens", "decode_tokens", "prefill_ms",
                          "prefill_tokens_per_s", "decode_ms_per_step", "decode_tokens_per_s",
                          "weight_bytes", "kv_cache_bytes", "kv_bytes_per_token"}) {
    EXPECT_TRUE(j.contains(key)) << key << " in " << text;
  }
  EXPECT_EQ(j["model"], "preset tiny");
  EXPECT_EQ(j["architecture"], "llama");
  EXPECT_EQ(j["device"], "cpu");
  EXPECT_EQ(j["kv"], "tq4");
  EXPECT_EQ(j["batch"], 2);
  EXPECT_EQ(j["prompt_tokens"], 16);
  EXPECT_EQ(j["decode_tokens"], 4);
  EXPECT_GT(j["prefill_tokens_per_s"].get<double>(), 0);
  EXPECT_GT(j["decode_tokens_per_s"].get<double>(), 0);
  const double from_ms = 2 * 4 / (j["decode_ms_per_step"].get<double>() * 4 / 1e3);
  EXPECT_NEAR(j["decode_tokens_per_s"].get<double>(), from_ms, 1e-9 * from_ms);
  EXPECT_GT(j["weight_bytes"].get<int64_t>(), 0);
  EXPECT_GT(j["kv_cache_bytes"].get<int64_t>(), 0);
  // tq4 K and V of 4 layers, 2 kv-heads of 64 (32 code bytes + a 2-byte scale each), and a
  // page-table entry per 16 tokens.
  EXPECT_DOUBLE_EQ(j["kv_bytes_per_token"].get<double>(), 4 * 2 * 2 * 34 + 4.0 / 16);
}

TEST(BenchCli, ModelDirectoryAsATable) {
  mlxn::test::TestDir dir;
  mlxn::test::write_tiny_model(dir.path());
  BenchArgs a;
  a.model = dir.path().string();
  a.device = "cpu";
  a.prompt_tokens = 8;
  a.decode_tokens = 2;
  CapturedFile out;
  EXPECT_EQ(mlxn::cli::run_bench(a, out.get()), 0);
  const std::string text = out.text();
  for (const char* part :
       {"llama, 2 layers, hidden 128, vocab 256", "cpu, KV cache bf16", "prefill",
        "8 tokens in one chunk", "decode", "2 steps of batch 1, greedy", "ms/step", "KV cache: "}) {
    EXPECT_NE(text.find(part), std::string::npos) << part << " in\n" << text;
  }
}

}  // namespace
