// HF -> MLX conversion, matched to what mlx-lm writes (mlx_lm/convert.py and mlx_lm/utils.py:
// convert, quantize_model, save_model, make_shards, save_config, save; mlx/io/safetensors.cpp):
//  - dtype: --dtype, else config.json's torch_dtype (mlx-lm also looks at text_config.dtype; we
//    also accept the top-level "dtype" newer transformers write) when it is float32 / float16 /
//    bfloat16; every floating tensor is cast to it before quantization, so scales and biases
//    come out in that dtype. Without one, tensors keep their own dtype.
//  - which modules: mlx-lm quantizes every module with to_quantized (Linear, Embedding, ...)
//    whose weight's last axis divides by the group size. Without the model classes we take the
//    2-D floating `<module>.weight` tensors (norms are 1-D; a module whose last name part
//    contains "norm" is skipped regardless). Its output: `<module>.weight` U32
//    [out, in·bits/32], `<module>.scales` and `<module>.biases` [out, in/group] in the model
//    dtype. Divisibility is checked against the group size the module actually gets (mlx-lm
//    checks the global one and would fail inside mx.quantize otherwise).
//  - mixed recipes (mixed_2_6, mixed_3_4, mixed_3_6, mixed_4_6) follow mlx-lm's predicate: the
//    high bits for lm_head, and for v_proj / v_a_proj / v_b_proj / down_proj of layers
//    i < n/8, i >= 7n/8 or (i - n/8) % 3 == 2; every quantized module then gets its own entry.
//  - config.json: "quantization" = {"group_size", "bits", "mode": "affine", then per-module
//    {"group_size", "bits", "mode"} entries}, copied to "quantization_config"; "_name_or_path"
//    and "vision_config" removed; generation_config.json's eos_token_id copied in (load_config);
//    top-level keys sorted; 4-space indent, ASCII-escaped, as json.dump writes it. Our overrides
//    that keep a module unquantized are written as `false` (mlx-lm's loader reads that; mlx-lm
//    itself writes nothing for such modules, leaving the missing .scales to say it).
//  - files: one model.safetensors, or model-0000i-of-0000n.safetensors when the tensors pass
//    5 GiB (a shard closes before the tensor that would take it over the limit), always with
//    model.safetensors.index.json {"metadata": {"total_size", "total_parameters"},
//    "weight_map": sorted}; safetensors metadata {"format": "mlx"}. Our headers are padded to 8
//    bytes like the reference writer's; mlx writes them unpadded; readers accept both.
//  - other files: mlx-lm re-saves the tokenizer (save_pretrained) and copies *.py and
//    generation_config.json; we copy the tokenizer files as they are, and write no README model
//    card.
//  - architecture-specific renames in mlx-lm's Model.sanitize are not reproduced, except the
//    common llama-family ones: rotary_emb.inv_freq buffers are dropped, and lm_head.weight is
//    dropped when config.json says tie_word_embeddings: true. Models whose MLX layout differs
//    (stacked MoE experts, fused projections) keep their HF tensor names.
#include "mlxn/io/convert.h"

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <utility>

#include "core/text.h"
#include "io/json_util.h"
#include "io/progress.h"
#include "mlxn/core/buffer.h"
#include "mlxn/core/error.h"
#include "mlxn/core/pool.h"
#include "mlxn/io/safetensors.h"
#include "mlxn/ops/memory.h"
#include "mlxn/ops/weights.h"

