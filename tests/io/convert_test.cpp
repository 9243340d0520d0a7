// HF -> MLX conversion of a tiny synthetic llama-shaped model written by the test: tensor names,
// dtypes and shapes, the config keys mlx-lm writes, sharding, recipes and overrides, that the
// packed codes dequantize to the original weights, and refusals.
#include "mlxn/io/convert.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "io/io_test_util.h"
#include "mlxn/io/safetensors.h"
#include "support/support.h"

namespace {

namespace fs = std::filesystem;
using mlxn::Buffer;
using mlxn::DType;
using mlxn::Shape;
using mlxn::io::ConvertOptions;
using mlxn::io::SafetensorsModel;
using mlxn::test::TestDir;
using mlxn::test::throws_error;
using json = nlohmann::json;

constexpr int64_t kHidden = 64, kInter = 128, kVocab = 40, kKv = 32;

struct TinyModel {
  std::map<std::string, Buffer> tensors;  // the weights as written (CPU)
  std::vector<std::string> quantizable;   // modules the converter should quantize (group 64)
};

// A llama-shaped model: embeddings, per-layer attention (q has a bias) and MLP, norms, lm_head,
// an odd projection whose input dim (48) no group size divides, a rotary buffer, and two
// non-float tensors; weights in two shards with an index unless `single`.
TinyModel write_tiny_model(const fs::path& dir, int layers, bool single = false,
                           bool tied = false) {
  const mlxn::Stream& cpu = mlxn::test::cpu_stream();
  TinyModel m;
  uint64_t seed = 1;
  auto add = [&](const std::string& name, Shape shape, DType dtype = DType::bf16) {
    m.tensors[name] = mlxn::test::random_buffer(shape, dtype, seed++, cpu);
    if (name.ends_with(".weight") && shape.size() == 2 && shape[1] % 64 == 0) {
      m.quantizable.push_back(name.substr(0, name.size() - 7));
    }
  };
  add("model.embed_tokens.weight", {kVocab, kHidden});
  for (int i = 0; i < layers; ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    add(p + "input_layernorm.weight", {kHidden});
    add(p + "post_attention_layernorm.weight", {kHidden});
    add(p + "self_attn.q_proj.weight", {kHidden, kHidden});
    add(p + "self_attn.q_proj.bias", {kHidden});
    add(p + "self_attn.k_proj.weight", {kKv, kHidden});
    add(p + "self_attn.v_proj.weight", {kKv, kHidden});
    add(p + "self_attn.o_proj.weight", {kHidden, kHidden});
    add(p + "self_attn.rotary_emb.inv_freq", {16}, DType::f32);
    add(p + "mlp.gate_proj.weight", {kInter, kHidden});
    add(p + "mlp.up_proj.weight", {kInter, kHidden});
    add(p + "mlp.down_proj.weight", {kHidden, kInter});
  }
  add("model.layers.0.mlp.odd_proj.weight", {8, 48});
  add("model.norm.weight", {kHidden});
  add("lm_head.weight", {kVocab, kHidden});
  const std::vector<int64_t> ids = {0, 1, 2, 3, 4, 5, 6, 7};
  m.tensors["model.position_ids"] =
      Buffer::from_host(std::span<const int64_t>(ids), {1, 8}, DType::i64, cpu);

  std::vector<mlxn::io::TensorToWrite> first, second;
  std::vector<uint8_t> mask = {1, 0, 1, 1};
  json weight_map = json::object();
  size_t i = 0;
  for (const auto& [name, buffer] : m.tensors) {
    const bool in_first = single || i++ % 2 == 0;
    (in_first ? first : second).push_back(mlxn::io::TensorToWrite::from_buffer(name, buffer));
    weight_map[name] =
        in_first ? "model-00001-of-00002.safetensors" : "model-00002-of-00002.safetensors";
  }
  // A dtype we have no element type for travels as bytes.
  second.push_back(mlxn::io::TensorToWrite::from_bytes("model.mask", "BOOL", {4},
                                                       std::as_bytes(std::span(mask))));
  weight_map["model.mask"] = "model-00002-of-00002.safetensors";
  if (single) {
    first.push_back(second.back());
    mlxn::io::write_safetensors((dir / "model.safetensors").string(), first, {{"format", "pt"}});
  } else {
    mlxn::io::write_safetensors((dir / "model-00001-of-00002.safetensors").string(), first);
    mlxn::io::write_safetensors((dir / "model-00002-of-00002.safetensors").string(), second);
    mlxn::test::write_text(
        (dir / "model.safetensors.index.json").string(),
        json{{"metadata", {{"total_size", 0}}}, {"weight_map", weight_map}}.dump());
  }
  mlxn::test::write_text(
      (dir / "config.json").string(),
      R"({"architectures": ["LlamaForCausalLM"], "model_type": "llama",
    "_name_or_path": "tiny/llama", "hidden_size": 64, "num_hidden_layers": )" +
          std::to_string(layers) +
          R"(, "torch_dtype": "bfloat16", "rope_scaling": {"type": "linear", "factor": 2.0},
    "vision_config": {"x": 1}, "rms_norm_eps": 1e-05, "tie_word_embeddings": )" +
          (tied ? "true" : "false") + "}");
  mlxn::test::write_text((dir / "generation_config.json").string(),
                         R"({"bos_token_id": 0, "eos_token_id": [1, 2]})");
  mlxn::test::write_text((dir / "tokenizer.json").string(), R"({"model": {"type": "BPE"}})");
  mlxn::test::write_text((dir / "tokenizer_config.json").string(), "{}");
  mlxn::test::write_text((dir / "special_tokens_map.json").string(), "{}");
  mlxn::test::write_text((dir / "modeling_tiny.py").string(), "# code\n");
  mlxn::test::write_text((dir / "README.md").string(), "# tiny\n");
  return m;
}

