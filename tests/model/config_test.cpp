// The model description: the config.json files of public checkpoints (as published on their model
// pages) and GGUF metadata as llama.cpp writes it, every derived field, the defaults applied for
// absent keys, the tensor-name table, and bad input that must name the key at fault.
#include "mlxn/model/config.h"

#include <gtest/gtest.h>

#include <cmath>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "io/io_test_util.h"
#include "mlxn/io/gguf.h"
#include "mlxn/io/hf_config.h"
#include "mlxn/model/tensor_names.h"
#include "support/support.h"

namespace {

using mlxn::Activation;
using mlxn::DType;
using mlxn::Error;
using mlxn::RmsWeight;
using mlxn::RopePairing;
using mlxn::RopeScaling;
using mlxn::io::GgufArray;
using mlxn::io::GgufFile;
using mlxn::io::GgufWriter;
using mlxn::io::HfConfig;
using mlxn::model::Architecture;
using mlxn::model::from_gguf;
using mlxn::model::from_hf_config;
using mlxn::model::gguf_tensor_name;
using mlxn::model::hf_tensor_name;
using mlxn::model::ModelConfig;
using mlxn::model::TensorRole;
using mlxn::test::TestDir;
using mlxn::test::throws_error;
using json = nlohmann::json;

// ---- config.json files as published -----------------------------------------------------------

// meta-llama/Llama-3.1-8B-Instruct
constexpr const char* kLlama31_8B = R"({
  "architectures": ["LlamaForCausalLM"],
  "attention_bias": false,
  "attention_dropout": 0.0,
  "bos_token_id": 128000,
  "eos_token_id": [128001, 128008, 128009],
  "hidden_act": "silu",
  "hidden_size": 4096,
  "initializer_range": 0.02,
  "intermediate_size": 14336,
  "max_position_embeddings": 131072,
  "mlp_bias": false,
  "model_type": "llama",
  "num_attention_heads": 32,
  "num_hidden_layers": 32,
  "num_key_value_heads": 8,
  "pretraining_tp": 1,
  "rms_norm_eps": 1e-05,
  "rope_scaling": {
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 8192,
    "rope_type": "llama3"
  },
  "rope_theta": 500000.0,
  "tie_word_embeddings": false,
  "torch_dtype": "bfloat16",
  "transformers_version": "4.42.3",
  "use_cache": true,
  "vocab_size": 128256
})";

// mistralai/Mistral-7B-v0.1
constexpr const char* kMistral7B = R"({
  "architectures": ["MistralForCausalLM"],
  "bos_token_id": 1,
  "eos_token_id": 2,
  "hidden_act": "silu",
  "hidden_size": 4096,
  "initializer_range": 0.02,
  "intermediate_size": 14336,
  "max_position_embeddings": 32768,
  "model_type": "mistral",
  "num_attention_heads": 32,
  "num_hidden_layers": 32,
  "num_key_value_heads": 8,
  "rms_norm_eps": 1e-05,
  "rope_theta": 10000.0,
  "sliding_window": 4096,
  "tie_word_embeddings": false,
  "torch_dtype": "bfloat16",
  "transformers_version": "4.34.0.dev0",
  "use_cache": true,
  "vocab_size": 32000
})";

// Qwen/Qwen2-7B-Instruct
constexpr const char* kQwen2_7B = R"({
  "architectures": ["Qwen2ForCausalLM"],
  "attention_dropout": 0.0,
  "bos_token_id": 151643,
  "eos_token_id": 151645,
  "hidden_act": "silu",
  "hidden_size": 3584,
  "initializer_range": 0.02,
  "intermediate_size": 18944,
  "max_position_embeddings": 32768,
  "max_window_layers": 28,
  "model_type": "qwen2",
  "num_attention_heads": 28,
  "num_hidden_layers": 28,
  "num_key_value_heads": 4,
  "rms_norm_eps": 1e-06,
  "rope_theta": 1000000.0,
  "sliding_window": 131072,
  "tie_word_embeddings": false,
  "torch_dtype": "bfloat16",
  "transformers_version": "4.43.1",
  "use_cache": true,
  "use_sliding_window": false,
  "vocab_size": 152064
})";

// Qwen/Qwen3-8B
constexpr const char* kQwen3_8B = R"({
  "architectures": ["Qwen3ForCausalLM"],
  "attention_bias": false,
  "attention_dropout": 0.0,
  "bos_token_id": 151643,
  "eos_token_id": 151645,
  "head_dim": 128,
  "hidden_act": "silu",
  "hidden_size": 4096,
  "initializer_range": 0.02,
  "intermediate_size": 12288,
  "max_position_embeddings": 40960,
  "max_window_layers": 36,
  "model_type": "qwen3",
  "num_attention_heads": 32,
  "num_hidden_layers": 36,
  "num_key_value_heads": 8,
  "rms_norm_eps": 1e-06,
  "rope_scaling": null,
  "rope_theta": 1000000,
  "sliding_window": null,
  "tie_word_embeddings": false,
  "torch_dtype": "bfloat16",
  "transformers_version": "4.51.0",
  "use_cache": true,
  "use_sliding_window": false,
  "vocab_size": 151936
})";

// google/gemma-3-12b-it (vision_config left out): the text model in text_config, which states
// only what differs from Gemma3TextConfig's defaults.
constexpr const char* kGemma3_12B = R"({
  "architectures": ["Gemma3ForConditionalGeneration"],
  "boi_token_index": 255999,
  "eoi_token_index": 256000,
  "eos_token_id": [1, 106],
  "image_token_index": 262144,
  "initializer_range": 0.02,
  "mm_tokens_per_image": 256,
  "model_type": "gemma3",
  "text_config": {
    "hidden_size": 3840,
    "intermediate_size": 15360,
    "model_type": "gemma3_text",
    "num_attention_heads": 16,
    "num_hidden_layers": 48,
    "num_key_value_heads": 8,
    "rope_scaling": {"factor": 8.0, "rope_type": "linear"},
    "sliding_window": 1024
  },
  "torch_dtype": "bfloat16",
  "transformers_version": "4.50.0.dev0"
})";

// google/gemma-3-4b-it (vision_config left out): heads, kv heads, head_dim and vocabulary all
// come from the defaults.
constexpr const char* kGemma3_4B = R"({
  "architectures": ["Gemma3ForConditionalGeneration"],
  "boi_token_index": 255999,
  "eoi_token_index": 256000,
  "eos_token_id": [1, 106],
  "image_token_index": 262144,
  "initializer_range": 0.02,
  "mm_tokens_per_image": 256,
  "model_type": "gemma3",
  "text_config": {
    "hidden_size": 2560,
    "intermediate_size": 10240,
    "model_type": "gemma3_text",
    "num_hidden_layers": 34,
    "rope_scaling": {"factor": 8.0, "rope_type": "linear"},
    "sliding_window": 1024
  },
  "torch_dtype": "bfloat16",
  "transformers_version": "4.50.0.dev0"
})";

