// Hugging Face -> MLX conversion: the directory `mlx_lm.convert` would write for the same model,
// optionally with MLX affine quantization (mixed recipes and per-module overrides included).
//
// Input: a directory with config.json and model.safetensors (or shards with
// model.safetensors.index.json) holding f32 / f16 / bf16 weights. Output: model.safetensors, or
// model-0000i-of-0000n.safetensors shards of at most 5 GiB, always with
// model.safetensors.index.json; config.json with "quantization" and "quantization_config"; the
// tokenizer and generation files copied. Tensors are streamed one at a time: memory holds one
// tensor (and its quantized form), never the model.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "mlxn/core/dtype.h"
#include "mlxn/io/hf_config.h"

namespace mlxn::io {

// Modules whose path matches `pattern` get bits / group_size (0: the global value), or stay
// unquantized when `quantize` is false.
struct QuantOverride {
  std::string pattern;
  bool quantize = true;
  int bits = 0;
  int group_size = 0;
};

// "PATTERN=BITS", "PATTERN=BITS:GROUP" or "PATTERN=none" (also "false"), e.g. "lm_head=6",
// "layers.*.mlp.down_proj=6:64". Throws Error("[convert] ...") on anything else.
QuantOverride parse_quant_override(std::string_view text);

// Glob match of a module path: `*` matches any run of characters (dots included), `?` one
// character. The pattern must match the whole path or a tail of it that starts after a '.', so
// "down_proj" and "layers.*.mlp.down_proj" both match "model.layers.3.mlp.down_proj" and "head"
// does not match "lm_head".
bool module_pattern_matches(std::string_view pattern, std::string_view module);

// mlx-lm's mixed-precision recipes (its --quant-predicate): low/high bits, e.g. mixed_4_6 gives
// 6 bits to lm_head and to v_proj/down_proj of the first and last eighth of the layers and of
// every third layer between, 4 bits elsewhere.
inline constexpr std::string_view kQuantRecipes[] = {"mixed_2_6", "mixed_3_4", "mixed_3_6",
                                                     "mixed_4_6"};

struct ConvertOptions {
  bool quantize = false;
  int bits = 4;
  int group_size = 64;
  // f32 / f16 / bf16 for every floating tensor (and the scales and biases); default: the
  // config's torch_dtype when it names one of those, else each tensor keeps its own.
  std::optional<DType> dtype;
  std::string recipe;                    // "" or one of kQuantRecipes; needs quantize
  std::vector<QuantOverride> overrides;  // after the recipe; the last match wins
  bool force = false;                    // replace the weights of a non-empty output directory
  int64_t max_shard_bytes = int64_t{5} << 30;
  bool show_progress = true;  // on stderr, when it is a terminal
};

struct ConvertResult {
  int64_t tensors_written = 0;
  int64_t quantized_modules = 0;
  int64_t bytes_written = 0;       // tensor bytes, headers excluded
  int64_t parameters = 0;          // of the source model (as mlx-lm counts them)
  std::vector<std::string> files;  // every file written, relative to the output directory
  double bits_per_weight() const {
    return parameters > 0
               ? 8.0 * static_cast<double>(bytes_written) / static_cast<double>(parameters)
               : 0.0;
  }
};

// Throws Error("[convert] ...") for bad options, an input that is not an unquantized HF model,
// an output directory that is the input or is not empty (without `force`), and any read or write
// failure; a shard is never left truncated under its final name.
ConvertResult convert_hf_to_mlx(const std::string& hf_dir, const std::string& out_dir,
                                const ConvertOptions& options);

}  // namespace mlxn::io
