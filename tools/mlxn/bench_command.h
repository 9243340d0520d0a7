// `mlxn bench`: prefill and decode speed of a model, or of a synthetic model shape with random
// MLX 4-bit weights, on one device, as a table or one JSON object.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>

namespace CLI {
class App;
}

namespace mlxn::cli {

struct BenchArgs {
  std::string model;   // a model directory or .gguf file, or
  std::string preset;  // a name from model::synthetic_model_names()
  std::string device;  // "" = cuda when usable, else cpu
  int64_t prompt_tokens = 128;
  int64_t decode_tokens = 32;
  int batch = 1;
  std::string kv = "bf16";
  bool json = false;
};

// Adds the `bench` subcommand to `app`, filling `args` when it is parsed.
CLI::App* add_bench_command(CLI::App& app, BenchArgs& args);

struct BenchResult {
  std::string model;         // the path, or "preset NAME"
  std::string architecture;  // "llama", ...
  int64_t layers = 0, hidden = 0, vocab = 0;
  std::string device;
  std::string kv;
  int batch = 1;
  int64_t prompt_tokens = 0;
  int64_t decode_tokens = 0;
  double prefill_seconds = 0;  // one sequence's prompt in one chunk
  double decode_seconds = 0;   // decode_tokens steps of `batch` sequences
  int64_t weight_bytes = 0;
  int64_t kv_cache_bytes = 0;  // the whole cache, as allocated
  double kv_bytes_per_token = 0;

  double prefill_tokens_per_s() const;
  double decode_tokens_per_s() const;  // batch * steps / time
  double decode_ms_per_step() const;
};

// Prefill: a warm-up run on a GPU, then one timed prefill of prompt_tokens in a single chunk.
// Decode: `batch` sequences holding their prompts, one warm-up step (on a GPU it captures the
// step's graph), then decode_tokens timed steps, each decode + argmax + the ids read back (what a
// generate loop does). Times are wall-clock between stream synchronisations. Prompts are random
// ids from a fixed seed. Throws Error("[bench] ...") for bad arguments; library errors propagate.
BenchResult measure_bench(const BenchArgs& args);

std::string bench_table(const BenchResult& result);
std::string bench_json(const BenchResult& result);  // one object, one line

// Measures and prints the table (or the JSON) to `out`; returns the exit code.
int run_bench(const BenchArgs& args, std::FILE* out = stdout);

}  // namespace mlxn::cli