json read_json(const fs::path& path) { return json::parse(mlxn::test::read_text(path.string())); }

// The i-th code of a row: a little-endian bit stream, code k at bits [k·bits, (k+1)·bits).
uint32_t code_at(const std::vector<uint32_t>& packed, int64_t row_words, int64_t row, int64_t k,
                 int bits) {
  const auto* bytes = reinterpret_cast<const uint8_t*>(packed.data() + row * row_words);
  const int64_t bit = k * bits;
  uint32_t window = 0;
  for (int64_t b = 0; b < 3 && bit / 8 + b < row_words * 4; ++b) {
    window |= static_cast<uint32_t>(bytes[bit / 8 + b]) << (8 * b);
  }
  return (window >> (bit % 8)) & ((1u << bits) - 1u);
}

// w ≈ scale·q + bias: within half a step for codes below the top one. The top code may be
// clamped (MLX anchors the grid on the larger edge and rescales, which can push the far edge up
// to one step past the top code), so there it is within one step. Scales and biases are stored
// rounded to their dtype, which adds u·(|scale|·q + |bias|) per element.
void expect_dequantizes(const SafetensorsModel& out, const std::string& module,
                        const Buffer& original, int bits, int group, DType scale_dtype) {
  const mlxn::Stream& cpu = mlxn::test::cpu_stream();
  SCOPED_TRACE(module);
  const Buffer packed = out.load(module + ".weight", cpu);
  const Buffer scales = out.load(module + ".scales", cpu);
  const Buffer biases = out.load(module + ".biases", cpu);
  const int64_t n = original.dim(0), k = original.dim(1);
  ASSERT_EQ(packed.dtype(), DType::u32);
  ASSERT_EQ(packed.shape(), (Shape{n, k * bits / 32}));
  ASSERT_EQ(scales.shape(), (Shape{n, k / group}));
  ASSERT_EQ(scales.dtype(), scale_dtype);
  ASSERT_EQ(biases.dtype(), scale_dtype);
  const auto codes = packed.to_host<uint32_t>(cpu);
  const auto s = mlxn::test::to_f64(scales, cpu);
  const auto b = mlxn::test::to_f64(biases, cpu);
  const auto w = mlxn::test::to_f64(original, cpu);
  const double u = mlxn::test::unit_roundoff(scale_dtype);
  const uint32_t top = (1u << bits) - 1u;
  std::vector<double> actual(w.size()), bound(w.size());
  for (int64_t r = 0; r < n; ++r) {
    for (int64_t c = 0; c < k; ++c) {
      const size_t g = static_cast<size_t>(r * (k / group) + c / group);
      const uint32_t q = code_at(codes, k * bits / 32, r, c, bits);
      const size_t i = static_cast<size_t>(r * k + c);
      actual[i] = s[g] * q + b[g];
      const double step = std::abs(s[g]) * (1 + u);
      bound[i] = (q < top ? 0.5 : 1.0) * step + u * (std::abs(s[g]) * q + std::abs(b[g])) + 1e-6;
    }
  }
  EXPECT_TRUE(mlxn::test::all_within(actual, w, bound, original.shape()));
}