// google/gemma-3-1b-it
constexpr const char* kGemma3_1B = R"({
  "architectures": ["Gemma3ForCausalLM"],
  "attention_bias": false,
  "attention_dropout": 0.0,
  "attn_logit_softcapping": null,
  "bos_token_id": 2,
  "cache_implementation": "hybrid",
  "eos_token_id": [1, 106],
  "final_logit_softcapping": null,
  "head_dim": 256,
  "hidden_activation": "gelu_pytorch_tanh",
  "hidden_size": 1152,
  "initializer_range": 0.02,
  "intermediate_size": 6912,
  "max_position_embeddings": 32768,
  "model_type": "gemma3_text",
  "num_attention_heads": 4,
  "num_hidden_layers": 26,
  "num_key_value_heads": 1,
  "pad_token_id": 0,
  "query_pre_attn_scalar": 256,
  "rms_norm_eps": 1e-06,
  "rope_local_base_freq": 10000,
  "rope_scaling": null,
  "rope_theta": 1000000,
  "sliding_window": 512,
  "sliding_window_pattern": 6,
  "torch_dtype": "bfloat16",
  "transformers_version": "4.50.0.dev0",
  "use_cache": true,
  "vocab_size": 262144
})";

ModelConfig from_text(const std::string& text) {
  return from_hf_config(HfConfig::parse(text, "config.json"));
}
ModelConfig from_json(const json& j) { return from_text(j.dump()); }
json parsed(const char* text) { return json::parse(text); }

std::vector<int> windows(const ModelConfig& c) {
  std::vector<int> w;
  for (const auto& layer : c.layers) w.push_back(layer.window);
  return w;
}

// Layers i with (i + 1) % 6 == 0 are global; the others slide.
std::vector<int> gemma_windows(int layers, int window) {
  std::vector<int> w;
  for (int i = 0; i < layers; ++i) w.push_back((i + 1) % 6 == 0 ? 0 : window);
  return w;
}

float inv_sqrt(double x) { return static_cast<float>(1.0 / std::sqrt(x)); }

// ---- config.json: published models --------------------------------------------------------------

TEST(ModelConfigHf, Llama31_8B) {
  const ModelConfig c = from_text(kLlama31_8B);
  EXPECT_EQ(c.arch, Architecture::llama);
  EXPECT_EQ(c.source, "config.json");
  EXPECT_EQ(c.vocab_size, 128256);
  EXPECT_EQ(c.hidden_size, 4096);
  EXPECT_EQ(c.intermediate_size, 14336);
  EXPECT_EQ(c.num_layers, 32);
  EXPECT_EQ(c.num_heads, 32);
  EXPECT_EQ(c.num_kv_heads, 8);
  EXPECT_EQ(c.head_dim, 128);
  EXPECT_EQ(c.rms_norm_eps, 1e-5f);
  EXPECT_EQ(c.max_position_embeddings, 131072);
  ASSERT_EQ(c.layers.size(), 32u);
  for (const auto& layer : c.layers) {
    EXPECT_EQ(layer.window, 0);
    EXPECT_EQ(layer.rope.head_dim, 128);
    EXPECT_EQ(layer.rope.rotary_dim, 0);
    EXPECT_EQ(layer.rope.theta, 500000.0);
    EXPECT_EQ(layer.rope.pairing, RopePairing::half);
    EXPECT_EQ(layer.rope.scaling, RopeScaling::llama3);
    EXPECT_EQ(layer.rope.factor, 8.0);
    EXPECT_EQ(layer.rope.low_freq_factor, 1.0);
    EXPECT_EQ(layer.rope.high_freq_factor, 4.0);
    EXPECT_EQ(layer.rope.original_max_position, 8192);
    EXPECT_TRUE(layer.rope.freq_factors.empty());
  }
  EXPECT_FALSE(c.qkv_bias);
  EXPECT_FALSE(c.o_bias);
  EXPECT_FALSE(c.mlp_bias);
  EXPECT_FALSE(c.qk_norm);
  EXPECT_EQ(c.norm_weight, RmsWeight::multiply);
  EXPECT_FALSE(c.four_norms);
  EXPECT_EQ(c.activation, Activation::silu);
  EXPECT_EQ(c.embedding_scale, 1.0f);
  EXPECT_EQ(c.attention_scale, inv_sqrt(128));
  EXPECT_EQ(c.attn_logit_softcap, 0.0f);
  EXPECT_EQ(c.final_logit_softcap, 0.0f);
  EXPECT_FALSE(c.tie_word_embeddings);
  EXPECT_EQ(c.bos_token_id, 128000);
  EXPECT_EQ(c.eos_token_ids, (std::vector<int64_t>{128001, 128008, 128009}));
  EXPECT_EQ(c.dtype, DType::bf16);
  EXPECT_EQ(c.hf_prefix, "");

  // The rotary settings feed the RoPE op as they are: the highest frequency is kept, the lowest
  // (wavelength far above 8192 / low_freq_factor) divided by the factor.
  const mlxn::RopeFrequencies f = mlxn::rope_frequencies(c.layers[0].rope);
  ASSERT_EQ(f.inv_freq.size(), 64u);
  EXPECT_EQ(f.inv_freq[0], 1.0f);
  const double lowest = 1.0 / std::pow(500000.0, 126.0 / 128.0);
  EXPECT_NEAR(f.inv_freq[63], lowest / 8, lowest / 8 * 1e-6);
}

TEST(ModelConfigHf, Mistral7B) {
  const ModelConfig c = from_text(kMistral7B);
  EXPECT_EQ(c.arch, Architecture::mistral);
  EXPECT_EQ(c.vocab_size, 32000);
  EXPECT_EQ(c.hidden_size, 4096);
  EXPECT_EQ(c.intermediate_size, 14336);
  EXPECT_EQ(c.num_layers, 32);
  EXPECT_EQ(c.num_heads, 32);
  EXPECT_EQ(c.num_kv_heads, 8);
  EXPECT_EQ(c.head_dim, 128);
  EXPECT_EQ(c.rms_norm_eps, 1e-5f);
  EXPECT_EQ(c.max_position_embeddings, 32768);
  EXPECT_EQ(windows(c), std::vector<int>(32, 4096));  // every layer slides
  EXPECT_EQ(c.layers[31].rope.theta, 10000.0);
  EXPECT_EQ(c.layers[31].rope.scaling, RopeScaling::none);
  EXPECT_FALSE(c.qkv_bias || c.o_bias || c.mlp_bias || c.qk_norm || c.four_norms);
  EXPECT_EQ(c.activation, Activation::silu);
  EXPECT_EQ(c.attention_scale, inv_sqrt(128));
  EXPECT_FALSE(c.tie_word_embeddings);
  EXPECT_EQ(c.bos_token_id, 1);
  EXPECT_EQ(c.eos_token_ids, std::vector<int64_t>{2});
  EXPECT_EQ(c.dtype, DType::bf16);
}

TEST(ModelConfigHf, Qwen2_7B) {
  const ModelConfig c = from_text(kQwen2_7B);
  EXPECT_EQ(c.arch, Architecture::qwen2);
  EXPECT_EQ(c.vocab_size, 152064);
  EXPECT_EQ(c.hidden_size, 3584);
  EXPECT_EQ(c.intermediate_size, 18944);
  EXPECT_EQ(c.num_layers, 28);
  EXPECT_EQ(c.num_heads, 28);
  EXPECT_EQ(c.num_kv_heads, 4);
  EXPECT_EQ(c.head_dim, 128);
  EXPECT_EQ(c.rms_norm_eps, 1e-6f);
  EXPECT_EQ(c.max_position_embeddings, 32768);
  // sliding_window is set but use_sliding_window is false: no layer slides.
  EXPECT_EQ(windows(c), std::vector<int>(28, 0));
  EXPECT_EQ(c.layers[0].rope.theta, 1e6);
  EXPECT_TRUE(c.qkv_bias);
  EXPECT_FALSE(c.o_bias);
  EXPECT_FALSE(c.qk_norm);
  EXPECT_EQ(c.attention_scale, inv_sqrt(128));
  EXPECT_FALSE(c.tie_word_embeddings);
  EXPECT_EQ(c.bos_token_id, 151643);
  EXPECT_EQ(c.eos_token_ids, std::vector<int64_t>{151645});
}

