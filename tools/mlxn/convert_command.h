// `mlxn convert HF_DIR OUT_DIR`: a Hugging Face model directory to the MLX layout mlx-lm writes,
// optionally quantized (MLX affine), with mixed recipes and per-module overrides.
#pragma once

#include <string>
#include <vector>

#include "mlxn/io/convert.h"

namespace CLI {
class App;
}

namespace mlxn::cli {

struct ConvertArgs {
  std::string hf_dir, out_dir;
  bool quantize = false;
  int bits = 0;        // 0: not given (4 when quantizing)
  int group_size = 0;  // 0: not given (64 when quantizing)
  std::string dtype;   // float32 / float16 / bfloat16 (or f32 / f16 / bf16); "" = config's
  std::string recipe;
  std::vector<std::string> overrides;  // PATTERN=BITS[:GROUP] or PATTERN=none
  bool force = false;
};

// Adds the `convert` subcommand to `app`, filling `args` when it is parsed.
CLI::App* add_convert_command(CLI::App& app, ConvertArgs& args);

// The library options the arguments ask for. --bits, --group-size, --recipe and --override each
// imply --quantize. Throws Error("[convert] ...") on a bad value.
io::ConvertOptions convert_options(const ConvertArgs& args);

// Converts and prints a summary; returns the exit code. Library errors propagate.
int run_convert(const ConvertArgs& args);

}  // namespace mlxn::cli
