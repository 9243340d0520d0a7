// mlxn: the command-line front end. With no subcommand it reports the devices and runs the quick
// TurboQuant evaluation (the README's quick start).
#include <CLI/CLI.hpp>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "bench_command.h"
#include "convert_command.h"
#include "generate_command.h"
#include "inspect_command.h"
#include "mlxn/mlxn.h"
#include "self_check.h"
#include "tq_codebooks_gen.h"
#include "tq_commands.h"

namespace {

void print_devices(bool as_json) {
  nlohmann::json list = nlohmann::json::array();
  for (mlxn::Device d : mlxn::devices()) {
    const mlxn::DeviceProperties& p = mlxn::device_properties(d);
    nlohmann::json j = {
        {"device", d.str()}, {"name", p.name}, {"multiprocessors", p.multiprocessors}};
    if (d.is_cuda()) {
      j["compute_capability"] =
          std::to_string(p.compute_major) + "." + std::to_string(p.compute_minor);
      j["memory_gib"] = static_cast<double>(p.total_memory_bytes) / (1 << 30);
      j["l2_mib"] = static_cast<double>(p.l2_cache_bytes) / (1 << 20);
      j["shared_memory_per_block_optin_kib"] = p.shared_memory_per_block_optin / 1024;
    }
    list.push_back(j);
  }
  if (as_json) {
    std::printf("%s\n", list.dump(2).c_str());
    return;
  }
  std::printf("mlx-native %s, CUDA backend %s\n", "0.1.0",
              mlxn::cuda_built() ? "built" : "not built");
  for (const auto& j : list) {
    std::printf("  %-7s %s (%d %s", j["device"].get<std::string>().c_str(),
                j["name"].get<std::string>().c_str(), j["multiprocessors"].get<int>(),
                j["device"] == "cpu" ? "threads" : "SMs");
    if (j.contains("compute_capability")) {
      std::printf(", sm %s, %.1f GiB, L2 %.0f MiB",
                  j["compute_capability"].get<std::string>().c_str(), j["memory_gib"].get<double>(),
                  j["l2_mib"].get<double>());
    }
    std::printf(")\n");
  }
  if (mlxn::cuda_device_count() == 0) {
    std::printf("  no CUDA device: %s\n", mlxn::cuda_unavailable_reason().c_str());
  }
}

int self_check() {
  const auto results = mlxn::cli::run_self_check(mlxn::devices());
  int failed = 0;
  std::printf("self-check:\n");
  for (const auto& r : results) {
    std::printf("  %-4s %-7s %-20s %s\n", r.passed ? "ok" : "FAIL", r.device.str().c_str(),
                r.name.c_str(), r.detail.c_str());
    failed += r.passed ? 0 : 1;
  }
  std::printf("%zu passed, %d failed\n", results.size() - static_cast<size_t>(failed), failed);
  return failed == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"mlx-native: transformer inference kernels for NVIDIA GPUs, with a CPU reference"};
  app.require_subcommand(0, 1);
  bool json = false;
  auto* devices_cmd = app.add_subcommand("devices", "List the devices and their properties");
  devices_cmd->add_flag("--json", json, "Print JSON");
  auto* check_cmd = app.add_subcommand(
      "self-check", "Run the core ops on every device against the CPU reference");

  mlxn::cli::TqEvalOptions eval;
  auto* eval_cmd = app.add_subcommand(
      "tq-eval", "TurboQuant quality per bit width and head_dim, against the design targets");
  eval_cmd->add_flag("--quick", eval.quick, "head_dim 128 only, 2,000 vectors per case");
  eval_cmd->add_option("--vectors", eval.vectors, "Vectors per case (full run)")
      ->check(CLI::Range(100, 10000000));

  auto* codebooks_cmd = app.add_subcommand(
      "tq-codebooks", "Print src/portable/tq_codebooks.h from the Lloyd-Max generator");

  auto* tq_cmd = app.add_subcommand(
      "tq", "Encode/decode raw float32 vectors with the TurboQuant reference codec");
  tq_cmd->require_subcommand(1);
  int bits = 4, dim = 128;
  std::string in_path, out_path;
  bool rotated = false;
  auto* encode_cmd =
      tq_cmd->add_subcommand("encode", "IN.f32 -> OUT: payload rows then fp16 scales");
  auto* decode_cmd = tq_cmd->add_subcommand("decode", "IN (from encode) -> OUT.f32");
  for (auto* c : {encode_cmd, decode_cmd}) {
    c->add_option("--bits", bits, "2, 3, 4, 5, 6 or 8")->required();
    c->add_option("--dim", dim, "64, 128, 256 or 512")->required();
    c->add_option("in", in_path)->required();
    c->add_option("out", out_path)->required();
  }
  decode_cmd->add_flag("--rotated", rotated, "Write the rotated-domain values (alpha * C[code])");

  mlxn::cli::ConvertArgs convert_args;
  auto* convert_cmd = mlxn::cli::add_convert_command(app, convert_args);
  std::string inspect_path;
  auto* inspect_cmd = app.add_subcommand(
      "inspect",
      "Describe a model (directory with config.json, or .gguf) without loading it, with its KV "
      "cache bytes per token for each cache type");
  inspect_cmd->add_option("path", inspect_path, "Model directory or GGUF file")->required();
  mlxn::cli::GenerateArgs generate_args;
  auto* generate_cmd = mlxn::cli::add_generate_command(app, generate_args);
  mlxn::cli::BenchArgs bench_args;
  auto* bench_cmd = mlxn::cli::add_bench_command(app, bench_args);
  CLI11_PARSE(app, argc, argv);
  try {
    if (devices_cmd->parsed()) {
      print_devices(json);
      return 0;
    }
    if (check_cmd->parsed()) return self_check();
    if (eval_cmd->parsed()) return mlxn::cli::run_tq_eval(eval);
    if (codebooks_cmd->parsed()) return mlxn::cli::print_tq_codebook_header();
    if (encode_cmd->parsed()) return mlxn::cli::run_tq_encode(bits, dim, in_path, out_path);
    if (decode_cmd->parsed())
      return mlxn::cli::run_tq_decode(bits, dim, in_path, out_path, rotated);
    if (convert_cmd->parsed()) return mlxn::cli::run_convert(convert_args);
    if (inspect_cmd->parsed()) return mlxn::cli::run_inspect(inspect_path);
    if (generate_cmd->parsed()) return mlxn::cli::run_generate(generate_args);
    if (bench_cmd->parsed()) return mlxn::cli::run_bench(bench_args);
    print_devices(false);
    std::printf("\n");
    eval.quick = true;
    return mlxn::cli::run_tq_eval(eval);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "mlxn: %s\n", e.what());
    return 1;
  }
}
