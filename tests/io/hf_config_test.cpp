// config.json: the model dtype and MLX's quantization block (global, per-module overrides,
// false), and bad values.
#include "mlxn/io/hf_config.h"

#include <gtest/gtest.h>

#include "io/io_test_util.h"
#include "support/support.h"

namespace {

using mlxn::io::HfConfig;
using mlxn::io::QuantSpec;
using mlxn::test::throws_error;

HfConfig parse(const std::string& text) { return HfConfig::parse(text, "config.json"); }

TEST(HfConfig, NoQuantization) {
  const HfConfig c = parse(R"({"model_type": "llama", "torch_dtype": "bfloat16"})");
  EXPECT_FALSE(c.quantization().has_value());
  EXPECT_EQ(c.torch_dtype(), "bfloat16");
  EXPECT_EQ(c.model_dtype(), mlxn::DType::bf16);
  EXPECT_EQ(c.text(), R"({"model_type": "llama", "torch_dtype": "bfloat16"})");
  EXPECT_EQ(c.source(), "config.json");
  EXPECT_FALSE(parse(R"({"quantization": null})").quantization().has_value());
}

TEST(HfConfig, DtypeKeys) {
  EXPECT_EQ(parse(R"({"dtype": "float16"})").model_dtype(), mlxn::DType::f16);
  EXPECT_EQ(parse(R"({"torch_dtype": "float32", "dtype": "float16"})").model_dtype(),
            mlxn::DType::f32);
  EXPECT_EQ(parse(R"({"text_config": {"dtype": "bfloat16"}})").torch_dtype(), "bfloat16");
  EXPECT_EQ(parse(R"({"torch_dtype": "float8_e4m3fn"})").torch_dtype(), "float8_e4m3fn");
  EXPECT_FALSE(parse(R"({"torch_dtype": "float8_e4m3fn"})").model_dtype().has_value());
  EXPECT_FALSE(parse(R"({})").torch_dtype().has_value());
}

TEST(HfConfig, GlobalAndOverrides) {
  const HfConfig c = parse(R"({
    "quantization": {
      "group_size": 64, "bits": 4, "mode": "affine",
      "model.layers.0.mlp.down_proj": {"group_size": 64, "bits": 6, "mode": "affine"},
      "lm_head": {"bits": 8},
      "model.embed_tokens": false,
      "model.layers.1.self_attn.v_proj": true,
      "informational": "ignored"
    },
    "quantization_config": {"group_size": 32, "bits": 2}})");
  const auto q = c.quantization();
  ASSERT_TRUE(q.has_value());
  EXPECT_EQ(q->global(), (QuantSpec{64, 4, "affine"}));
  EXPECT_EQ(q->overrides().size(), 4u);
  EXPECT_EQ(q->for_module("model.layers.0.mlp.down_proj"), (QuantSpec{64, 6, "affine"}));
  EXPECT_EQ(q->for_module("lm_head"), (QuantSpec{64, 8, "affine"}));  // group from the global
  EXPECT_FALSE(q->for_module("model.embed_tokens").has_value());
  EXPECT_EQ(q->for_module("model.layers.1.self_attn.v_proj"), (QuantSpec{64, 4, "affine"}));
  EXPECT_EQ(q->for_module("model.layers.5.mlp.up_proj"), (QuantSpec{64, 4, "affine"}));
}

TEST(HfConfig, QuantizationConfigWhenQuantizationIsAbsent) {
  const auto q = parse(R"({"quantization_config": {"group_size": 128, "bits": 3}})").quantization();
  ASSERT_TRUE(q.has_value());
  EXPECT_EQ(q->global(), (QuantSpec{128, 3, "affine"}));
  const auto nested =
      parse(R"({"text_config": {"quantization": {"group_size": 32, "bits": 5}}})").quantization();
  ASSERT_TRUE(nested.has_value());
  EXPECT_EQ(nested->global(), (QuantSpec{32, 5, "affine"}));
}

