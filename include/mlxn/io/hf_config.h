// A Hugging Face / MLX config.json: the few keys the weight tools need (the model's dtype and
// MLX's quantization block). The architecture keys are the model runner's business; it gets the
// validated text from here and parses what it needs.
//
// MLX's quantization block (mlx-lm writes it as "quantization" and copies it to
// "quantization_config"):
//   {"group_size": 64, "bits": 4, "mode": "affine",
//    "model.layers.0.mlp.down_proj": {"group_size": 64, "bits": 6}, "lm_head": false, ...}
// A module entry overrides the global choice; false leaves the module unquantized.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <string_view>

#include "mlxn/core/dtype.h"

namespace mlxn::io {

struct QuantSpec {
  int group_size = 64;
  int bits = 4;
  std::string mode = "affine";
  bool operator==(const QuantSpec&) const = default;
};

// Throws Error("[config] <what>: ...") unless the spec is "affine" with bits in {2,3,4,5,6,8} and
// group_size in {32,64,128}.
void validate_quant_spec(const QuantSpec& spec, std::string_view what);

class QuantizationConfig {
 public:
  QuantizationConfig() = default;
  explicit QuantizationConfig(QuantSpec global) : global_(std::move(global)) {}

  const QuantSpec& global() const { return global_; }
  // Module path -> its spec, or nullopt for `false` (kept unquantized).
  const std::map<std::string, std::optional<QuantSpec>>& overrides() const { return overrides_; }
  void set_override(std::string module, std::optional<QuantSpec> spec);

  // The spec that applies to `module` (its override, else the global one), or nullopt when the
  // config says the module is not quantized. Throws Error("[config] ...") when the spec's mode is
  // not "affine", the only one implemented.
  std::optional<QuantSpec> for_module(std::string_view module) const;

 private:
  QuantSpec global_;
  std::map<std::string, std::optional<QuantSpec>> overrides_;
};

class HfConfig {
 public:
  // Reads and validates config.json (UTF-8 JSON object, no repeated keys). Errors are
  // Error("[config] <path>: ...").
  static HfConfig load(const std::string& path);
  // The same from text; `source` names it in errors.
  static HfConfig parse(std::string text, std::string source);

  const std::string& source() const { return source_; }
  // The file's text as read (for the model runner's own parsing).
  const std::string& text() const { return text_; }

  // "torch_dtype", else "dtype" (newer transformers), else the same keys of "text_config", as
  // written ("bfloat16", "float16", ...).
  const std::optional<std::string>& torch_dtype() const { return torch_dtype_; }
  // torch_dtype as a DType when it names one of float32 / float16 / bfloat16.
  std::optional<DType> model_dtype() const;

  // The "quantization" block, else "quantization_config" (also looked for under
  // "text_config"); nullopt for an unquantized model. Throws Error("[config] ...") for a
  // malformed block (bad types, bits or group size) and for quantization schemes of other tools
  // (a "quant_method" such as "fp8" or "awq").
  std::optional<QuantizationConfig> quantization() const;

 private:
  std::string source_, text_;
  std::optional<std::string> torch_dtype_;
  std::optional<QuantizationConfig> quantization_;
  std::string quantization_error_;  // set when the block is present but unusable
};

}  // namespace mlxn::io