Buffer cast_to(const Buffer& b, DType dtype) {
  const mlxn::Stream& cpu = mlxn::test::cpu_stream();
  Buffer out = Buffer::empty(b.shape(), dtype, cpu);
  mlxn::cast(b, out, cpu);
  return out;
}

bool mlx_has_scales(const fs::path& out, const std::string& module) {
  return SafetensorsModel::open_dir(out.string()).contains(module + ".scales");
}

ConvertOptions quiet(ConvertOptions o) {
  o.show_progress = false;
  return o;
}

TEST(Convert, Quantize4BitLikeMlxLm) {
  TestDir dir;
  const fs::path in = dir.path() / "hf", out = dir.path() / "mlx";
  fs::create_directories(in);
  const TinyModel model = write_tiny_model(in, 2);
  ConvertOptions o;
  o.quantize = true;
  const auto result = mlxn::io::convert_hf_to_mlx(in.string(), out.string(), quiet(o));

  // Files: one weight file (small model), the index, config and the tokenizer/generation files.
  std::set<std::string> files;
  for (const auto& e : fs::directory_iterator(out)) files.insert(e.path().filename().string());
  EXPECT_EQ(files, (std::set<std::string>{"model.safetensors", "model.safetensors.index.json",
                                          "config.json", "generation_config.json", "tokenizer.json",
                                          "tokenizer_config.json", "special_tokens_map.json",
                                          "modeling_tiny.py"}));
  EXPECT_EQ(mlxn::test::read_text((out / "tokenizer.json").string()),
            mlxn::test::read_text((in / "tokenizer.json").string()));

  const SafetensorsModel mlx = SafetensorsModel::open_dir(out.string());
  EXPECT_EQ(mlx.files()[0].metadata(), (std::map<std::string, std::string>{{"format", "mlx"}}));
  // .scales exists exactly for the quantizable modules; everything else keeps its name.
  std::set<std::string> expected_names;
  for (const auto& [name, b] : model.tensors) {
    if (name.find("rotary_emb.inv_freq") != std::string::npos) continue;  // dropped, as mlx-lm
    expected_names.insert(name);
  }
  expected_names.insert("model.mask");
  for (const std::string& m : model.quantizable) {
    expected_names.insert(m + ".scales");
    expected_names.insert(m + ".biases");
  }
  EXPECT_EQ(std::set<std::string>(mlx.names().begin(), mlx.names().end()), expected_names);
  EXPECT_EQ(result.quantized_modules, static_cast<int64_t>(model.quantizable.size()));
  EXPECT_EQ(result.tensors_written, static_cast<int64_t>(expected_names.size()));

  const mlxn::Stream& cpu = mlxn::test::cpu_stream();
  for (const std::string& m : model.quantizable) {
    expect_dequantizes(mlx, m, model.tensors.at(m + ".weight"), 4, 64, DType::bf16);
  }
  // Unquantized tensors: same dtype and bytes.
  for (const char* name : {"model.norm.weight", "model.layers.1.self_attn.q_proj.bias",
                           "model.layers.0.mlp.odd_proj.weight", "model.position_ids"}) {
    EXPECT_TRUE(mlxn::test::same_bits(mlx.load(name, cpu), model.tensors.at(name), cpu, cpu))
        << name;
  }
  EXPECT_EQ(mlx.at("model.mask").dtype_name, "BOOL");
  EXPECT_EQ(mlx.at("model.layers.0.mlp.odd_proj.weight").dtype_name, "BF16");

  // config.json as mlx-lm writes it.
  const json cfg = read_json(out / "config.json");
  const json quant = {{"group_size", 64}, {"bits", 4}, {"mode", "affine"}};
  EXPECT_EQ(cfg["quantization"], quant);
  EXPECT_EQ(cfg["quantization_config"], quant);
  EXPECT_FALSE(cfg.contains("_name_or_path"));
  EXPECT_FALSE(cfg.contains("vision_config"));
  EXPECT_EQ(cfg["eos_token_id"], json::array({1, 2}));
  EXPECT_EQ(cfg["rope_scaling"]["factor"], 2.0);
  EXPECT_EQ(cfg["torch_dtype"], "bfloat16");
  const std::string text = mlxn::test::read_text((out / "config.json").string());
  EXPECT_EQ(text.rfind("{\n    \"architectures\": [", 0), 0u) << text;  // sorted, indent 4
  EXPECT_LT(text.find("\"bits\": 4"), text.find("\"mode\": \"affine\""));

  // The index: every tensor, sorted, and the totals.
  const json index = read_json(out / "model.safetensors.index.json");
  EXPECT_EQ(index["weight_map"].size(), expected_names.size());
  for (const auto& [name, file] : index["weight_map"].items()) EXPECT_EQ(file, "model.safetensors");
  EXPECT_EQ(index["metadata"]["total_size"].get<int64_t>(), mlx.total_bytes());
  EXPECT_EQ(index["metadata"]["total_size"].get<int64_t>(), result.bytes_written);
  int64_t params = 4;  // the mask
  for (const auto& [name, b] : model.tensors) {
    if (name.find("inv_freq") == std::string::npos) params += b.numel();
  }
  EXPECT_EQ(index["metadata"]["total_parameters"].get<int64_t>(), params);
  EXPECT_EQ(result.parameters, params);

  // What the config says agrees with the files.
  const auto q = mlxn::io::HfConfig::load((out / "config.json").string()).quantization();
  ASSERT_TRUE(q.has_value());
  for (const std::string& m : model.quantizable) {
    EXPECT_EQ(q->for_module(m), (mlxn::io::QuantSpec{64, 4, "affine"}));
  }
}

