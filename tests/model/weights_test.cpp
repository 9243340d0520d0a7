// Loading a model's weights by role: tiny checkpoints written here (dense, sharded, MLX-quantized,
// GGUF) for llama-, qwen3- and gemma3-like configs, every role's shape, format and values checked
// after the load, and broken checkpoints whose errors must name the tensor at fault.
#include "mlxn/model/weights.h"

#include <gtest/gtest.h>

#include <cstring>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "inspect_command.h"
#include "io/io_test_util.h"
#include "mlxn/core/float_types.h"
#include "mlxn/io/gguf.h"
#include "mlxn/io/hf_config.h"
#include "mlxn/io/safetensors.h"
#include "mlxn/model/tensor_names.h"
#include "support/support.h"

namespace {

using mlxn::Buffer;
using mlxn::DType;
using mlxn::Shape;
using mlxn::Stream;
using mlxn::Weight;
using mlxn::WeightFormat;
using mlxn::io::HfConfig;
using mlxn::io::TensorToWrite;
using mlxn::model::LayerWeights;
using mlxn::model::ModelConfig;
using mlxn::model::ModelWeights;
using mlxn::model::TensorRole;
using mlxn::test::TestDir;
using mlxn::test::throws_error;
using json = nlohmann::json;

// hidden 64, heads 4, kv heads 2, head_dim 16, intermediate 128, vocab 100, 2 layers.
json base_config(const char* architecture) {
  return json{{"architectures", {architecture}},
              {"hidden_size", 64},
              {"intermediate_size", 128},
              {"num_hidden_layers", 2},
              {"num_attention_heads", 4},
              {"num_key_value_heads", 2},
              {"head_dim", 16},
              {"vocab_size", 100},
              {"rms_norm_eps", 1e-6}};
}

json llama_config() {
  json c = base_config("LlamaForCausalLM");
  c["tie_word_embeddings"] = false;
  return c;
}
json qwen3_config() {
  json c = base_config("Qwen3ForCausalLM");
  c["tie_word_embeddings"] = true;
  return c;
}
json gemma3_config() {
  json c = base_config("Gemma3ForCausalLM");
  c["tie_word_embeddings"] = true;
  c["query_pre_attn_scalar"] = 16;
  return c;
}

// The expected shape of each role, written out independently of the loader.
Shape expected_shape(TensorRole role) {
  switch (role) {
    case TensorRole::embed:
    case TensorRole::lm_head:
      return {100, 64};
    case TensorRole::attn_q:
      return {64, 64};
    case TensorRole::attn_k:
    case TensorRole::attn_v:
      return {32, 64};
    case TensorRole::attn_o:
      return {64, 64};
    case TensorRole::ffn_gate:
    case TensorRole::ffn_up:
      return {128, 64};
    case TensorRole::ffn_down:
      return {64, 128};
    case TensorRole::q_norm:
    case TensorRole::k_norm:
      return {16};
    default:
      return {64};
  }
}

bool is_matrix(TensorRole role) { return expected_shape(role).size() == 2; }

// Distinct, exactly representable values per tensor.
std::vector<float> make_values(int64_t count, int seed) {
  std::vector<float> v(static_cast<size_t>(count));
  for (int64_t i = 0; i < count; ++i) {
    v[static_cast<size_t>(i)] = static_cast<float>((i * 37 + seed * 11) % 61 - 30) / 16.0f;
  }
  return v;
}

struct RoleKey {
  TensorRole role;
  int64_t layer;
  bool operator<(const RoleKey& o) const {
    return role != o.role ? role < o.role : layer < o.layer;
  }
};

// A tiny checkpoint and the values each role must load as.
struct WrittenModel {
  ModelConfig config;
  HfConfig hf;
  std::map<RoleKey, std::vector<float>> expected;
};

struct WriteOptions {
  int bits = 0;  // MLX-quantize every matrix, group 32
  bool sharded = false;
  // Edits the list of tensors before it is written (drop one, change a shape).
  std::function<void(std::vector<TensorToWrite>&)> edit;
};

using EditFn = std::function<void(std::vector<TensorToWrite>&)>;
WriteOptions options_with(int bits, bool sharded = false, EditFn edit = {}) {
  WriteOptions o;
  o.bits = bits;
  o.sharded = sharded;
  o.edit = std::move(edit);
  return o;
}

WrittenModel write_hf_model(const TestDir& dir, json config_json, const WriteOptions& options) {
  const Stream& cpu = mlxn::test::cpu_stream();
  if (options.bits != 0) config_json["quantization"] = {{"group_size", 32}, {"bits", options.bits}};
  mlxn::test::write_text(dir.file("config.json"), config_json.dump());
  HfConfig hf = HfConfig::load(dir.file("config.json"));
  WrittenModel out{mlxn::model::from_hf_config(hf), hf, {}};
  const ModelConfig& c = out.config;

  std::vector<TensorToWrite> tensors;
  int seed = 0;
  const auto add = [&](TensorRole role, int64_t layer) {
    const std::string name = mlxn::model::hf_tensor_name(c, role, layer);
    const Shape shape = expected_shape(role);
    const std::vector<float> values = make_values(mlxn::shape_numel(shape), ++seed);
    Buffer w = Buffer::from_host(std::span<const float>(values), shape, DType::f32, cpu);
    if (options.bits == 0 || !is_matrix(role)) {
      tensors.push_back(TensorToWrite::from_buffer(name, w));
      out.expected[{role, layer}] = values;
      return;
    }
    const Weight q = mlxn::quantize_mlx_affine(w, options.bits, 32, cpu);
    Buffer deq = Buffer::empty(shape, DType::f32, cpu);
    mlxn::dequantize(q, deq, cpu);
    out.expected[{role, layer}] = deq.to_host<float>(cpu);
    const std::string module = name.substr(0, name.size() - std::string(".weight").size());
    tensors.push_back(TensorToWrite::from_buffer(name, q.data()));
    tensors.push_back(TensorToWrite::from_buffer(module + ".scales", q.scales()));
    tensors.push_back(TensorToWrite::from_buffer(module + ".biases", q.biases()));
  };
  for (TensorRole role : mlxn::model::global_tensor_roles(c)) add(role, -1);
  for (int64_t i = 0; i < c.num_layers; ++i) {
    for (TensorRole role : mlxn::model::layer_tensor_roles(c)) add(role, i);
  }
  // Tensors of no role, and a known role past the last layer: not read.
  const std::vector<float> extra = make_values(64, 99);
  const Buffer extra_buffer =
      Buffer::from_host(std::span<const float>(extra), {8, 8}, DType::f32, cpu);
  tensors.push_back(TensorToWrite::from_buffer("vision_tower.patch_embed.weight", extra_buffer));
  tensors.push_back(
      TensorToWrite::from_buffer("model.layers.2.self_attn.q_proj.weight", extra_buffer));
  if (options.edit) options.edit(tensors);

  if (!options.sharded) {
    mlxn::io::write_safetensors(dir.file("model.safetensors"), tensors);
    return out;
  }
  std::vector<TensorToWrite> shards[2];
  json weight_map = json::object();
  const char* shard_names[2] = {"model-00001-of-00002.safetensors",
                                "model-00002-of-00002.safetensors"};
  for (size_t i = 0; i < tensors.size(); ++i) {
    shards[i % 2].push_back(tensors[i]);
    weight_map[tensors[i].name] = shard_names[i % 2];
  }
  for (int s = 0; s < 2; ++s) mlxn::io::write_safetensors(dir.file(shard_names[s]), shards[s]);
  mlxn::test::write_text(dir.file("model.safetensors.index.json"),
                         json{{"weight_map", weight_map}}.dump());
  return out;
}

std::vector<float> dequantized(const Weight& w) {
  const Stream& cpu = mlxn::test::cpu_stream();
  Buffer out = Buffer::empty({w.out_features(), w.in_features()}, DType::f32, cpu);
  mlxn::dequantize(w, out, cpu);
  return out.to_host<float>(cpu);
}

// Every role the config gives the model is loaded with the expected shape, format and values;
// roles it does not give are left undefined.
void check_loaded(const WrittenModel& written, const ModelWeights& m, WeightFormat format,
                  int bits = 0) {
  const ModelConfig& c = written.config;
  ASSERT_EQ(m.layers.size(), static_cast<size_t>(c.num_layers));
  for (const auto& [key, values] : written.expected) {
    const std::string what = std::string(mlxn::model::tensor_role_name(key.role)) + " layer " +
                             std::to_string(key.layer);
    if (is_matrix(key.role)) {
      const Weight* w = m.weight(key.role, key.layer);
      ASSERT_TRUE(w != nullptr && w->defined()) << what;
      EXPECT_EQ(w->format(), format) << what;
      EXPECT_EQ(w->out_features(), expected_shape(key.role)[0]) << what;
      EXPECT_EQ(w->in_features(), expected_shape(key.role)[1]) << what;
      if (format == WeightFormat::mlx_affine) {
        EXPECT_EQ(w->bits(), bits) << what;
        EXPECT_EQ(w->group_size(), 32) << what;
      }
      EXPECT_EQ(dequantized(*w), values) << what;
    } else {
      const Buffer* b = m.buffer(key.role, key.layer);
      ASSERT_TRUE(b != nullptr && b->defined()) << what;
      EXPECT_EQ(b->shape(), expected_shape(key.role)) << what;
      EXPECT_EQ(b->to_host<float>(mlxn::test::cpu_stream()), values) << what;
    }
  }
  for (const LayerWeights& l : m.layers) {
    EXPECT_EQ(l.q_norm.defined(), c.qk_norm);
    EXPECT_EQ(l.k_norm.defined(), c.qk_norm);
    EXPECT_EQ(l.post_attn_norm.defined(), c.four_norms);
    EXPECT_EQ(l.post_ffn_norm.defined(), c.four_norms);
    EXPECT_TRUE(l.input_norm.defined());
    EXPECT_TRUE(l.pre_ffn_norm.defined());
    EXPECT_FALSE(l.q_bias.defined() || l.k_bias.defined() || l.v_bias.defined());
    EXPECT_FALSE(l.o_bias.defined() || l.gate_bias.defined());
  }
  ASSERT_TRUE(m.lm_head.defined());
  if (c.tie_word_embeddings) {
    EXPECT_EQ(m.lm_head.data().data(), m.embed.data().data());
    EXPECT_NE(m.describe().find("lm_head: tied to embed"), std::string::npos);
  }
  EXPECT_GT(m.bytes(), 0);
  EXPECT_NE(m.describe().find("attn_q"), std::string::npos);
}

TEST(ModelWeights, LlamaDense) {
  TestDir dir;
  const WrittenModel w = write_hf_model(dir, llama_config(), {});
  ASSERT_FALSE(w.config.tie_word_embeddings);
  const ModelWeights m =
      mlxn::model::load_hf_weights(w.config, w.hf, dir.path().string(), mlxn::test::cpu_stream());
  check_loaded(w, m, WeightFormat::dense);
  EXPECT_NE(m.lm_head.data().data(), m.embed.data().data());
  // Every tensor is f32 here: the sum of the roles' element counts, times 4.
  int64_t elements = 0;
  for (const auto& [key, values] : w.expected) elements += static_cast<int64_t>(values.size());
  EXPECT_EQ(m.bytes(), elements * 4);
}

TEST(ModelWeights, LlamaSharded) {
  TestDir dir;
  const WrittenModel w = write_hf_model(dir, llama_config(), options_with(0, true));
  const ModelWeights m =
      mlxn::model::load_hf_weights(w.config, w.hf, dir.path().string(), mlxn::test::cpu_stream());
  check_loaded(w, m, WeightFormat::dense);
}

TEST(ModelWeights, Qwen3QkNorm) {
  TestDir dir;
  const WrittenModel w = write_hf_model(dir, qwen3_config(), {});
  ASSERT_TRUE(w.config.qk_norm);
  const ModelWeights m =
      mlxn::model::load_hf_weights(w.config, w.hf, dir.path().string(), mlxn::test::cpu_stream());
  check_loaded(w, m, WeightFormat::dense);
  EXPECT_EQ(m.layers[1].k_norm.shape(), (Shape{16}));
}

TEST(ModelWeights, Gemma3FourNormsTied) {
  TestDir dir;
  const WrittenModel w = write_hf_model(dir, gemma3_config(), {});
  ASSERT_TRUE(w.config.four_norms);
  ASSERT_TRUE(w.config.tie_word_embeddings);
  const ModelWeights m =
      mlxn::model::load_hf_weights(w.config, w.hf, dir.path().string(), mlxn::test::cpu_stream());
  check_loaded(w, m, WeightFormat::dense);
}

TEST(ModelWeights, MlxQuantized) {
  for (int bits : {4, 8}) {
    TestDir dir;
    const WrittenModel w = write_hf_model(dir, llama_config(), options_with(bits));
    const ModelWeights m =
        mlxn::model::load_hf_weights(w.config, w.hf, dir.path().string(), mlxn::test::cpu_stream());
    check_loaded(w, m, WeightFormat::mlx_affine, bits);
  }
}

TEST(ModelWeights, MlxQuantizedGemma3Tied) {
  TestDir dir;
  const WrittenModel w = write_hf_model(dir, gemma3_config(), options_with(4));
  const ModelWeights m =
      mlxn::model::load_hf_weights(w.config, w.hf, dir.path().string(), mlxn::test::cpu_stream());
  check_loaded(w, m, WeightFormat::mlx_affine, 4);
}

// Drops the tensor called `name`.
std::function<void(std::vector<TensorToWrite>&)> drop(std::string name) {
  return [name](std::vector<TensorToWrite>& tensors) {
    std::erase_if(tensors, [&](const TensorToWrite& t) { return t.name == name; });
  };
}

TEST(ModelWeights, MissingTensorNamesIt) {
  TestDir dir;
  const WrittenModel w = write_hf_model(
      dir, llama_config(), options_with(0, false, drop("model.layers.1.mlp.up_proj.weight")));
  EXPECT_TRUE(throws_error(
      [&] {
        mlxn::model::load_hf_weights(w.config, w.hf, dir.path().string(), mlxn::test::cpu_stream());
      },
      "[model] ", {"model.layers.1.mlp.up_proj.weight", "ffn_up of layer 1"}));
}

TEST(ModelWeights, WrongShapeNamesExpectedAndFound) {
  TestDir dir;
  const Stream& cpu = mlxn::test::cpu_stream();
  const std::vector<float> values = make_values(16 * 64, 5);
  const Buffer narrow =
      Buffer::from_host(std::span<const float>(values), {16, 64}, DType::f32, cpu);
  const std::string name = "model.layers.0.self_attn.k_proj.weight";
  const WrittenModel w = write_hf_model(
      dir, llama_config(), options_with(0, false, [&](std::vector<TensorToWrite>& tensors) {
        for (TensorToWrite& t : tensors) {
          if (t.name == name) t = TensorToWrite::from_buffer(name, narrow);
        }
      }));
  EXPECT_TRUE(throws_error(
      [&] { mlxn::model::load_hf_weights(w.config, w.hf, dir.path().string(), cpu); }, "[model] ",
      {"model.safetensors: ", name, "attn_k of layer 0", "[16,64]", "expected [32,64]"}));
}

TEST(ModelWeights, WrongDtypeNamesIt) {
  TestDir dir;
  const Stream& cpu = mlxn::test::cpu_stream();
  const std::vector<int32_t> ints(64, 1);
  const Buffer int_norm = Buffer::from_host(std::span<const int32_t>(ints), {64}, DType::i32, cpu);
  const WrittenModel w = write_hf_model(
      dir, llama_config(), options_with(0, false, [&](std::vector<TensorToWrite>& tensors) {
        for (TensorToWrite& t : tensors) {
          if (t.name == "model.norm.weight") {
            t = TensorToWrite::from_buffer(t.name, int_norm);
          }
        }
      }));
  EXPECT_TRUE(
      throws_error([&] { mlxn::model::load_hf_weights(w.config, w.hf, dir.path().string(), cpu); },
                   "[model] ", {"model.norm.weight", "final_norm", "I32"}));
}

TEST(ModelWeights, QuantizedModuleWithoutScales) {
  TestDir dir;
  const WrittenModel w = write_hf_model(
      dir, llama_config(), options_with(4, false, drop("model.layers.0.self_attn.o_proj.scales")));
  EXPECT_TRUE(throws_error(
      [&] {
        mlxn::model::load_hf_weights(w.config, w.hf, dir.path().string(), mlxn::test::cpu_stream());
      },
      "[model] ",
      {"model.layers.0.self_attn.o_proj.scales", "model.layers.0.self_attn.o_proj.weight",
       "attn_o of layer 0", "4-bit"}));
}

TEST(ModelWeights, PackedCodesWithoutQuantizationConfig) {
  TestDir dir;
  const WrittenModel quantized = write_hf_model(dir, llama_config(), options_with(4));
  // The same tensors, but a config.json without its quantization block.
  mlxn::test::write_text(dir.file("config.json"), llama_config().dump());
  const HfConfig plain = HfConfig::load(dir.file("config.json"));
  EXPECT_TRUE(throws_error(
      [&] {
        mlxn::model::load_hf_weights(quantized.config, plain, dir.path().string(),
                                     mlxn::test::cpu_stream());
      },
      "[model] ", {"model.embed_tokens.weight", "U32", "no quantization"}));
}

// ---- GGUF ---------------------------------------------------------------------------------------

TEST(ModelWeights, GgufQ8AndF32) {
  TestDir dir;
  mlxn::test::write_text(dir.file("config.json"), llama_config().dump());
  const ModelConfig c = mlxn::model::from_hf_config(HfConfig::load(dir.file("config.json")));
  mlxn::io::GgufWriter writer;
  writer.add("general.architecture", std::string("llama"));
  std::map<RoleKey, std::vector<float>> expected;
  int seed = 0;
  const auto add = [&](TensorRole role, int64_t layer) {
    const std::string name = mlxn::model::gguf_tensor_name(c, role, layer);
    const Shape shape = expected_shape(role);
    ++seed;
    if (!is_matrix(role)) {
      const std::vector<float> values = make_values(shape[0], seed);
      writer.add_tensor(name, mlxn::GgmlType::f32, {shape[0]}, std::as_bytes(std::span(values)));
      expected[{role, layer}] = values;
      return;
    }
    // Q8_0 blocks of 32: an f16 scale of 0.5, then 32 signed codes.
    const int64_t blocks = shape[0] * shape[1] / 32;
    std::vector<std::byte> bytes(static_cast<size_t>(blocks * 34));
    std::vector<float> values;
    const uint16_t half = mlxn::float_bits::f32_to_f16(0.5f);
    for (int64_t b = 0; b < blocks; ++b) {
      std::byte* block = bytes.data() + b * 34;
      std::memcpy(block, &half, 2);
      for (int j = 0; j < 32; ++j) {
        const auto q = static_cast<int8_t>((b * 7 + j * 3 + seed) % 23 - 11);
        std::memcpy(block + 2 + j, &q, 1);
        values.push_back(0.5f * q);
      }
    }
    writer.add_tensor(name, mlxn::GgmlType::q8_0, {shape[1], shape[0]}, bytes);
    expected[{role, layer}] = values;
  };
  for (TensorRole role : mlxn::model::global_tensor_roles(c)) add(role, -1);
  for (int64_t i = 0; i < c.num_layers; ++i) {
    for (TensorRole role : mlxn::model::layer_tensor_roles(c)) add(role, i);
  }
  writer.write(dir.file("model.gguf"));

  const auto file = mlxn::io::GgufFile::open(dir.file("model.gguf"));
  const ModelWeights m = mlxn::model::load_gguf_weights(c, file, mlxn::test::cpu_stream());
  for (const auto& [key, values] : expected) {
    if (is_matrix(key.role)) {
      const Weight* w = m.weight(key.role, key.layer);
      ASSERT_TRUE(w->defined());
      EXPECT_EQ(w->format(), WeightFormat::q8_0);
      EXPECT_EQ(w->out_features(), expected_shape(key.role)[0]);
      EXPECT_EQ(dequantized(*w), values) << mlxn::model::tensor_role_name(key.role);
    } else {
      const Buffer* b = m.buffer(key.role, key.layer);
      ASSERT_TRUE(b->defined());
      EXPECT_EQ(b->to_host<float>(mlxn::test::cpu_stream()), values);
    }
  }
}

TEST(ModelWeights, GgufWrongShapeAndMissing) {
  TestDir dir;
  mlxn::test::write_text(dir.file("config.json"), llama_config().dump());
  const ModelConfig c = mlxn::model::from_hf_config(HfConfig::load(dir.file("config.json")));
  mlxn::io::GgufWriter writer;
  const std::vector<float> embed = make_values(100 * 32, 1);
  writer.add_tensor("token_embd.weight", mlxn::GgmlType::f32, {32, 100},
                    std::as_bytes(std::span(embed)));
  writer.write(dir.file("bad.gguf"));
  const auto file = mlxn::io::GgufFile::open(dir.file("bad.gguf"));
  EXPECT_TRUE(throws_error(
      [&] { mlxn::model::load_gguf_weights(c, file, mlxn::test::cpu_stream()); }, "[model] ",
      {"bad.gguf: ", "token_embd.weight", "embed", "[100,32]", "expected [100,64]"}));

  mlxn::io::GgufWriter partial;
  const std::vector<float> good = make_values(100 * 64, 1);
  partial.add_tensor("token_embd.weight", mlxn::GgmlType::f32, {64, 100},
                     std::as_bytes(std::span(good)));
  partial.write(dir.file("partial.gguf"));
  const auto partial_file = mlxn::io::GgufFile::open(dir.file("partial.gguf"));
  EXPECT_TRUE(throws_error(
      [&] { mlxn::model::load_gguf_weights(c, partial_file, mlxn::test::cpu_stream()); },
      "[model] ", {"no tensor output_norm.weight", "final_norm"}));
}

}  // namespace