TEST(ModelConfigHf, Qwen2SlidingWindowAsTransformersHonoursIt) {
  json j = parsed(kQwen2_7B);
  j["use_sliding_window"] = true;
  j["sliding_window"] = 4096;
  j["max_window_layers"] = 20;
  std::vector<int> expected(28, 0);
  for (int i = 20; i < 28; ++i) expected[static_cast<size_t>(i)] = 4096;  // from layer 20 on
  EXPECT_EQ(windows(from_json(j)), expected);

  // layer_types, when present, decides which layers slide.
  j["layer_types"] = json::array();
  for (int i = 0; i < 28; ++i)
    j["layer_types"].push_back(i == 3 ? "sliding_attention" : "full_attention");
  expected.assign(28, 0);
  expected[3] = 4096;
  EXPECT_EQ(windows(from_json(j)), expected);

  // ... but only with use_sliding_window.
  j["use_sliding_window"] = false;
  EXPECT_EQ(windows(from_json(j)), std::vector<int>(28, 0));
}

TEST(ModelConfigHf, Qwen3_8B) {
  const ModelConfig c = from_text(kQwen3_8B);
  EXPECT_EQ(c.arch, Architecture::qwen3);
  EXPECT_EQ(c.vocab_size, 151936);
  EXPECT_EQ(c.hidden_size, 4096);
  EXPECT_EQ(c.intermediate_size, 12288);
  EXPECT_EQ(c.num_layers, 36);
  EXPECT_EQ(c.num_heads, 32);
  EXPECT_EQ(c.num_kv_heads, 8);
  EXPECT_EQ(c.head_dim, 128);
  EXPECT_EQ(c.max_position_embeddings, 40960);
  EXPECT_EQ(windows(c), std::vector<int>(36, 0));
  EXPECT_EQ(c.layers[35].rope.theta, 1e6);
  EXPECT_EQ(c.layers[35].rope.scaling, RopeScaling::none);
  EXPECT_TRUE(c.qk_norm);
  EXPECT_FALSE(c.qkv_bias);
  EXPECT_FALSE(c.o_bias);
  EXPECT_EQ(c.norm_weight, RmsWeight::multiply);
  EXPECT_FALSE(c.four_norms);
  EXPECT_EQ(c.attention_scale, inv_sqrt(128));
  EXPECT_FALSE(c.tie_word_embeddings);
  EXPECT_EQ(c.bos_token_id, 151643);
  EXPECT_EQ(c.eos_token_ids, std::vector<int64_t>{151645});

  json j = parsed(kQwen3_8B);
  j["attention_bias"] = true;  // Qwen3 biases q, k, v and o together
  const ModelConfig biased = from_json(j);
  EXPECT_TRUE(biased.qkv_bias);
  EXPECT_TRUE(biased.o_bias);
}

TEST(ModelConfigHf, Gemma3_12B) {
  const ModelConfig c = from_text(kGemma3_12B);
  EXPECT_EQ(c.arch, Architecture::gemma3);
  EXPECT_EQ(c.hf_prefix, "language_model.");
  EXPECT_EQ(c.vocab_size, 262208);  // Gemma3TextConfig default
  EXPECT_EQ(c.hidden_size, 3840);
  EXPECT_EQ(c.intermediate_size, 15360);
  EXPECT_EQ(c.num_layers, 48);
  EXPECT_EQ(c.num_heads, 16);
  EXPECT_EQ(c.num_kv_heads, 8);
  EXPECT_EQ(c.head_dim, 256);  // default; not 3840 / 16
  EXPECT_EQ(c.rms_norm_eps, 1e-6f);
  EXPECT_EQ(c.max_position_embeddings, 131072);
  EXPECT_EQ(windows(c), gemma_windows(48, 1024));
  for (size_t i = 0; i < c.layers.size(); ++i) {
    const mlxn::RopeConfig& rope = c.layers[i].rope;
    EXPECT_EQ(rope.head_dim, 256);
    EXPECT_EQ(rope.pairing, RopePairing::half);
    if ((i + 1) % 6 == 0) {  // global: theta 1e6, linear scaling by 8
      EXPECT_EQ(rope.theta, 1e6) << i;
      EXPECT_EQ(rope.scaling, RopeScaling::linear) << i;
      EXPECT_EQ(rope.factor, 8.0) << i;
    } else {  // sliding: local theta, no scaling
      EXPECT_EQ(rope.theta, 10000.0) << i;
      EXPECT_EQ(rope.scaling, RopeScaling::none) << i;
    }
  }
  EXPECT_EQ(c.layers[5].window, 0);
  EXPECT_EQ(c.layers[11].window, 0);
  EXPECT_EQ(c.layers[47].window, 0);
  EXPECT_EQ(c.layers[46].window, 1024);
  EXPECT_TRUE(c.qk_norm);
  EXPECT_FALSE(c.qkv_bias || c.o_bias || c.mlp_bias);
  EXPECT_EQ(c.norm_weight, RmsWeight::one_plus);
  EXPECT_TRUE(c.four_norms);
  EXPECT_EQ(c.activation, Activation::gelu_tanh);
  EXPECT_EQ(c.embedding_scale, static_cast<float>(std::sqrt(3840.0)));
  EXPECT_EQ(c.attention_scale, inv_sqrt(256));  // query_pre_attn_scalar 256 (default)
  EXPECT_EQ(c.attn_logit_softcap, 0.0f);
  EXPECT_EQ(c.final_logit_softcap, 0.0f);
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_EQ(c.bos_token_id, 2);                                // Gemma3TextConfig default
  EXPECT_EQ(c.eos_token_ids, (std::vector<int64_t>{1, 106}));  // from the top level
  EXPECT_EQ(c.dtype, DType::bf16);
}

TEST(ModelConfigHf, Gemma3_4BTakesTheTextDefaults) {
  const ModelConfig c = from_text(kGemma3_4B);
  EXPECT_EQ(c.num_layers, 34);
  EXPECT_EQ(c.num_heads, 8);
  EXPECT_EQ(c.num_kv_heads, 4);
  EXPECT_EQ(c.head_dim, 256);
  EXPECT_EQ(c.vocab_size, 262208);
  EXPECT_EQ(windows(c), gemma_windows(34, 1024));
  EXPECT_EQ(c.layers[5].rope.theta, 1e6);
  EXPECT_EQ(c.layers[5].rope.factor, 8.0);
  EXPECT_EQ(c.layers[4].rope.theta, 10000.0);
  EXPECT_EQ(c.embedding_scale, static_cast<float>(std::sqrt(2560.0)));
}