namespace mlxn::io {

namespace {

constexpr const char* kOp = "convert";
namespace fs = std::filesystem;
using ordered_json = nlohmann::ordered_json;

// Pieces in which unchanged tensors go from the input mapping to the output file.
constexpr int64_t kCopyChunkBytes = int64_t{64} << 20;

// Copied from the input directory when present (mlx-lm re-saves the tokenizer, which writes
// these same files, and copies generation_config.json and *.py).
constexpr std::string_view kCopiedFiles[] = {"tokenizer.json",
                                             "tokenizer_config.json",
                                             "special_tokens_map.json",
                                             "added_tokens.json",
                                             "tokenizer.model",
                                             "tiktoken.model",
                                             "vocab.json",
                                             "vocab.txt",
                                             "merges.txt",
                                             "chat_template.jinja",
                                             "chat_template.json",
                                             "generation_config.json"};
constexpr std::string_view kCopiedSuffixes[] = {".py", ".tiktoken"};

using text::in_quotes;

// "layers.2" < "layers.10": digit runs compare as numbers, so shards follow the layer order.
bool natural_less(std::string_view a, std::string_view b) {
  size_t i = 0, j = 0;
  while (i < a.size() && j < b.size()) {
    if (std::isdigit(static_cast<unsigned char>(a[i])) &&
        std::isdigit(static_cast<unsigned char>(b[j]))) {
      size_t i2 = i, j2 = j;
      while (i2 < a.size() && std::isdigit(static_cast<unsigned char>(a[i2]))) ++i2;
      while (j2 < b.size() && std::isdigit(static_cast<unsigned char>(b[j2]))) ++j2;
      std::string_view da = a.substr(i, i2 - i), db = b.substr(j, j2 - j);
      while (da.size() > 1 && da[0] == '0') da.remove_prefix(1);
      while (db.size() > 1 && db[0] == '0') db.remove_prefix(1);
      if (da.size() != db.size()) return da.size() < db.size();
      if (da != db) return da < db;
      i = i2;
      j = j2;
    } else {
      if (a[i] != b[j]) return a[i] < b[j];
      ++i;
      ++j;
    }
  }
  if (a.size() - i != b.size() - j) return a.size() - i < b.size() - j;
  return a < b;
}

bool glob_match(std::string_view p, std::string_view s) {
  // Iterative matcher with one backtrack point per '*'.
  size_t pi = 0, si = 0, star = std::string_view::npos, mark = 0;
  while (si < s.size()) {
    if (pi < p.size() && (p[pi] == '?' || p[pi] == s[si])) {
      ++pi;
      ++si;
    } else if (pi < p.size() && p[pi] == '*') {
      star = pi++;
      mark = si;
    } else if (star != std::string_view::npos) {
      pi = star + 1;
      si = ++mark;
    } else {
      return false;
    }
  }
  while (pi < p.size() && p[pi] == '*') ++pi;
  return pi == p.size();
}

int parse_int(std::string_view text, std::string_view what, std::string_view whole) {
  int value = 0;
  if (text.empty() || text.size() > 6) {
    throw Error(kOp, "override " + in_quotes(whole) + ": " + std::string(what) + " " +
                         in_quotes(text) + " is not a number");
  }
  for (char c : text) {
    if (!std::isdigit(static_cast<unsigned char>(c))) {
      throw Error(kOp, "override " + in_quotes(whole) + ": " + std::string(what) + " " +
                           in_quotes(text) + " is not a number");
    }
    value = value * 10 + (c - '0');
  }
  return value;
}

void check_bits(int bits, const std::string& what) {
  if (bits != 2 && bits != 3 && bits != 4 && bits != 5 && bits != 6 && bits != 8) {
    throw Error(
        kOp, what + "bits " + std::to_string(bits) + " unsupported (supported: 2, 3, 4, 5, 6, 8)");
  }
}

void check_group(int group, const std::string& what) {
  if (group != 32 && group != 64 && group != 128) {
    throw Error(kOp, what + "group size " + std::to_string(group) +
                         " unsupported (supported: 32, 64, 128)");
  }
}

// ---- the plan: what each input tensor becomes --------------------------------------------------

struct Source {
  const TensorInfo* info = nullptr;
  std::string module;              // name without ".weight" (quantized tensors only)
  std::optional<DType> float_out;  // dtype a floating tensor is written in (cast when different)
  std::optional<QuantSpec> quant;  // set: written as weight + scales + biases
  bool raw = false;                // bytes copied unchanged (dtypes we have no element type for)
};

enum class Part { whole, packed, scales, biases };

struct Output {
  std::string name, dtype;
  Shape shape;
  int64_t nbytes = 0;
  size_t source = 0;
  Part part = Part::whole;
};

struct Shard {
  std::string file;
  std::vector<size_t> outputs;
};

// One quantized module at a time: its weight, scales and biases are written one after another.
struct QuantCache {
  size_t source = static_cast<size_t>(-1);
  Weight weight;
};

std::optional<int64_t> config_int(const ordered_json& cfg, const char* key) {
  for (const ordered_json* obj :
       {&cfg, cfg.contains("text_config") ? &cfg["text_config"] : nullptr}) {
    if (obj && obj->is_object() && obj->contains(key) && (*obj)[key].is_number_integer()) {
      return (*obj)[key].get<int64_t>();
    }
  }
  return std::nullopt;
}

bool config_true(const ordered_json& cfg, const char* key) {
  for (const ordered_json* obj :
       {&cfg, cfg.contains("text_config") ? &cfg["text_config"] : nullptr}) {
    if (obj && obj->is_object() && obj->contains(key) && (*obj)[key].is_boolean()) {
      return (*obj)[key].get<bool>();
    }
  }
  return false;
}

// mlx-lm's mixed_quant_predicate: which bits a module gets under a recipe.
class Recipe {
 public:
  Recipe(std::string_view name, int group_size, const std::vector<std::string>& modules,
         const ordered_json& cfg, const std::string& dir)
      : group_size_(group_size) {
    if (name == "mixed_2_6") {
      low_ = 2;
    } else if (name == "mixed_3_4") {
      low_ = 3;
      high_ = 4;
    } else if (name == "mixed_3_6") {
      low_ = 3;
    } else if (name == "mixed_4_6") {
      low_ = 4;
    } else {
      throw Error(kOp, "unknown recipe " + in_quotes(name) +
                           " (known: mixed_2_6, mixed_3_4, mixed_3_6, mixed_4_6)");
    }
    // The layer index sits where the first down_proj path has its first number.
    const auto down = std::find_if(modules.begin(), modules.end(), [](const std::string& m) {
      return m.find("down_proj") != std::string::npos;
    });
    if (down == modules.end()) {
      throw Error(kOp,
                  "recipe " + std::string(name) + " needs down_proj layers; " + dir + " has none");
    }
    const std::vector<std::string> parts = split(*down);
    location_ = std::find_if(parts.begin(), parts.end(), is_number) - parts.begin();
    if (location_ == parts.size()) {
      throw Error(kOp, "recipe " + std::string(name) + ": no layer number in " + in_quotes(*down));
    }
    const auto layers = config_int(cfg, "num_hidden_layers");
    if (!layers || *layers <= 0) {
      throw Error(kOp, "recipe " + std::string(name) + " needs num_hidden_layers in config.json");
    }
    layers_ = *layers;
  }