TEST(Convert, MixedRecipeFollowsMlxLm) {
  TestDir dir;
  const fs::path in = dir.path() / "hf", out = dir.path() / "mlx";
  fs::create_directories(in);
  const TinyModel model = write_tiny_model(in, 8, /*single=*/true);
  ConvertOptions o;
  o.quantize = true;
  o.recipe = "mixed_3_6";
  mlxn::io::convert_hf_to_mlx(in.string(), out.string(), quiet(o));
  const SafetensorsModel mlx = SafetensorsModel::open_dir(out.string());
  const json quant = read_json(out / "config.json")["quantization"];
  EXPECT_EQ(quant["bits"], 4);  // the global figure stays the default, as in mlx-lm
  // 8 layers: layers 0, 3, 6, 7 get 6 bits on v_proj and down_proj; lm_head 6; others 3.
  const std::set<int> more = {0, 3, 6, 7};
  for (const std::string& m : model.quantizable) {
    int bits = 3;
    const bool v_or_down =
        m.find("v_proj") != std::string::npos || m.find("down_proj") != std::string::npos;
    if (v_or_down && more.count(std::stoi(m.substr(13))) > 0) bits = 6;
    if (m == "lm_head") bits = 6;
    EXPECT_EQ(quant[m], (json{{"group_size", 64}, {"bits", bits}, {"mode", "affine"}})) << m;
    expect_dequantizes(mlx, m, model.tensors.at(m + ".weight"), bits, 64, DType::bf16);
  }
  EXPECT_EQ(quant.size(), 3 + model.quantizable.size());
}