TEST(ModelConfigHf, Gemma3_1B) {
  const ModelConfig c = from_text(kGemma3_1B);
  EXPECT_EQ(c.arch, Architecture::gemma3);
  EXPECT_EQ(c.hf_prefix, "");
  EXPECT_EQ(c.vocab_size, 262144);
  EXPECT_EQ(c.hidden_size, 1152);
  EXPECT_EQ(c.intermediate_size, 6912);
  EXPECT_EQ(c.num_layers, 26);
  EXPECT_EQ(c.num_heads, 4);
  EXPECT_EQ(c.num_kv_heads, 1);
  EXPECT_EQ(c.head_dim, 256);  // explicit, and not 1152 / 4
  EXPECT_EQ(c.max_position_embeddings, 32768);
  EXPECT_EQ(windows(c), gemma_windows(26, 512));
  for (const int global : {5, 11, 17, 23}) {
    EXPECT_EQ(c.layers[static_cast<size_t>(global)].rope.theta, 1e6);
    EXPECT_EQ(c.layers[static_cast<size_t>(global)].rope.scaling, RopeScaling::none);
  }
  EXPECT_EQ(c.layers[0].rope.theta, 10000.0);
  EXPECT_EQ(c.attention_scale, inv_sqrt(256));
  EXPECT_EQ(c.embedding_scale, static_cast<float>(std::sqrt(1152.0)));
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_EQ(c.bos_token_id, 2);
  EXPECT_EQ(c.eos_token_ids, (std::vector<int64_t>{1, 106}));
}

// The form transformers 5 writes: a layer type per layer and rope_parameters per layer type.
TEST(ModelConfigHf, Gemma3LayerTypesAndRopeParameters) {
  const ModelConfig c = from_text(R"({
    "architectures": ["Gemma3ForCausalLM"], "model_type": "gemma3_text",
    "hidden_size": 5376, "intermediate_size": 21504, "num_hidden_layers": 4,
    "num_attention_heads": 32, "num_key_value_heads": 16, "head_dim": 128,
    "query_pre_attn_scalar": 168, "final_logit_softcapping": 30.0,
    "attn_logit_softcapping": 50.0, "sliding_window": 1024,
    "layer_types": ["sliding_attention", "full_attention", "sliding_attention", "full_attention"],
    "rope_parameters": {
      "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1000000.0},
      "sliding_attention": {"rope_type": "default", "rope_theta": 20000.0}
    }
  })");
  EXPECT_EQ(windows(c), (std::vector<int>{1024, 0, 1024, 0}));
  EXPECT_EQ(c.layers[0].rope.theta, 20000.0);
  EXPECT_EQ(c.layers[0].rope.scaling, RopeScaling::none);
  EXPECT_EQ(c.layers[1].rope.theta, 1e6);
  EXPECT_EQ(c.layers[1].rope.scaling, RopeScaling::linear);
  EXPECT_EQ(c.layers[1].rope.factor, 8.0);
  EXPECT_EQ(c.attention_scale, inv_sqrt(168));  // Gemma 3 27B: not head_dim^-0.5
  EXPECT_EQ(c.final_logit_softcap, 30.0f);
  // Read and validated, not applied: transformers' and llama.cpp's Gemma 3 ignore it.
  EXPECT_EQ(c.attn_logit_softcap, 0.0f);
}

// ---- config.json: defaults for absent keys ------------------------------------------------------

TEST(ModelConfigHf, DefaultsOfEachClass) {
  const json llama = {{"model_type", "llama"},
                      {"hidden_size", 256},
                      {"intermediate_size", 512},
                      {"num_hidden_layers", 2},
                      {"num_attention_heads", 8}};
  // LlamaConfig: kv heads = heads, head_dim = hidden / heads, theta 1e4, eps 1e-6, 2048
  // positions, bos 1, eos 2, untied, silu.
  ModelConfig c = from_json(llama);
  EXPECT_EQ(c.num_kv_heads, 8);
  EXPECT_EQ(c.head_dim, 32);
  EXPECT_EQ(c.vocab_size, 32000);
  EXPECT_EQ(c.layers[0].rope.theta, 10000.0);
  EXPECT_EQ(c.rms_norm_eps, 1e-6f);
  EXPECT_EQ(c.max_position_embeddings, 2048);
  EXPECT_EQ(c.bos_token_id, 1);
  EXPECT_EQ(c.eos_token_ids, std::vector<int64_t>{2});
  EXPECT_FALSE(c.tie_word_embeddings);
  EXPECT_FALSE(c.dtype.has_value());

  json j = llama;
  j["num_key_value_heads"] = nullptr;                         // null: as many as the query heads
  j["rope_scaling"] = {{"type", "linear"}, {"factor", 2.0}};  // the older "type" spelling
  j["bos_token_id"] = nullptr;
  c = from_json(j);
  EXPECT_EQ(c.num_kv_heads, 8);
  EXPECT_EQ(c.layers[1].rope.scaling, RopeScaling::linear);
  EXPECT_EQ(c.layers[1].rope.factor, 2.0);
  EXPECT_FALSE(c.bos_token_id.has_value());

  // transformers 5's rope_parameters, theta inside.
  j = llama;
  j["rope_parameters"] = {{"rope_type", "llama3"},   {"rope_theta", 500000.0},
                          {"factor", 32.0},          {"low_freq_factor", 1.0},
                          {"high_freq_factor", 4.0}, {"original_max_position_embeddings", 8192}};
  c = from_json(j);
  EXPECT_EQ(c.layers[0].rope.theta, 500000.0);
  EXPECT_EQ(c.layers[0].rope.scaling, RopeScaling::llama3);
  EXPECT_EQ(c.layers[0].rope.factor, 32.0);

  // MistralConfig: sliding_window 4096 when absent; null turns it off. 8 kv heads by default.
  json mistral = llama;
  mistral["model_type"] = "mistral";
  c = from_json(mistral);
  EXPECT_EQ(windows(c), (std::vector<int>{4096, 4096}));
  EXPECT_EQ(c.max_position_embeddings, 131072);
  mistral["sliding_window"] = nullptr;
  EXPECT_EQ(windows(from_json(mistral)), (std::vector<int>{0, 0}));

  // Qwen2Config / Qwen3Config: 32 kv heads when absent (not num_attention_heads), and Qwen3's
  // head_dim is 128 whatever hidden_size / heads is.
  json qwen = llama;
  qwen["model_type"] = "qwen2";
  qwen["num_attention_heads"] = 32;
  c = from_json(qwen);
  EXPECT_EQ(c.num_kv_heads, 32);
  EXPECT_EQ(c.head_dim, 8);
  EXPECT_EQ(c.vocab_size, 151936);
  EXPECT_FALSE(c.bos_token_id.has_value());
  EXPECT_TRUE(c.eos_token_ids.empty());
  qwen["model_type"] = "qwen3";
  c = from_json(qwen);
  EXPECT_EQ(c.head_dim, 128);
  EXPECT_EQ(c.attention_scale, inv_sqrt(128));
}

// ---- config.json: bad input
// -----------------------------------------------------------------------