// `mlxn inspect` reads the description and the tensor headers only.
TEST(ModelInspect, DescribesAnMlxDirectory) {
  TestDir dir;
  const WrittenModel w = write_hf_model(dir, llama_config(), options_with(4, true));
  const std::string report = mlxn::cli::inspect_report(dir.path().string());
  for (const char* expected :
       {"(Hugging Face / MLX)", "architecture: llama", "quantization: MLX affine, 4-bit, group 32",
        "in 2 files", "U32:", "F32:"}) {
    EXPECT_NE(report.find(expected), std::string::npos) << expected << "\n" << report;
  }
  // Every written tensor is counted: the roles' (weight, scales, biases for matrices) and the
  // two that belong to no role.
  int64_t tensors = 2;
  for (const auto& [key, values] : w.expected) tensors += is_matrix(key.role) ? 3 : 1;
  EXPECT_NE(report.find("tensors: " + std::to_string(tensors) + " in"), std::string::npos)
      << report;
}

TEST(ModelInspect, AGgufWithoutTheModelKeysNamesTheKey) {
  TestDir dir;
  mlxn::io::GgufWriter writer;
  writer.add("general.architecture", std::string("llama"));
  writer.write(dir.file("model.gguf"));
  EXPECT_TRUE(
      mlxn::test::throws_error([&] { (void)mlxn::cli::inspect_report(dir.file("model.gguf")); },
                               "[model]", {"llama.embedding_length", "missing"}));
  EXPECT_TRUE(mlxn::test::throws_error(
      [&] { (void)mlxn::cli::inspect_report(dir.file("missing.gguf")); }, "", {"missing.gguf"}));
}