TEST(Convert, OverridesDtypeAndSharding) {
  TestDir dir;
  const fs::path in = dir.path() / "hf", out = dir.path() / "mlx";
  fs::create_directories(in);
  const TinyModel model = write_tiny_model(in, 2);
  ConvertOptions o;
  o.quantize = true;
  o.bits = 3;
  o.group_size = 32;
  o.dtype = DType::f32;
  // The last matching override wins.
  o.overrides = {mlxn::io::parse_quant_override("lm_head=8:64"),
                 mlxn::io::parse_quant_override("layers.*.mlp.down_proj=none"),
                 mlxn::io::parse_quant_override("model.layers.1.mlp.*=5"),
                 mlxn::io::parse_quant_override("model.layers.1.mlp.up_proj=6"),
                 mlxn::io::parse_quant_override("model.layers.1.mlp.down_proj=4:128"),
                 mlxn::io::parse_quant_override("model.embed_tokens=8:128")};
  o.max_shard_bytes = 40000;
  const auto result = mlxn::io::convert_hf_to_mlx(in.string(), out.string(), quiet(o));

  const json quant = read_json(out / "config.json")["quantization"];
  EXPECT_EQ(quant["group_size"], 32);
  EXPECT_EQ(quant["bits"], 3);
  EXPECT_EQ(quant["lm_head"], (json{{"group_size", 64}, {"bits", 8}, {"mode", "affine"}}));
  EXPECT_EQ(quant["model.layers.0.mlp.down_proj"], false);
  EXPECT_EQ(quant["model.layers.1.mlp.down_proj"],
            (json{{"group_size", 128}, {"bits", 4}, {"mode", "affine"}}));
  // Its input dim (64) is no multiple of 128: it stays dense, as mlx-lm leaves such modules.
  EXPECT_FALSE(quant.contains("model.embed_tokens"));
  EXPECT_FALSE(mlx_has_scales(out, "model.embed_tokens"));
  EXPECT_EQ(quant["model.layers.1.mlp.gate_proj"],
            (json{{"group_size", 32}, {"bits", 5}, {"mode", "affine"}}));
  EXPECT_EQ(quant["model.layers.1.mlp.up_proj"],
            (json{{"group_size", 32}, {"bits", 6}, {"mode", "affine"}}));
  EXPECT_FALSE(quant.contains("model.layers.0.mlp.gate_proj"));  // the global choice

  const SafetensorsModel mlx = SafetensorsModel::open_dir(out.string());
  EXPECT_GT(mlx.files().size(), 2u);
  const json index = read_json(out / "model.safetensors.index.json");
  const size_t shards = mlx.files().size();
  for (size_t i = 0; i < shards; ++i) {
    char name[64];
    std::snprintf(name, sizeof name, "model-%05zu-of-%05zu.safetensors", i + 1, shards);
    EXPECT_EQ(fs::path(mlx.files()[i].path()).filename().string(), name);
    int64_t bytes = 0;
    for (const auto& t : mlx.files()[i].tensors()) {
      bytes += t.nbytes;
      EXPECT_EQ(index["weight_map"][t.name], name) << t.name;
    }
    EXPECT_TRUE(bytes <= o.max_shard_bytes || mlx.files()[i].tensors().size() == 1) << name;
  }
  EXPECT_EQ(index["metadata"]["total_size"].get<int64_t>(), mlx.total_bytes());
  EXPECT_EQ(result.files.size(), shards + 1 + 1 + 5);

  // Everything floating is f32 now; the quantized modules dequantize from the f32 weights.
  const mlxn::Stream& cpu = mlxn::test::cpu_stream();
  EXPECT_EQ(mlx.at("model.norm.weight").dtype_name, "F32");
  EXPECT_EQ(mlx.at("model.layers.0.mlp.down_proj.weight").dtype_name, "F32");
  EXPECT_FALSE(mlx.contains("model.layers.0.mlp.down_proj.scales"));
  EXPECT_TRUE(mlxn::test::same_bits(
      mlx.load("model.layers.0.mlp.down_proj.weight", cpu),
      cast_to(model.tensors.at("model.layers.0.mlp.down_proj.weight"), DType::f32), cpu, cpu));
  EXPECT_EQ(mlx.at("model.position_ids").dtype_name, "I64");
  EXPECT_EQ(mlx.at("model.layers.0.mlp.odd_proj.weight").dtype_name, "F32");  // 48 % 32 != 0
  const auto f32 = [&](const std::string& m) {
    return cast_to(model.tensors.at(m + ".weight"), DType::f32);
  };
  expect_dequantizes(mlx, "lm_head", f32("lm_head"), 8, 64, DType::f32);
  expect_dequantizes(mlx, "model.layers.1.mlp.down_proj", f32("model.layers.1.mlp.down_proj"), 4,
                     128, DType::f32);
  expect_dequantizes(mlx, "model.layers.1.mlp.up_proj", f32("model.layers.1.mlp.up_proj"), 6, 32,
                     DType::f32);
  expect_dequantizes(mlx, "model.layers.1.mlp.gate_proj", f32("model.layers.1.mlp.gate_proj"), 5,
                     32, DType::f32);
  expect_dequantizes(mlx, "model.layers.0.self_attn.q_proj", f32("model.layers.0.self_attn.q_proj"),
                     3, 32, DType::f32);
  EXPECT_EQ(mlx.at("model.embed_tokens.weight").dtype_name, "F32");
}