TEST(ModelConfigHf, ArchitectureErrors) {
  EXPECT_TRUE(
      throws_error([] { from_text(R"({"architectures": ["PhiForCausalLM"]})"); },
                   "[model] config.json: architecture 'PhiForCausalLM' is not supported",
                   {"LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM",
                    "Qwen3ForCausalLM", "Gemma3ForCausalLM", "Gemma3ForConditionalGeneration"}));
  EXPECT_TRUE(throws_error([] { from_text(R"({"model_type": "phi3"})"); },
                           "[model] config.json: model_type 'phi3' is not supported",
                           {"llama", "mistral", "qwen2", "qwen3", "gemma3_text"}));
  EXPECT_TRUE(throws_error([] { from_text(R"({"hidden_size": 8})"); },
                           "[model] config.json:", {"neither 'architectures' nor 'model_type'"}));
  EXPECT_TRUE(throws_error([] { from_text(R"({"architectures": "LlamaForCausalLM"})"); },
                           "[model] config.json:", {"'architectures' is not a list"}));
}

TEST(ModelConfigHf, MissingAndMistypedKeys) {
  json j = parsed(kLlama31_8B);
  j.erase("hidden_size");
  EXPECT_TRUE(throws_error([&] { from_json(j); }, "[model] config.json:",
                           {"'hidden_size' is missing (required for llama)"}));
  j = parsed(kGemma3_12B);
  j["text_config"].erase("num_hidden_layers");
  EXPECT_TRUE(throws_error([&] { from_json(j); }, "[model] config.json:",
                           {"'text_config.num_hidden_layers' is missing (required for gemma3)"}));
  j = parsed(kLlama31_8B);
  j["hidden_size"] = "4096";
  EXPECT_TRUE(throws_error([&] { from_json(j); },
                           "[model] config.json:", {"'hidden_size' is not an integer (\"4096\")"}));
  j = parsed(kLlama31_8B);
  j["rms_norm_eps"] = "small";
  EXPECT_TRUE(throws_error([&] { from_json(j); },
                           "[model] config.json:", {"'rms_norm_eps' is not a number"}));
  j = parsed(kLlama31_8B);
  j["tie_word_embeddings"] = 1;
  EXPECT_TRUE(throws_error([&] { from_json(j); },
                           "[model] config.json:", {"'tie_word_embeddings' is not true or false"}));
  j = parsed(kLlama31_8B);
  j["hidden_act"] = "relu";
  EXPECT_TRUE(throws_error([&] { from_json(j); }, "[model] config.json:",
                           {"'hidden_act' 'relu' is not supported", "silu", "gelu_pytorch_tanh"}));
  j = parsed(kLlama31_8B);
  j["torch_dtype"] = "float8_e4m3fn";
  EXPECT_TRUE(throws_error([&] { from_json(j); }, "[model] config.json:",
                           {"torch_dtype 'float8_e4m3fn' is not supported"}));
}

TEST(ModelConfigHf, InconsistentSizes) {
  json j = parsed(kLlama31_8B);
  j["num_key_value_heads"] = 5;
  EXPECT_TRUE(throws_error([&] { from_json(j); }, "[model] config.json:",
                           {"num_attention_heads 32 is not a multiple of num_key_value_heads 5"}));
  j = parsed(kLlama31_8B);
  j["hidden_size"] = 4100;
  EXPECT_TRUE(throws_error(
      [&] { from_json(j); }, "[model] config.json:",
      {"hidden_size 4100 is not a multiple of num_attention_heads 32", "head_dim is not given"}));
  j["head_dim"] = 128;  // an explicit head_dim need not split hidden_size
  EXPECT_EQ(from_json(j).head_dim, 128);
  j = parsed(kQwen3_8B);
  j["head_dim"] = 63;
  EXPECT_TRUE(
      throws_error([&] { from_json(j); }, "[model] config.json:", {"head_dim 63 must be even"}));
  j = parsed(kLlama31_8B);
  j["num_hidden_layers"] = 0;
  EXPECT_TRUE(throws_error([&] { from_json(j); },
                           "[model] config.json:", {"num_hidden_layers must be positive, got 0"}));
  j = parsed(kLlama31_8B);
  j["vocab_size"] = -1;
  EXPECT_TRUE(throws_error([&] { from_json(j); },
                           "[model] config.json:", {"vocab_size must be positive, got -1"}));
  j = parsed(kLlama31_8B);
  j["rms_norm_eps"] = -1e-5;
  EXPECT_TRUE(throws_error([&] { from_json(j); },
                           "[model] config.json:", {"rms_norm_eps must be finite and >= 0"}));
}

TEST(ModelConfigHf, BadAttentionAndRopeSettings) {
  json j = parsed(kGemma3_1B);
  j["layer_types"] = {"sliding_attention", "full_attention", "sliding_attention"};
  EXPECT_TRUE(throws_error([&] { from_json(j); }, "[model] config.json:",
                           {"'layer_types' has 3 entries for num_hidden_layers 26"}));
  j["layer_types"] = json::array();
  for (int i = 0; i < 26; ++i)
    j["layer_types"].push_back(i == 1 ? "chunked_attention" : "full_attention");
  EXPECT_TRUE(throws_error([&] { from_json(j); }, "[model] config.json:",
                           {"'layer_types[1]' 'chunked_attention' is not supported"}));
  j = parsed(kGemma3_1B);
  j["sliding_window_pattern"] = 0;
  EXPECT_TRUE(throws_error([&] { from_json(j); },
                           "[model] config.json:", {"'sliding_window_pattern' must be positive"}));
  j = parsed(kGemma3_1B);
  j["query_pre_attn_scalar"] = 0;
  EXPECT_TRUE(throws_error([&] { from_json(j); }, "[model] config.json:",
                           {"'query_pre_attn_scalar' must be finite and > 0"}));
  j = parsed(kGemma3_1B);
  j["use_bidirectional_attention"] = true;
  EXPECT_TRUE(throws_error([&] { from_json(j); }, "[model] config.json:",
                           {"'use_bidirectional_attention' is not supported"}));
  j = parsed(kGemma3_1B);
  j["final_logit_softcapping"] = -30.0;
  EXPECT_TRUE(throws_error([&] { from_json(j); }, "[model] config.json:",
                           {"'final_logit_softcapping' must be finite and > 0 or null"}));
  j = parsed(kMistral7B);
  j["sliding_window"] = -1;
  EXPECT_TRUE(throws_error([&] { from_json(j); }, "[model] config.json:",
                           {"'sliding_window' must be a positive window or null, got -1"}));
  j = parsed(kLlama31_8B);
  j["rope_theta"] = 0;
  EXPECT_TRUE(throws_error([&] { from_json(j); },
                           "[model] config.json:", {"'rope_theta' must be finite and > 0"}));
  j = parsed(kLlama31_8B);
  j["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", 4.0}};
  EXPECT_TRUE(throws_error(
      [&] { from_json(j); }, "[model] config.json:",
      {"'rope_scaling.rope_type' 'yarn' is not supported", "default, linear, llama3"}));
  j = parsed(kLlama31_8B);
  j["rope_scaling"].erase("low_freq_factor");
  EXPECT_TRUE(throws_error([&] { from_json(j); }, "[model] config.json:",
                           {"'rope_scaling.low_freq_factor' is missing (required for rope_type "
                            "'llama3')"}));
  j = parsed(kLlama31_8B);
  j["rope_scaling"]["high_freq_factor"] = 1.0;
  EXPECT_TRUE(throws_error([&] { from_json(j); }, "[model] config.json:",
                           {"'rope_scaling.low_freq_factor' 1 must be below high_freq_factor 1"}));
  j = parsed(kGemma3_12B);
  j["text_config"]["rope_scaling"] = {{"rope_type", "linear"}};
  EXPECT_TRUE(throws_error([&] { from_json(j); }, "[model] config.json:",
                           {"'text_config.rope_scaling.factor' is missing"}));
}