  QuantSpec spec(const std::string& module) const {
    const std::vector<std::string> parts = split(module);
    const int64_t index =
        parts.size() > location_ && is_number(parts[location_]) ? std::stoll(parts[location_]) : 0;
    const int64_t n = layers_;
    const bool more_bits = index < n / 8 || index >= 7 * n / 8 || (index - n / 8) % 3 == 2;
    const auto has = [&](const char* s) { return module.find(s) != std::string::npos; };
    int bits = low_;
    if ((has("v_proj") || has("v_a_proj") || has("v_b_proj")) && more_bits) bits = high_;
    if (has("down_proj") && more_bits) bits = high_;
    if (has("lm_head")) bits = high_;
    return {group_size_, bits, "affine"};
  }

 private:
  static std::vector<std::string> split(const std::string& path) {
    std::vector<std::string> parts;
    size_t start = 0;
    for (size_t dot; (dot = path.find('.', start)) != std::string::npos; start = dot + 1) {
      parts.push_back(path.substr(start, dot - start));
    }
    parts.push_back(path.substr(start));
    return parts;
  }
  static bool is_number(const std::string& s) {
    return !s.empty() && s.size() < 10 && std::all_of(s.begin(), s.end(), [](char c) {
      return std::isdigit(static_cast<unsigned char>(c));
    });
  }