TEST(Convert, WithoutQuantizationCastsOnly) {
  TestDir dir;
  const fs::path in = dir.path() / "hf", out = dir.path() / "mlx";
  fs::create_directories(in);
  const TinyModel model = write_tiny_model(in, 1, false, /*tied=*/true);
  ConvertOptions o;
  o.dtype = DType::f16;
  mlxn::io::convert_hf_to_mlx(in.string(), out.string(), quiet(o));
  const SafetensorsModel mlx = SafetensorsModel::open_dir(out.string());
  const mlxn::Stream& cpu = mlxn::test::cpu_stream();
  EXPECT_FALSE(mlx.contains("lm_head.weight"));  // tied: the embedding serves as the head
  for (const auto& [name, b] : model.tensors) {
    if (name == "lm_head.weight" || name.find("inv_freq") != std::string::npos) continue;
    const Buffer expected = is_floating(b.dtype()) ? cast_to(b, DType::f16) : b;
    EXPECT_TRUE(mlxn::test::same_bits(mlx.load(name, cpu), expected, cpu, cpu)) << name;
  }
  const json cfg = read_json(out / "config.json");
  EXPECT_FALSE(cfg.contains("quantization"));
  EXPECT_FALSE(cfg.contains("quantization_config"));
}

TEST(Convert, RefusesToOverwriteAndBadInput) {
  TestDir dir;
  const fs::path in = dir.path() / "hf", out = dir.path() / "mlx";
  fs::create_directories(in);
  write_tiny_model(in, 1, true);
  ConvertOptions o = quiet({});
  o.quantize = true;

  fs::create_directories(out);
  mlxn::test::write_text((out / "notes.txt").string(), "keep me");
  mlxn::test::write_text((out / "model-00001-of-00009.safetensors").string(), "stale");
  EXPECT_TRUE(throws_error([&] { mlxn::io::convert_hf_to_mlx(in.string(), out.string(), o); },
                           "[convert]", {out.string(), "not empty", "--force"}));
  EXPECT_FALSE(fs::exists(out / "config.json"));
  o.force = true;
  mlxn::io::convert_hf_to_mlx(in.string(), out.string(), o);
  EXPECT_FALSE(fs::exists(out / "model-00001-of-00009.safetensors"));  // stale shard removed
  EXPECT_EQ(mlxn::test::read_text((out / "notes.txt").string()), "keep me");
  EXPECT_TRUE(fs::exists(out / "model.safetensors"));
  for (const auto& e : fs::directory_iterator(out)) {
    EXPECT_FALSE(e.path().string().ends_with(".partial")) << e.path();
  }

  EXPECT_TRUE(throws_error([&] { mlxn::io::convert_hf_to_mlx(in.string(), in.string(), o); },
                           "[convert]", {"is the input directory"}));
  // An MLX model (the output) is already quantized.
  EXPECT_TRUE(throws_error(
      [&] { mlxn::io::convert_hf_to_mlx(out.string(), (dir.path() / "again").string(), o); },
      "[convert]", {"quantized"}));
  EXPECT_FALSE(fs::exists(dir.path() / "again"));
  EXPECT_TRUE(throws_error(
      [&] { mlxn::io::convert_hf_to_mlx((dir.path() / "nope").string(), out.string(), o); },
      "[convert]", {"nope", "not a directory"}));
  fs::remove(in / "config.json");
  EXPECT_TRUE(throws_error([&] { mlxn::io::convert_hf_to_mlx(in.string(), out.string(), o); },
                           "[convert]", {"no config.json"}));
}