TEST(ModelConfigHf, Describe) {
  const std::string d = from_text(kGemma3_1B).describe();
  for (const char* line : {"architecture: gemma3\n", "source: config.json\n", "head_dim: 256\n",
                           "rms_norm_eps: 1e-06\n", "norm_weight: 1 + w\n", "four_norms: yes\n",
                           "activation: gelu_tanh\n", "final_logit_softcap: none\n",
                           "eos_token_ids: 1, 106\n", "dtype: bf16\n",
                           "layers 0-4, 6-10, 12-16, 18-22, 24-25: sliding window 512, rope theta "
                           "10000, pairing half\n",
                           "layers 5, 11, 17, 23: global, rope theta 1000000, pairing half\n"}) {
    EXPECT_NE(d.find(line), std::string::npos) << "missing \"" << line << "\" in:\n" << d;
  }
  const std::string l = from_text(kLlama31_8B).describe();
  EXPECT_NE(l.find("layers 0-31: global, rope theta 500000, pairing half, llama3 factor 8 "
                   "low_freq_factor 1 high_freq_factor 4 original_max_position 8192\n"),
            std::string::npos)
      << l;
}

// ---- tensor names
// ---------------------------------------------------------------------------------

TEST(ModelTensorNames, LlamaStyle) {
  const ModelConfig llama = from_text(kLlama31_8B);
  EXPECT_EQ(hf_tensor_name(llama, TensorRole::embed), "model.embed_tokens.weight");
  EXPECT_EQ(gguf_tensor_name(llama, TensorRole::embed), "token_embd.weight");
  EXPECT_EQ(hf_tensor_name(llama, TensorRole::lm_head), "lm_head.weight");
  EXPECT_EQ(gguf_tensor_name(llama, TensorRole::lm_head), "output.weight");
  EXPECT_EQ(hf_tensor_name(llama, TensorRole::final_norm), "model.norm.weight");
  EXPECT_EQ(gguf_tensor_name(llama, TensorRole::final_norm), "output_norm.weight");
  EXPECT_EQ(hf_tensor_name(llama, TensorRole::attn_q, 0), "model.layers.0.self_attn.q_proj.weight");
  EXPECT_EQ(gguf_tensor_name(llama, TensorRole::attn_q, 0), "blk.0.attn_q.weight");
  EXPECT_EQ(hf_tensor_name(llama, TensorRole::attn_o, 31),
            "model.layers.31.self_attn.o_proj.weight");
  EXPECT_EQ(gguf_tensor_name(llama, TensorRole::attn_o, 31), "blk.31.attn_output.weight");
  EXPECT_EQ(hf_tensor_name(llama, TensorRole::input_norm, 2),
            "model.layers.2.input_layernorm.weight");
  EXPECT_EQ(gguf_tensor_name(llama, TensorRole::input_norm, 2), "blk.2.attn_norm.weight");
  // The norm before the MLP is "post_attention_layernorm" in Llama-style checkpoints.
  EXPECT_EQ(hf_tensor_name(llama, TensorRole::pre_ffn_norm, 2),
            "model.layers.2.post_attention_layernorm.weight");
  EXPECT_EQ(gguf_tensor_name(llama, TensorRole::pre_ffn_norm, 2), "blk.2.ffn_norm.weight");
  EXPECT_EQ(hf_tensor_name(llama, TensorRole::ffn_down, 7), "model.layers.7.mlp.down_proj.weight");
  EXPECT_EQ(gguf_tensor_name(llama, TensorRole::ffn_gate, 7), "blk.7.ffn_gate.weight");
  EXPECT_EQ(
      mlxn::model::global_tensor_roles(llama),
      (std::vector<TensorRole>{TensorRole::embed, TensorRole::final_norm, TensorRole::lm_head}));
  EXPECT_EQ(
      mlxn::model::layer_tensor_roles(llama),
      (std::vector<TensorRole>{TensorRole::input_norm, TensorRole::attn_q, TensorRole::attn_k,
                               TensorRole::attn_v, TensorRole::attn_o, TensorRole::pre_ffn_norm,
                               TensorRole::ffn_gate, TensorRole::ffn_up, TensorRole::ffn_down}));

  const ModelConfig qwen2 = from_text(kQwen2_7B);
  EXPECT_EQ(hf_tensor_name(qwen2, TensorRole::attn_v_bias, 27),
            "model.layers.27.self_attn.v_proj.bias");
  EXPECT_EQ(gguf_tensor_name(qwen2, TensorRole::attn_v_bias, 27), "blk.27.attn_v.bias");
  EXPECT_EQ(mlxn::model::layer_tensor_roles(qwen2).size(), 12u);

  const ModelConfig qwen3 = from_text(kQwen3_8B);
  EXPECT_EQ(hf_tensor_name(qwen3, TensorRole::k_norm, 35),
            "model.layers.35.self_attn.k_norm.weight");
  EXPECT_EQ(gguf_tensor_name(qwen3, TensorRole::q_norm, 35), "blk.35.attn_q_norm.weight");
}

TEST(ModelTensorNames, Gemma3FourNorms) {
  const ModelConfig g = from_text(kGemma3_12B);  // conditional generation: "language_model."
  EXPECT_EQ(hf_tensor_name(g, TensorRole::embed), "language_model.model.embed_tokens.weight");
  EXPECT_EQ(hf_tensor_name(g, TensorRole::post_attn_norm, 5),
            "language_model.model.layers.5.post_attention_layernorm.weight");
  EXPECT_EQ(hf_tensor_name(g, TensorRole::pre_ffn_norm, 5),
            "language_model.model.layers.5.pre_feedforward_layernorm.weight");
  EXPECT_EQ(hf_tensor_name(g, TensorRole::post_ffn_norm, 5),
            "language_model.model.layers.5.post_feedforward_layernorm.weight");
  EXPECT_EQ(hf_tensor_name(g, TensorRole::q_norm, 47),
            "language_model.model.layers.47.self_attn.q_norm.weight");
  EXPECT_EQ(gguf_tensor_name(g, TensorRole::post_attn_norm, 5), "blk.5.post_attention_norm.weight");
  EXPECT_EQ(gguf_tensor_name(g, TensorRole::pre_ffn_norm, 5), "blk.5.ffn_norm.weight");
  EXPECT_EQ(gguf_tensor_name(g, TensorRole::post_ffn_norm, 5), "blk.5.post_ffw_norm.weight");
  EXPECT_EQ(gguf_tensor_name(g, TensorRole::k_norm, 0), "blk.0.attn_k_norm.weight");
  // Tied embeddings: no lm_head.
  EXPECT_EQ(mlxn::model::global_tensor_roles(g),
            (std::vector<TensorRole>{TensorRole::embed, TensorRole::final_norm}));
  EXPECT_EQ(mlxn::model::layer_tensor_roles(g).size(), 13u);

  const ModelConfig small = from_text(kGemma3_1B);  // causal LM: no prefix
  EXPECT_EQ(hf_tensor_name(small, TensorRole::input_norm, 0),
            "model.layers.0.input_layernorm.weight");
}

