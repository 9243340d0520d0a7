#include "mlxn/io/hf_config.h"

#include <nlohmann/json.hpp>
#include <utility>

#include "io/json_util.h"
#include "io/mapped_file.h"
#include "mlxn/core/error.h"

namespace mlxn::io {

namespace {

constexpr const char* kOp = "config";
using ordered_json = nlohmann::ordered_json;

// The keys of a quantization block that are not module paths.
bool is_global_key(std::string_view key) {
  return key == "group_size" || key == "bits" || key == "mode" || key == "quant_method";
}

int json_int(const ordered_json& v, const std::string& what) {
  if (!v.is_number_integer()) throw Error(kOp, what + " is not an integer (" + v.dump() + ")");
  const auto i = v.get<int64_t>();
  if (i < 0 || i > 1'000'000) throw Error(kOp, what + " is out of range (" + v.dump() + ")");
  return static_cast<int>(i);
}

// Fields present in `obj` replace those of `base`.
QuantSpec read_spec(const ordered_json& obj, QuantSpec base, const std::string& what) {
  if (obj.contains("group_size"))
    base.group_size = json_int(obj["group_size"], what + " group_size");
  if (obj.contains("bits")) base.bits = json_int(obj["bits"], what + " bits");
  if (obj.contains("mode")) {
    if (!obj["mode"].is_string()) throw Error(kOp, what + " mode is not a string");
    base.mode = obj["mode"].get<std::string>();
  }
  // Only affine specs are checked here: another mode is reported when a module uses it.
  if (base.mode == "affine") validate_quant_spec(base, what);
  return base;
}

QuantizationConfig parse_block(const ordered_json& block, const std::string& where) {
  if (!block.is_object()) throw Error(kOp, where + " is not an object");
  if (block.contains("quant_method") && !(block.contains("bits") && block.contains("group_size"))) {
    const ordered_json& method = block["quant_method"];
    const std::string name = method.is_string() ? method.get<std::string>() : method.dump();
    throw Error(kOp, where + " uses quant_method '" + name +
                         "', not MLX quantization (supported: MLX affine group_size/bits)");
  }
  for (const char* key : {"group_size", "bits"}) {
    if (!block.contains(key)) throw Error(kOp, where + " has no '" + key + "'");
  }
  QuantizationConfig config(read_spec(block, QuantSpec{}, where));
  for (const auto& [key, value] : block.items()) {
    if (is_global_key(key)) continue;
    const std::string what = where + " entry '" + key + "'";
    if (value.is_boolean()) {
      config.set_override(key, value.get<bool>() ? std::optional(config.global()) : std::nullopt);
    } else if (value.is_object()) {
      config.set_override(key, read_spec(value, config.global(), what));
    }
    // Other scalar keys are not module entries (tools add informational keys); they are skipped.
  }
  return config;
}

}  // namespace

void validate_quant_spec(const QuantSpec& spec, std::string_view what) {
  const std::string w(what);
  if (spec.mode != "affine") {
    throw Error(kOp,
                w + ": quantization mode '" + spec.mode + "' is not supported (supported: affine)");
  }
  switch (spec.bits) {
    case 2:
    case 3:
    case 4:
    case 5:
    case 6:
    case 8:
      break;
    default:
      throw Error(kOp, w + ": bits " + std::to_string(spec.bits) +
                           " unsupported (supported: 2, 3, 4, 5, 6, 8)");
  }
  if (spec.group_size != 32 && spec.group_size != 64 && spec.group_size != 128) {
    throw Error(kOp, w + ": group_size " + std::to_string(spec.group_size) +
                         " unsupported (supported: 32, 64, 128)");
  }
}

void QuantizationConfig::set_override(std::string module, std::optional<QuantSpec> spec) {
  overrides_[std::move(module)] = std::move(spec);
}

std::optional<QuantSpec> QuantizationConfig::for_module(std::string_view module) const {
  const auto it = overrides_.find(std::string(module));
  const std::optional<QuantSpec> spec = it != overrides_.end() ? it->second : global_;
  if (spec) validate_quant_spec(*spec, "module '" + std::string(module) + "'");
  return spec;
}

HfConfig HfConfig::load(const std::string& path) {
  const MappedFile file(path, kOp);
  const auto bytes = file.bytes();
  return parse(std::string(reinterpret_cast<const char*>(bytes.data()), bytes.size()), path);
}

HfConfig HfConfig::parse(std::string text, std::string source) {
  const ordered_json root = json_util::parse_strict(text, source, kOp, "config");
  if (!root.is_object()) throw Error(kOp, source + ": config is not a JSON object");
  HfConfig c;
  c.source_ = std::move(source);
  c.text_ = std::move(text);

  const ordered_json* text_config = root.contains("text_config") && root["text_config"].is_object()
                                        ? &root["text_config"]
                                        : nullptr;
  for (const ordered_json* obj : {&root, text_config}) {
    if (obj == nullptr || c.torch_dtype_) continue;
    for (const char* key : {"torch_dtype", "dtype"}) {
      if (obj->contains(key) && (*obj)[key].is_string()) {
        c.torch_dtype_ = (*obj)[key].get<std::string>();
        break;
      }
    }
  }

  const ordered_json* block = nullptr;
  std::string where;
  for (const ordered_json* obj : {&root, text_config}) {
    if (obj == nullptr || block != nullptr) continue;
    for (const char* key : {"quantization", "quantization_config"}) {
      if (obj->contains(key) && !(*obj)[key].is_null()) {
        block = &(*obj)[key];
        where = c.source_ + ": " + (obj == &root ? "" : "text_config.") + key;
        break;
      }
    }
  }
  if (block != nullptr) {
    try {
      c.quantization_ = parse_block(*block, where);
    } catch (const Error& e) {
      // Kept without its "[config] " prefix; quantization() raises it when asked.
      c.quantization_error_ = std::string(e.what()).substr(std::string_view("[config] ").size());
    }
  }
  return c;
}

std::optional<DType> HfConfig::model_dtype() const {
  if (!torch_dtype_) return std::nullopt;
  if (*torch_dtype_ == "float32") return DType::f32;
  if (*torch_dtype_ == "float16") return DType::f16;
  if (*torch_dtype_ == "bfloat16") return DType::bf16;
  return std::nullopt;
}

std::optional<QuantizationConfig> HfConfig::quantization() const {
  if (!quantization_error_.empty()) throw Error(kOp, quantization_error_);
  return quantization_;
}

}  // namespace mlxn::io