  int group_size_;
  int low_ = 4, high_ = 6;
  size_t location_ = 0;
  int64_t layers_ = 0;
};

void write_text_file(const fs::path& path, const std::string& text) {
  const std::string partial = path.string() + ".partial";
  {
    std::ofstream out(partial, std::ios::binary | std::ios::trunc);
    out.write(text.data(), static_cast<std::streamsize>(text.size()));
    out.close();
    if (!out) {
      std::error_code ec;
      fs::remove(partial, ec);
      throw Error(kOp, "cannot write " + path.string());
    }
  }
  std::error_code ec;
  fs::rename(partial, path, ec);
  if (ec) throw Error(kOp, "cannot rename " + partial + " into place: " + ec.message());
}

void validate_options(const ConvertOptions& o) {
  if (o.quantize) {
    check_bits(o.bits, "");
    check_group(o.group_size, "");
  } else if (!o.recipe.empty() || !o.overrides.empty()) {
    throw Error(kOp, "a recipe or per-module overrides need quantization to be on");
  }
  if (!o.recipe.empty() && std::find(std::begin(kQuantRecipes), std::end(kQuantRecipes),
                                     o.recipe) == std::end(kQuantRecipes)) {
    throw Error(kOp, "unknown recipe " + in_quotes(o.recipe) +
                         " (known: mixed_2_6, mixed_3_4, mixed_3_6, mixed_4_6)");
  }
  for (const QuantOverride& ov : o.overrides) {
    if (ov.pattern.empty()) throw Error(kOp, "an override has an empty pattern");
    if (!ov.quantize) continue;
    if (ov.bits != 0) check_bits(ov.bits, "override " + in_quotes(ov.pattern) + ": ");
    if (ov.group_size != 0) check_group(ov.group_size, "override " + in_quotes(ov.pattern) + ": ");
  }
  if (o.dtype && *o.dtype != DType::f32 && *o.dtype != DType::f16 && *o.dtype != DType::bf16) {
    throw Error(kOp, "output dtype " + std::string(dtype_name(*o.dtype)) +
                         " unsupported (supported: f32, f16, bf16)");
  }
  if (o.max_shard_bytes <= 0) {
    throw Error(kOp, "shard size limit " + std::to_string(o.max_shard_bytes) + " is not positive");
  }
}

void prepare_output_dir(const fs::path& in, const fs::path& out, bool force) {
  std::error_code ec;
  if (fs::exists(out, ec)) {
    if (!fs::is_directory(out, ec))
      throw Error(kOp, out.string() + " exists and is not a directory");
    if (fs::equivalent(in, out, ec)) {
      throw Error(kOp, "the output directory " + out.string() + " is the input directory");
    }
    if (!fs::is_empty(out, ec)) {
      if (!force) {
        throw Error(kOp, "the output directory " + out.string() +
                             " is not empty (use --force to replace the model in it)");
      }
      // Old shards would be picked up next to the new ones by loaders that glob model*.
      for (const auto& entry : fs::directory_iterator(out)) {
        const std::string name = entry.path().filename().string();
        const bool weights =
            name.rfind("model", 0) == 0 &&
            (name.ends_with(".safetensors") || name.ends_with(".safetensors.partial") ||
             name == "model.safetensors.index.json");
        if (weights && entry.is_regular_file()) fs::remove(entry.path());
      }
    }
  }
  fs::create_directories(out, ec);
  if (ec) throw Error(kOp, "cannot create " + out.string() + ": " + ec.message());
}

}  // namespace

QuantOverride parse_quant_override(std::string_view text) {
  const size_t eq = text.rfind('=');
  if (eq == std::string_view::npos || eq == 0 || eq + 1 == text.size()) {
    throw Error(kOp, "override " + in_quotes(text) +
                         " is not PATTERN=BITS, PATTERN=BITS:GROUP or PATTERN=none");
  }
  QuantOverride ov;
  ov.pattern = std::string(text.substr(0, eq));
  const std::string_view value = text.substr(eq + 1);
  if (value == "none" || value == "false") {
    ov.quantize = false;
    return ov;
  }
  const size_t colon = value.find(':');
  ov.bits = parse_int(value.substr(0, colon), "bits", text);
  check_bits(ov.bits, "override " + in_quotes(text) + ": ");
  if (colon != std::string_view::npos) {
    ov.group_size = parse_int(value.substr(colon + 1), "group size", text);
    check_group(ov.group_size, "override " + in_quotes(text) + ": ");
  }
  return ov;
}

bool module_pattern_matches(std::string_view pattern, std::string_view module) {
  if (glob_match(pattern, module)) return true;
  for (size_t dot = module.find('.'); dot != std::string_view::npos;
       dot = module.find('.', dot + 1)) {
    if (glob_match(pattern, module.substr(dot + 1))) return true;
  }
  return false;
}

ConvertResult convert_hf_to_mlx(const std::string& hf_dir, const std::string& out_dir,
                                const ConvertOptions& options) {
  validate_options(options);
  const fs::path in(hf_dir), out(out_dir);
  std::error_code ec;
  if (!fs::is_directory(in, ec)) throw Error(kOp, hf_dir + " is not a directory");
  const fs::path config_path = in / "config.json";
  if (!fs::exists(config_path, ec)) throw Error(kOp, hf_dir + " has no config.json");

  const HfConfig config = HfConfig::load(config_path.string());
  try {
    if (config.quantization()) {
      throw Error(kOp, hf_dir +
                           " holds an MLX-quantized model (config.json has a quantization "
                           "block); convert an unquantized one");
    }
  } catch (const Error& e) {
    if (e.op() == kOp) throw;
    throw Error(kOp, hf_dir + ": cannot convert a quantized model: " + e.what());
  }
  const ordered_json cfg = json_util::read_file_strict(config_path.string(), "config", "config");
  const SafetensorsModel model = SafetensorsModel::open_dir(hf_dir);
  const std::optional<DType> model_dtype = options.dtype ? options.dtype : config.model_dtype();

  // ---- plan every tensor ----------------------------------------------------------------------
  std::vector<std::string> names = model.names();
  std::sort(names.begin(), names.end(),
            [](const std::string& a, const std::string& b) { return natural_less(a, b); });
  // A tied head reads the embedding table; drop a stored copy only when that table is there.
  const bool tied = config_true(cfg, "tie_word_embeddings") &&
                    std::any_of(names.begin(), names.end(), [](const std::string& n) {
                      return n.ends_with("embed_tokens.weight");
                    });
  std::erase_if(names, [&](const std::string& n) {
    return n.find("rotary_emb.inv_freq") != std::string::npos || (tied && n == "lm_head.weight");
  });
  if (names.empty()) throw Error(kOp, hf_dir + " has no tensors to convert");

  std::vector<Source> sources;
  std::vector<std::string> candidate_modules;  // quantizable by shape, in order
  for (const std::string& name : names) {
    Source s;
    s.info = &model.at(name);
    const TensorInfo& t = *s.info;
    if (!t.dtype) {
      const bool floating = t.dtype_name.rfind('F', 0) == 0 || t.dtype_name == "C64";
      if (floating) {
        throw Error(kOp, t.file + ": tensor " + in_quotes(name) + " has dtype " + t.dtype_name +
                             ", which the converter cannot cast (supported: F32 F16 BF16 F8_E4M3 "
                             "F8_E5M2; integer tensors are copied)");
      }
      s.raw = true;
    } else if (is_floating(*t.dtype)) {
      s.float_out = model_dtype ? *model_dtype : *t.dtype;
    }
    if (name.ends_with(".weight") && t.shape.size() == 2 && t.dtype && is_floating(*t.dtype)) {
      s.module = name.substr(0, name.size() - std::string_view(".weight").size());
      const std::string last = s.module.substr(s.module.rfind('.') + 1);
      std::string lower(last);
      std::transform(lower.begin(), lower.end(), lower.begin(),
                     [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
      if (lower.find("norm") != std::string::npos) s.module.clear();
    }
    if (!s.module.empty()) candidate_modules.push_back(s.module);
    sources.push_back(std::move(s));
  }

  const QuantSpec global{options.group_size, options.bits, "affine"};
  std::optional<Recipe> recipe;
  if (options.quantize && !options.recipe.empty()) {
    recipe.emplace(options.recipe, options.group_size, candidate_modules, cfg, hf_dir);
  }
  // Module entries of the config's quantization block, in tensor order.
  std::vector<std::pair<std::string, std::optional<QuantSpec>>> module_entries;
  ConvertResult result;
  for (Source& s : sources) {
    result.parameters += s.info->numel();
    if (!options.quantize || s.module.empty()) continue;
    std::optional<QuantSpec> spec = recipe ? recipe->spec(s.module) : global;
    bool entry = recipe.has_value();
    for (const QuantOverride& ov : options.overrides) {
      if (!module_pattern_matches(ov.pattern, s.module)) continue;
      entry = true;
      if (!ov.quantize) {
        spec.reset();
      } else {
        spec = QuantSpec{ov.group_size ? ov.group_size : options.group_size,
                         ov.bits ? ov.bits : options.bits, "affine"};
      }
    }
    const int64_t in_features = s.info->shape[1];
    if (spec && in_features % spec->group_size != 0) continue;  // not quantizable: stays as is
    if (in_features == 0) continue;
    if (entry) module_entries.emplace_back(s.module, spec);
    if (!spec) continue;
    // Scales come out in the weight's dtype, which must be one quantize_mlx_affine takes: an
    // fp8 weight without a model dtype is quantized from bf16.
    if (*s.float_out != DType::f32 && *s.float_out != DType::f16 && *s.float_out != DType::bf16) {
      s.float_out = DType::bf16;
    }
    s.quant = spec;
  }

  std::vector<Output> outputs;
  for (size_t i = 0; i < sources.size(); ++i) {
    const Source& s = sources[i];
    const TensorInfo& t = *s.info;
    if (s.quant) {
      const int64_t n = t.shape[0], k = t.shape[1];
      const std::string fdt(dtype_to_safetensors(*s.float_out));
      const Shape groups{n, k / s.quant->group_size};
      outputs.push_back(
          {s.module + ".weight", "U32", {n, k * s.quant->bits / 32}, 0, i, Part::packed});
      outputs.push_back({s.module + ".scales", fdt, groups, 0, i, Part::scales});
      outputs.push_back({s.module + ".biases", fdt, groups, 0, i, Part::biases});
      ++result.quantized_modules;
    } else {
      const std::string dt =
          s.float_out ? std::string(dtype_to_safetensors(*s.float_out)) : t.dtype_name;
      outputs.push_back({t.name, dt, t.shape, 0, i, Part::whole});
    }
  }
  int64_t total_bytes = 0;
  for (Output& o : outputs) {
    o.nbytes = safetensors_nbytes(o.dtype, o.shape, "tensor " + in_quotes(o.name));
    total_bytes += o.nbytes;
  }

  // mlx-lm's make_shards: a shard closes before the tensor that would take it past the limit.
  std::vector<Shard> shards(1);
  int64_t shard_bytes = 0;
  for (size_t i = 0; i < outputs.size(); ++i) {
    if (!shards.back().outputs.empty() &&
        shard_bytes + outputs[i].nbytes > options.max_shard_bytes) {
      shards.emplace_back();
      shard_bytes = 0;
    }
    shards.back().outputs.push_back(i);
    shard_bytes += outputs[i].nbytes;
  }
  for (size_t i = 0; i < shards.size(); ++i) {
    if (shards.size() == 1) {
      shards[i].file = "model.safetensors";
    } else {
      char name[64];
      std::snprintf(name, sizeof name, "model-%05zu-of-%05zu.safetensors", i + 1, shards.size());
      shards[i].file = name;
    }
  }

  // ---- write ----------------------------------------------------------------------------------
  prepare_output_dir(in, out, options.force);
  const Stream cpu = default_stream(Device::cpu());
  std::optional<Progress> progress;
  if (options.show_progress) progress.emplace("convert", total_bytes);
  QuantCache cache;
  // Freed blocks stay in the CPU pool's cache; giving them back after each tensor keeps the
  // footprint at one tensor rather than one block of every size the model has.
  auto release_memory = [] { BufferPool::for_device(Device::cpu()).trim(); };

  auto quantized = [&](size_t source) -> const Weight& {
    if (cache.source != source) {
      cache = QuantCache{};
      const Source& s = sources[source];
      Buffer w = model.file_of(*s.info).load(*s.info, cpu);
      if (w.dtype() != *s.float_out) {
        Buffer cast_w = Buffer::empty_exact(w.shape(), *s.float_out, cpu);
        cast(w, cast_w, cpu);
        w = cast_w;
      }
      cache.weight = quantize_mlx_affine(w, s.quant->bits, s.quant->group_size, cpu);
      cache.source = source;
    }
    return cache.weight;
  };
  auto sink_buffer = [](const Buffer& b, const ByteSink& sink) {
    sink({static_cast<const std::byte*>(b.data()), static_cast<size_t>(b.nbytes())});
  };

  for (const Shard& shard : shards) {
    std::vector<TensorToWrite> tensors;
    for (size_t oi : shard.outputs) {
      const Output& o = outputs[oi];
      TensorToWrite t{o.name, o.dtype, o.shape, nullptr};
      t.produce = [&, oi](const ByteSink& sink) {
        const Output& ot = outputs[oi];
        const Source& s = sources[ot.source];
        if (progress) progress->set_detail(ot.name);
        switch (ot.part) {
          case Part::packed:
            sink_buffer(quantized(ot.source).data(), sink);
            return;
          case Part::scales:
            sink_buffer(quantized(ot.source).scales(), sink);
            return;
          case Part::biases:
            sink_buffer(quantized(ot.source).biases(), sink);
            cache = QuantCache{};
            release_memory();
            return;
          case Part::whole:
            break;
        }
        const SafetensorsFile& file = model.file_of(*s.info);
        if (s.raw || !s.float_out || *s.float_out == *s.info->dtype) {
          const std::span<const std::byte> bytes = file.bytes(*s.info);
          for (size_t at = 0; at < bytes.size(); at += static_cast<size_t>(kCopyChunkBytes)) {
            sink(bytes.subspan(at,
                               std::min(bytes.size() - at, static_cast<size_t>(kCopyChunkBytes))));
          }
          return;
        }
        {
          const Buffer src = file.load(*s.info, cpu);
          const Buffer dst = Buffer::empty_exact(src.shape(), *s.float_out, cpu);
          cast(src, dst, cpu);
          sink_buffer(dst, sink);
        }
        release_memory();
      };
      tensors.push_back(std::move(t));
    }
    write_safetensors((out / shard.file).string(), tensors, {{"format", "mlx"}},
                      [&](int64_t bytes) {
                        result.bytes_written += bytes;
                        if (progress) progress->advance(bytes);
                      });
    result.files.push_back(shard.file);
    result.tensors_written += static_cast<int64_t>(shard.outputs.size());
  }
  if (progress) progress->finish();

  // ---- index, config, tokenizer ---------------------------------------------------------------
  ordered_json index = ordered_json::object();
  index["metadata"] = {{"total_size", total_bytes}, {"total_parameters", result.parameters}};
  std::map<std::string, std::string> weight_map;
  for (const Shard& shard : shards) {
    for (size_t oi : shard.outputs) weight_map[outputs[oi].name] = shard.file;
  }
  index["weight_map"] = ordered_json(weight_map);  // sorted, as mlx-lm writes it
  write_text_file(out / "model.safetensors.index.json", index.dump(4, ' ', true));
  result.files.push_back("model.safetensors.index.json");

  ordered_json new_cfg = cfg;
  const fs::path gen_path = in / "generation_config.json";
  if (fs::exists(gen_path, ec)) {
    std::ifstream gen_file(gen_path, std::ios::binary);
    const std::string gen_text((std::istreambuf_iterator<char>(gen_file)), {});
    // mlx-lm ignores an unreadable generation config; so do we.
    const ordered_json gen = ordered_json::parse(gen_text, nullptr, false);
    if (gen.is_object() && gen.contains("eos_token_id")) {
      const ordered_json& eos = gen["eos_token_id"];
      const bool truthy = (eos.is_number() && eos != 0) || (eos.is_array() && !eos.empty()) ||
                          (eos.is_boolean() && eos.get<bool>());
      if (truthy) new_cfg["eos_token_id"] = eos;
    }
  }
  if (options.quantize) {
    ordered_json q = ordered_json::object();
    q["group_size"] = options.group_size;
    q["bits"] = options.bits;
    q["mode"] = "affine";
    for (const auto& [module, spec] : module_entries) {
      if (spec) {
        q[module] = {{"group_size", spec->group_size}, {"bits", spec->bits}, {"mode", spec->mode}};
      } else {
        q[module] = false;
      }
    }
    new_cfg["quantization"] = q;
    new_cfg["quantization_config"] = q;
  }
  new_cfg.erase("_name_or_path");
  new_cfg.erase("vision_config");
  std::vector<std::string> keys;
  for (const auto& [key, value] : new_cfg.items()) keys.push_back(key);
  std::sort(keys.begin(), keys.end());
  ordered_json sorted = ordered_json::object();
  for (const std::string& key : keys) sorted[key] = new_cfg[key];
  write_text_file(out / "config.json", sorted.dump(4, ' ', true));
  result.files.push_back("config.json");

  for (const auto& entry : fs::directory_iterator(in)) {
    if (!entry.is_regular_file()) continue;
    const std::string name = entry.path().filename().string();
    const bool listed =
        std::find(std::begin(kCopiedFiles), std::end(kCopiedFiles), name) !=
            std::end(kCopiedFiles) ||
        std::any_of(std::begin(kCopiedSuffixes), std::end(kCopiedSuffixes),
                    [&](std::string_view suffix) { return name.ends_with(suffix); });
    if (!listed) continue;
    const fs::path partial = out / (name + ".partial");
    fs::copy_file(entry.path(), partial, fs::copy_options::overwrite_existing, ec);
    if (!ec) fs::rename(partial, out / name, ec);
    if (ec) throw Error(kOp, "cannot copy " + entry.path().string() + ": " + ec.message());
    result.files.push_back(name);
  }
  return result;
}

}  // namespace mlxn::io