TEST(ModelTensorNames, Errors) {
  const ModelConfig llama = from_text(kLlama31_8B);
  EXPECT_TRUE(throws_error([&] { hf_tensor_name(llama, TensorRole::q_norm, 0); },
                           "[model] llama model (config.json) has no q_norm tensor"));
  EXPECT_TRUE(throws_error([&] { gguf_tensor_name(llama, TensorRole::post_ffn_norm, 0); },
                           "[model] llama model (config.json) has no post_ffn_norm tensor"));
  EXPECT_TRUE(throws_error([&] { gguf_tensor_name(llama, TensorRole::attn_q_bias, 0); }, "[model]",
                           {"has no attn_q_bias tensor"}));
  EXPECT_TRUE(throws_error([&] { hf_tensor_name(llama, TensorRole::attn_q, 32); },
                           "[model] layer 32 of attn_q is out of range [0, 32)"));
  EXPECT_TRUE(throws_error([&] { gguf_tensor_name(llama, TensorRole::attn_q); },
                           "[model] layer -1 of attn_q is out of range"));
  const ModelConfig gemma = from_text(kGemma3_1B);
  EXPECT_TRUE(throws_error([&] { hf_tensor_name(gemma, TensorRole::lm_head); }, "[model]",
                           {"has no lm_head tensor"}));
}

// ---- GGUF
// -----------------------------------------------------------------------------------------

std::vector<std::byte> f32_bytes(const std::vector<float>& values) {
  const auto* p = reinterpret_cast<const std::byte*>(values.data());
  return std::vector<std::byte>(p, p + values.size() * sizeof(float));
}

GgufArray tokens(size_t n) {
  std::vector<std::string> t;
  for (size_t i = 0; i < n; ++i) t.push_back(std::string("t").append(std::to_string(i)));
  return GgufArray{std::move(t)};
}

// Metadata of a small Llama 3.x GGUF as convert_hf_to_gguf.py writes it.
GgufWriter llama_gguf(const std::vector<float>& freq_factors) {
  GgufWriter w;
  w.add("general.architecture", std::string("llama"));
  w.add("llama.block_count", uint32_t{4});
  w.add("llama.context_length", uint32_t{131072});
  w.add("llama.embedding_length", uint32_t{256});
  w.add("llama.feed_forward_length", uint32_t{512});
  w.add("llama.attention.head_count", uint32_t{8});
  w.add("llama.attention.head_count_kv", uint32_t{2});
  w.add("llama.rope.freq_base", 500000.0f);
  w.add("llama.attention.layer_norm_rms_epsilon", 1e-5f);
  w.add("llama.rope.dimension_count", uint32_t{32});
  w.add("tokenizer.ggml.tokens", tokens(10));
  w.add("tokenizer.ggml.bos_token_id", uint32_t{128000});
  w.add("tokenizer.ggml.eos_token_id", uint32_t{128009});
  w.add_tensor("rope_freqs.weight", mlxn::GgmlType::f32, {16}, f32_bytes(freq_factors));
  w.add_tensor("output.weight", mlxn::GgmlType::f32, {4, 2}, f32_bytes(std::vector<float>(8)));
  return w;
}

ModelConfig written(const GgufWriter& w, const TestDir& dir) {
  const std::string path = dir.file("model.gguf");
  w.write(path);
  return from_gguf(GgufFile::open(path));
}

TEST(ModelConfigGguf, Llama) {
  const TestDir dir;
  std::vector<float> factors(16);
  for (size_t i = 0; i < factors.size(); ++i) factors[i] = 1.0f + static_cast<float>(i) * 0.5f;
  const ModelConfig c = written(llama_gguf(factors), dir);
  EXPECT_EQ(c.arch, Architecture::llama);
  EXPECT_EQ(c.source, dir.file("model.gguf"));
  EXPECT_EQ(c.vocab_size, 10);  // the tokenizer's token count
  EXPECT_EQ(c.hidden_size, 256);
  EXPECT_EQ(c.intermediate_size, 512);
  EXPECT_EQ(c.num_layers, 4);
  EXPECT_EQ(c.num_heads, 8);
  EXPECT_EQ(c.num_kv_heads, 2);
  EXPECT_EQ(c.head_dim, 32);
  EXPECT_EQ(c.rms_norm_eps, 1e-5f);
  EXPECT_EQ(c.max_position_embeddings, 131072);
  ASSERT_EQ(c.layers.size(), 4u);
  for (const auto& layer : c.layers) {
    EXPECT_EQ(layer.window, 0);
    EXPECT_EQ(layer.rope.theta, 500000.0);
    EXPECT_EQ(layer.rope.rotary_dim, 0);
    EXPECT_EQ(layer.rope.pairing, RopePairing::interleaved);  // GGML's Llama layout
    EXPECT_EQ(layer.rope.scaling, RopeScaling::none);
    EXPECT_EQ(layer.rope.freq_factors, factors);  // Llama 3 scaling, precomputed
  }
  EXPECT_FALSE(c.tie_word_embeddings);  // output.weight is present
  EXPECT_FALSE(c.qkv_bias || c.o_bias || c.mlp_bias || c.qk_norm || c.four_norms);
  EXPECT_EQ(c.norm_weight, RmsWeight::multiply);
  EXPECT_EQ(c.activation, Activation::silu);
  EXPECT_EQ(c.attention_scale, inv_sqrt(32));
  EXPECT_EQ(c.embedding_scale, 1.0f);
  EXPECT_EQ(c.bos_token_id, 128000);
  EXPECT_EQ(c.eos_token_ids, std::vector<int64_t>{128009});
  EXPECT_FALSE(c.dtype.has_value());
  EXPECT_EQ(c.hf_prefix, "");

  // <arch>.vocab_size wins over the token count; linear scaling by its factor.
  GgufWriter w = llama_gguf(factors);
  w.add("llama.vocab_size", uint32_t{12});
  w.add("llama.rope.scaling.type", std::string("linear"));
  w.add("llama.rope.scaling.factor", 4.0f);
  const ModelConfig scaled = written(w, dir);
  EXPECT_EQ(scaled.vocab_size, 12);
  EXPECT_EQ(scaled.layers[0].rope.scaling, RopeScaling::linear);
  EXPECT_EQ(scaled.layers[0].rope.factor, 4.0);
}

// gemma-3-12b's metadata: no window pattern or local theta in the file (llama.cpp's constants),
// norm weights stored as 1 + w, no output.weight (tied).
GgufWriter gemma3_gguf(uint32_t layers, uint32_t hidden, uint32_t heads, uint32_t head_dim) {
  GgufWriter w;
  w.add("general.architecture", std::string("gemma3"));
  w.add("gemma3.context_length", uint32_t{131072});
  w.add("gemma3.embedding_length", hidden);
  w.add("gemma3.block_count", layers);
  w.add("gemma3.feed_forward_length", uint32_t{15360});
  w.add("gemma3.attention.head_count", heads);
  w.add("gemma3.attention.layer_norm_rms_epsilon", 1e-6f);
  w.add("gemma3.attention.key_length", head_dim);
  w.add("gemma3.attention.value_length", head_dim);
  w.add("gemma3.rope.freq_base", 1000000.0f);
  w.add("gemma3.rope.scaling.type", std::string("linear"));
  w.add("gemma3.rope.scaling.factor", 8.0f);
  w.add("gemma3.attention.sliding_window", uint32_t{1024});
  w.add("gemma3.attention.head_count_kv", heads / 2);
  w.add("tokenizer.ggml.tokens", tokens(6));
  w.add("tokenizer.ggml.bos_token_id", uint32_t{2});
  w.add("tokenizer.ggml.eos_token_id", uint32_t{1});
  w.add("tokenizer.ggml.eot_token_id", uint32_t{106});
  return w;
}