TEST(Convert, BadOptions) {
  TestDir dir;
  const fs::path in = dir.path() / "hf", out = dir.path() / "mlx";
  fs::create_directories(in);
  write_tiny_model(in, 1, true);
  auto run = [&](ConvertOptions o) {
    mlxn::io::convert_hf_to_mlx(in.string(), out.string(), quiet(o));
  };
  ConvertOptions o;
  o.quantize = true;
  o.bits = 7;
  EXPECT_TRUE(throws_error([&] { run(o); }, "[convert]", {"bits 7"}));
  o.bits = 4;
  o.group_size = 48;
  EXPECT_TRUE(throws_error([&] { run(o); }, "[convert]", {"group size 48"}));
  o.group_size = 64;
  o.recipe = "mixed_5_9";
  EXPECT_TRUE(throws_error([&] { run(o); }, "[convert]", {"'mixed_5_9'"}));
  o.recipe.clear();
  o.dtype = DType::i32;
  EXPECT_TRUE(throws_error([&] { run(o); }, "[convert]", {"i32"}));
  o.dtype.reset();
  o.overrides = {{"lm_head", true, 9, 0}};
  EXPECT_TRUE(throws_error([&] { run(o); }, "[convert]", {"'lm_head'", "bits 9"}));
  ConvertOptions plain;
  plain.recipe = "mixed_4_6";
  EXPECT_TRUE(throws_error([&] { run(plain); }, "[convert]", {"quantization"}));
  EXPECT_FALSE(fs::exists(out));

  // The recipe needs num_hidden_layers and down_proj layers.
  mlxn::test::write_text((in / "config.json").string(), R"({"torch_dtype": "bfloat16"})");
  ConvertOptions mixed;
  mixed.quantize = true;
  mixed.recipe = "mixed_4_6";
  EXPECT_TRUE(throws_error([&] { run(mixed); }, "[convert]", {"num_hidden_layers"}));
}

TEST(Convert, ParseOverrideAndPatterns) {
  const auto a = mlxn::io::parse_quant_override("lm_head=6");
  EXPECT_EQ(a.pattern, "lm_head");
  EXPECT_TRUE(a.quantize);
  EXPECT_EQ(a.bits, 6);
  EXPECT_EQ(a.group_size, 0);
  const auto b = mlxn::io::parse_quant_override("layers.*.mlp.down_proj=8:128");
  EXPECT_EQ(b.bits, 8);
  EXPECT_EQ(b.group_size, 128);
  EXPECT_FALSE(mlxn::io::parse_quant_override("embed_tokens=none").quantize);
  EXPECT_FALSE(mlxn::io::parse_quant_override("embed_tokens=false").quantize);
  for (const char* bad : {"lm_head", "=6", "lm_head=", "lm_head=x", "lm_head=7", "lm_head=4:48",
                          "lm_head=4:", "lm_head=-4", "lm_head=99999999"}) {
    EXPECT_TRUE(
        throws_error([&] { (void)mlxn::io::parse_quant_override(bad); }, "[convert]", {"override"}))
        << bad;
  }
  using mlxn::io::module_pattern_matches;
  EXPECT_TRUE(module_pattern_matches("lm_head", "lm_head"));
  EXPECT_FALSE(module_pattern_matches("head", "lm_head"));
  EXPECT_TRUE(module_pattern_matches("down_proj", "model.layers.3.mlp.down_proj"));
  EXPECT_TRUE(module_pattern_matches("layers.*.mlp.down_proj", "model.layers.3.mlp.down_proj"));
  EXPECT_TRUE(module_pattern_matches("model.layers.1?.*", "model.layers.12.self_attn.v_proj"));
  EXPECT_FALSE(module_pattern_matches("model.layers.1?.*", "model.layers.1.self_attn.v_proj"));
  EXPECT_TRUE(module_pattern_matches("*", "model.embed_tokens"));
  EXPECT_FALSE(module_pattern_matches("layers.*.mlp.down_proj", "model.layers.3.mlp.up_proj"));
}

}  // namespace