TEST(HfConfig, OtherModesAreErrorsWhenUsed) {
  const auto q = parse(R"({"quantization": {"group_size": 32, "bits": 4, "mode": "mxfp4",
                           "lm_head": {"group_size": 64, "bits": 8, "mode": "affine"}}})")
                     .quantization();
  ASSERT_TRUE(q.has_value());
  EXPECT_EQ(q->global().mode, "mxfp4");
  EXPECT_EQ(q->for_module("lm_head"), (QuantSpec{64, 8, "affine"}));
  EXPECT_TRUE(throws_error([&] { (void)q->for_module("model.layers.0.mlp.up_proj"); }, "[config]",
                           {"model.layers.0.mlp.up_proj", "'mxfp4'", "supported: affine"}));
}

TEST(HfConfig, BadQuantizationValues) {
  struct Bad {
    const char* block;
    std::vector<std::string> parts;
  };
  const std::vector<Bad> bads = {
      {R"({"group_size": 64, "bits": 7})", {"bits 7", "2, 3, 4, 5, 6, 8"}},
      {R"({"group_size": 16, "bits": 4})", {"group_size 16", "32, 64, 128"}},
      {R"({"group_size": 64, "bits": 4.5})", {"bits", "not an integer"}},
      {R"({"group_size": 64, "bits": "4"})", {"bits", "not an integer"}},
      {R"({"group_size": 64})", {"no 'bits'"}},
      {R"({"bits": 4})", {"no 'group_size'"}},
      {R"({"group_size": 64, "bits": 4, "mode": 1})", {"mode is not a string"}},
      {R"({"group_size": 64, "bits": 4, "lm_head": {"bits": 9}})", {"'lm_head'", "bits 9"}},
      {R"({"group_size": 64, "bits": 4, "lm_head": {"group_size": 48}})",
       {"'lm_head'", "group_size 48"}},
      {R"([64, 4])", {"not an object"}},
      {R"({"quant_method": "fp8", "weight_block_size": [128, 128]})", {"'fp8'", "not MLX"}},
  };
  for (const Bad& bad : bads) {
    // Reading the rest of the config still works; asking for the block raises the problem.
    const HfConfig c =
        parse(std::string(R"({"torch_dtype": "bfloat16", "quantization": )") + bad.block + "}");
    EXPECT_EQ(c.model_dtype(), mlxn::DType::bf16);
    const auto message = mlxn::test::error_of([&] { (void)c.quantization(); });
    EXPECT_TRUE(message.starts_with("[config] config.json: quantization"))
        << bad.block << ": " << message;
    for (const std::string& part : bad.parts) {
      EXPECT_NE(message.find(part), std::string::npos)
          << bad.block << ": \"" << message << "\" lacks \"" << part << "\"";
    }
  }
}

TEST(HfConfig, MalformedFilesAreErrors) {
  EXPECT_TRUE(throws_error([] { (void)parse(R"({"a": 1,})"); }, "[config] config.json",
                           {"not valid JSON"}));
  EXPECT_TRUE(
      throws_error([] { (void)parse(R"([1])"); }, "[config] config.json", {"not a JSON object"}));
  EXPECT_TRUE(
      throws_error([] { (void)parse("{\"a\": \"\xfe\"}"); }, "[config] config.json", {"UTF-8"}));
  EXPECT_TRUE(throws_error([] { (void)parse(R"({"bits": 4, "bits": 8})"); }, "[config] config.json",
                           {"'bits'", "more than once"}));
  mlxn::test::TestDir dir;
  EXPECT_TRUE(throws_error([&] { (void)HfConfig::load(dir.file("config.json")); }, "[config]",
                           {"config.json", "cannot open"}));
  mlxn::test::write_text(dir.file("config.json"),
                         R"({"quantization": {"group_size": 32, "bits": 8}})");
  const HfConfig c = HfConfig::load(dir.file("config.json"));
  EXPECT_EQ(c.source(), dir.file("config.json"));
  EXPECT_EQ(c.quantization()->global(), (QuantSpec{32, 8, "affine"}));
}

TEST(HfConfig, ValidateQuantSpec) {
  EXPECT_NO_THROW(mlxn::io::validate_quant_spec({128, 3, "affine"}, "x"));
  EXPECT_TRUE(throws_error(
      [] {
        mlxn::io::validate_quant_spec({64, 1, "affine"}, "x");
      },
      "[config] x", {"bits 1"}));
  EXPECT_TRUE(throws_error(
      [] {
        mlxn::io::validate_quant_spec({64, 4, "nvfp4"}, "x");
      },
      "[config] x", {"'nvfp4'"}));
}

}  // namespace