TEST(ModelConfigGguf, Gemma3) {
  const TestDir dir;
  const ModelConfig c = written(gemma3_gguf(48, 3840, 16, 256), dir);
  EXPECT_EQ(c.arch, Architecture::gemma3);
  EXPECT_EQ(c.vocab_size, 6);
  EXPECT_EQ(c.hidden_size, 3840);
  EXPECT_EQ(c.num_layers, 48);
  EXPECT_EQ(c.num_heads, 16);
  EXPECT_EQ(c.num_kv_heads, 8);
  EXPECT_EQ(c.head_dim, 256);
  EXPECT_EQ(windows(c), gemma_windows(48, 1024));
  for (size_t i = 0; i < c.layers.size(); ++i) {
    const mlxn::RopeConfig& rope = c.layers[i].rope;
    EXPECT_EQ(rope.pairing, RopePairing::half) << i;
    if ((i + 1) % 6 == 0) {
      EXPECT_EQ(rope.theta, 1e6) << i;
      EXPECT_EQ(rope.scaling, RopeScaling::linear) << i;
      EXPECT_EQ(rope.factor, 8.0) << i;
    } else {
      EXPECT_EQ(rope.theta, 10000.0) << i;
      EXPECT_EQ(rope.scaling, RopeScaling::none) << i;
    }
  }
  EXPECT_EQ(c.norm_weight, RmsWeight::multiply);  // the file holds 1 + w
  EXPECT_TRUE(c.four_norms);
  EXPECT_TRUE(c.qk_norm);
  EXPECT_EQ(c.activation, Activation::gelu_tanh);
  EXPECT_EQ(c.embedding_scale, static_cast<float>(std::sqrt(3840.0)));
  EXPECT_EQ(c.attention_scale, inv_sqrt(256));
  EXPECT_EQ(c.final_logit_softcap, 0.0f);
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_EQ(c.bos_token_id, 2);
  EXPECT_EQ(c.eos_token_ids, (std::vector<int64_t>{1, 106}));  // eos, then eot

  // The 27B (62 layers): scale by (hidden_size / heads)^-0.5 = 168^-0.5, as llama.cpp does.
  EXPECT_EQ(written(gemma3_gguf(62, 5376, 32, 128), dir).attention_scale, inv_sqrt(168));

  // A window pattern and local theta given in the file win over llama.cpp's constants.
  GgufWriter w = gemma3_gguf(6, 3840, 16, 256);
  w.add("gemma3.attention.sliding_window_pattern", uint32_t{3});
  w.add("gemma3.rope.freq_base_swa", 20000.0f);
  const ModelConfig p = written(w, dir);
  EXPECT_EQ(windows(p), (std::vector<int>{1024, 1024, 0, 1024, 1024, 0}));
  EXPECT_EQ(p.layers[0].rope.theta, 20000.0);
  GgufWriter flags = gemma3_gguf(3, 3840, 16, 256);
  flags.add("gemma3.attention.sliding_window_pattern",
            GgufArray{std::vector<bool>{false, true, true}});
  EXPECT_EQ(windows(written(flags, dir)), (std::vector<int>{0, 1024, 1024}));
}

TEST(ModelConfigGguf, Qwen2BiasesFromTheTensors) {
  const TestDir dir;
  GgufWriter w;
  w.add("general.architecture", std::string("qwen2"));
  w.add("qwen2.block_count", uint32_t{2});
  w.add("qwen2.context_length", uint32_t{32768});
  w.add("qwen2.embedding_length", uint32_t{128});
  w.add("qwen2.feed_forward_length", uint32_t{256});
  w.add("qwen2.attention.head_count", uint32_t{4});
  w.add("qwen2.attention.head_count_kv", uint32_t{2});
  w.add("qwen2.rope.freq_base", 1000000.0f);
  w.add("qwen2.attention.layer_norm_rms_epsilon", 1e-6f);
  w.add("qwen2.vocab_size", uint32_t{1000});
  w.add_tensor("blk.0.attn_q.bias", mlxn::GgmlType::f32, {128}, f32_bytes(std::vector<float>(128)));
  const ModelConfig c = written(w, dir);
  EXPECT_EQ(c.arch, Architecture::qwen2);
  EXPECT_EQ(c.vocab_size, 1000);
  EXPECT_EQ(c.head_dim, 32);
  EXPECT_TRUE(c.qkv_bias);
  EXPECT_FALSE(c.o_bias);
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_EQ(c.layers[1].rope.pairing, RopePairing::half);
  EXPECT_EQ(c.layers[1].rope.theta, 1e6);
  EXPECT_EQ(gguf_tensor_name(c, TensorRole::attn_k_bias, 1), "blk.1.attn_k.bias");
}

TEST(ModelConfigGguf, Errors) {
  const TestDir dir;
  GgufWriter phi;
  phi.add("general.architecture", std::string("phi3"));
  EXPECT_TRUE(throws_error(
      [&] { written(phi, dir); }, "[model]",
      {"general.architecture 'phi3' is not supported", "llama, qwen2, qwen3, gemma3"}));
  GgufWriter none;
  none.add("llama.block_count", uint32_t{2});
  EXPECT_TRUE(throws_error([&] { written(none, dir); }, "[model]",
                           {"GGUF key 'general.architecture' is missing"}));

  const std::vector<float> factors(16, 1.0f);
  GgufWriter w;
  w.add("general.architecture", std::string("llama"));
  w.add("llama.embedding_length", uint32_t{256});
  w.add("llama.feed_forward_length", uint32_t{512});
  EXPECT_TRUE(throws_error([&] { written(w, dir); }, "[model]",
                           {"model.gguf: GGUF key 'llama.block_count' is missing"}));

  GgufWriter yarn = llama_gguf(factors);
  yarn.add("llama.rope.scaling.type", std::string("yarn"));
  EXPECT_TRUE(throws_error([&] { written(yarn, dir); }, "[model]",
                           {"GGUF key 'llama.rope.scaling.type' 'yarn' is not supported"}));

  GgufWriter heads = llama_gguf(factors);
  heads.add("llama.attention.key_length", uint32_t{32});
  heads.add("llama.attention.value_length", uint32_t{64});
  EXPECT_TRUE(throws_error([&] { written(heads, dir); }, "[model]",
                           {"'llama.attention.value_length' 64 differs from the key length 32"}));

  EXPECT_TRUE(throws_error([&] { written(llama_gguf(std::vector<float>(16, -1.0f)), dir); },
                           "[model]", {"tensor 'rope_freqs.weight' holds a factor"}));

  GgufWriter kv = gemma3_gguf(6, 3840, 16, 256);
  kv.add("gemma3.attention.sliding_window_pattern", GgufArray{std::vector<bool>{true, false}});
  EXPECT_TRUE(throws_error([&] { written(kv, dir); }, "[model]",
                           {"'gemma3.attention.sliding_window_pattern' has 2 entries for "
                            "gemma3.block_count 6"}));
}

}  // namespace
