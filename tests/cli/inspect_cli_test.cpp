// `mlxn inspect`'s KV-cache section: bytes per token for each cache type on the full-attention
// layers and the fixed ring of the sliding-window layers, as the cache sizes itself.
#include <gtest/gtest.h>

#include <string>

#include "inspect_command.h"
#include "mlxn/io/hf_config.h"
#include "mlxn/model/config.h"

namespace {

std::string fixture(const char* model) {
  return std::string(MLXN_TEST_FIXTURES) + "/models/" + model;
}

mlxn::model::ModelConfig config_of(const char* model) {
  return mlxn::model::from_hf_config(mlxn::io::HfConfig::load(fixture(model) + "/config.json"));
}

void expect_lines(const std::string& report, std::initializer_list<const char*> lines) {
  for (const char* line : lines) {
    EXPECT_NE(report.find(line), std::string::npos) << "'" << line << "' in\n" << report;
  }
}

TEST(InspectCli, KvCacheBytesPerToken) {
  // llama fixture: 2 full-attention layers, 1 kv-head of 64. Per token and layer, K and V of
  // 64 values (bf16 2 bytes, fp8 1, tqB B/8 plus a 2-byte scale), and per 16-token page one
  // 4-byte page-table entry.
  const std::string report = mlxn::cli::inspect_report(fixture("llama"));
  expect_lines(report, {"KV cache bytes per token (K and V, pages of 16 tokens, 2 layers of full "
                        "attention):",
                        "  bf16        512.25 B/token (512.25 KiB per 1K tokens)",
                        "  fp8         256.25 B/token", "  tq8         264.25 B/token",
                        "  tq6         200.25 B/token", "  tq5         168.25 B/token",
                        "  tq4         136.25 B/token", "  tq3         104.25 B/token",
                        "  tq2          72.25 B/token"});
  EXPECT_EQ(report.find("sliding window"), std::string::npos) << report;
  EXPECT_EQ(mlxn::cli::kv_cache_report(config_of("llama")).find(" ring "), std::string::npos);
}

TEST(InspectCli, KvCacheOfSlidingWindowLayers) {
  // gemma3 fixture: one global layer and one sliding layer of window 8, whose ring is one page
  // per sequence plus the spare page the cache keeps (2 pages of 16 slots, K and V, 1 head of 64,
  // and their 2 page-table entries).
  const std::string gemma = mlxn::cli::kv_cache_report(config_of("gemma3"));
  expect_lines(gemma, {"1 layer of full attention; 1 layer of sliding window (up to 8 tokens): a "
                       "fixed ring per sequence",
                       "  bf16        256.25 B/token (256.25 KiB per 1K tokens)   ring 8.01 KiB "
                       "per sequence"});
  // mistral fixture: every layer slides, so nothing grows with the context.
  const std::string mistral = mlxn::cli::kv_cache_report(config_of("mistral"));
  expect_lines(mistral,
               {"(K and V, pages of 16 tokens; 2 layers of sliding window (up to 8 tokens)",
                "  bf16     0 B/token   ring"});
}

TEST(InspectCli, KvCacheOfAnUnsupportedHeadDim) {
  mlxn::model::ModelConfig c = config_of("llama");
  c.head_dim = 96;
  for (auto& l : c.layers) l.rope.head_dim = 96;
  const std::string report = mlxn::cli::kv_cache_report(c);
  expect_lines(report, {"KV cache: not available for this model: ", "head_dim 96"});
}

}  // namespace
