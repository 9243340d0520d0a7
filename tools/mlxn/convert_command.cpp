#include "convert_command.h"

#include <CLI/CLI.hpp>
#include <cstdio>

#include "mlxn/core/error.h"

namespace mlxn::cli {

CLI::App* add_convert_command(CLI::App& app, ConvertArgs& args) {
  CLI::App* cmd = app.add_subcommand(
      "convert",
      "Convert a Hugging Face model directory (config.json + safetensors) to the MLX layout, "
      "optionally quantized");
  cmd->add_option("hf_dir", args.hf_dir, "Input: config.json and model*.safetensors")->required();
  cmd->add_option("out_dir", args.out_dir, "Output directory (created; must be empty)")->required();
  cmd->add_flag("-q,--quantize", args.quantize,
                "Quantize (MLX affine; 4 bits, group 64 unless set)");
  cmd->add_option("--bits", args.bits, "Bits per weight: 2, 3, 4, 5, 6 or 8 (implies -q)")
      ->check(CLI::IsMember(std::vector<int>{2, 3, 4, 5, 6, 8}));
  cmd->add_option("--group-size", args.group_size, "Quantization group: 32, 64 or 128 (implies -q)")
      ->check(CLI::IsMember(std::vector<int>{32, 64, 128}));
  cmd->add_option("--dtype", args.dtype,
                  "Dtype of the unquantized tensors, scales and biases (default: config.json's "
                  "torch_dtype)")
      ->check(CLI::IsMember(
          std::vector<std::string>{"float32", "float16", "bfloat16", "f32", "f16", "bf16"}));
  std::vector<std::string> recipes;
  for (std::string_view r : io::kQuantRecipes) recipes.emplace_back(r);
  cmd->add_option("--recipe", args.recipe,
                  "mlx-lm's mixed-precision recipe: mixed_L_H gives H bits to lm_head and to "
                  "v_proj/down_proj of the first and last eighth of the layers and of every third "
                  "layer between, L bits elsewhere (implies -q)")
      ->check(CLI::IsMember(recipes));
  cmd->add_option("--override", args.overrides,
                  "PATTERN=BITS[:GROUP] or PATTERN=none, repeatable, applied after --recipe; the "
                  "last match wins. PATTERN is a glob over module paths that may match a tail "
                  "of the path: 'lm_head=6', 'layers.*.mlp.down_proj=6:64', 'embed_tokens=none' "
                  "(implies -q)")
      // One value per occurrence, so the positionals may follow it.
      ->expected(1)
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  cmd->add_flag("--force", args.force,
                "Write into a non-empty output directory, replacing the model files in it");
  return cmd;
}

io::ConvertOptions convert_options(const ConvertArgs& args) {
  io::ConvertOptions o;
  o.quantize = args.quantize || args.bits != 0 || args.group_size != 0 || !args.recipe.empty() ||
               !args.overrides.empty();
  if (args.bits != 0) o.bits = args.bits;
  if (args.group_size != 0) o.group_size = args.group_size;
  if (!args.dtype.empty()) {
    if (args.dtype == "float32" || args.dtype == "f32") {
      o.dtype = DType::f32;
    } else if (args.dtype == "float16" || args.dtype == "f16") {
      o.dtype = DType::f16;
    } else if (args.dtype == "bfloat16" || args.dtype == "bf16") {
      o.dtype = DType::bf16;
    } else {
      throw Error("convert",
                  "dtype '" + args.dtype + "' unsupported (supported: float32, float16, bfloat16)");
    }
  }
  o.recipe = args.recipe;
  for (const std::string& text : args.overrides) {
    o.overrides.push_back(io::parse_quant_override(text));
  }
  o.force = args.force;
  return o;
}

int run_convert(const ConvertArgs& args) {
  const io::ConvertOptions options = convert_options(args);
  const io::ConvertResult r = io::convert_hf_to_mlx(args.hf_dir, args.out_dir, options);
  int weight_files = 0;
  for (const std::string& f : r.files) {
    weight_files += f.size() > 12 && f.compare(f.size() - 12, 12, ".safetensors") == 0;
  }
  std::printf(
      "%s -> %s: %lld tensors (%lld modules quantized) in %d weight file%s, %.2f GiB, "
      "%.3f bits per weight\n",
      args.hf_dir.c_str(), args.out_dir.c_str(), static_cast<long long>(r.tensors_written),
      static_cast<long long>(r.quantized_modules), weight_files, weight_files == 1 ? "" : "s",
      static_cast<double>(r.bytes_written) / static_cast<double>(int64_t{1} << 30),
      r.bits_per_weight());
  return 0;
}

}  // namespace mlxn::cli
