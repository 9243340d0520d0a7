#include "bench_command.h"

#include <CLI/CLI.hpp>
#include <chrono>
#include <nlohmann/json.hpp>
#include <random>
#include <span>
#include <vector>

#include "core/text.h"
#include "mlxn/core/buffer.h"
#include "mlxn/core/error.h"
#include "mlxn/core/stream.h"
#include "mlxn/model/runner.h"
#include "mlxn/model/synthetic.h"
#include "mlxn/ops/sampling.h"
#include "model_options.h"

namespace mlxn::cli {

namespace {

using text::cat;

constexpr const char* kOp = "bench";
// Prompts are random ids from this seed, so runs compare.
constexpr uint64_t kPromptSeed = 0;

std::string preset_names() {
  std::string names;
  for (const std::string& n : model::synthetic_model_names())
    names += cat(names.empty() ? "" : ", ", n);
  return names;
}

}  // namespace

CLI::App* add_bench_command(CLI::App& app, BenchArgs& a) {
  CLI::App* cmd = app.add_subcommand(
      "bench", "Prefill and decode speed of a model, or of a synthetic shape with random weights");
  CLI::Option* model =
      cmd->add_option("--model", a.model, "Model directory (Hugging Face / MLX) or .gguf file");
  CLI::Option* preset =
      cmd->add_option("--preset", a.preset,
                      "Synthetic shape with random MLX 4-bit weights: " + preset_names() +
                          " (tiny is small enough for the CPU)")
          ->check(CLI::IsMember(model::synthetic_model_names()));
  model->excludes(preset);
  cmd->add_option("--device", a.device, "cpu or cuda (default: cuda when a GPU is usable)")
      ->check(CLI::IsMember(std::vector<std::string>{"cpu", "cuda"}));
  cmd->add_option("--prompt-tokens", a.prompt_tokens,
                  "Prompt length, prefilled in one chunk (default 128)")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 20));
  cmd->add_option("--decode-tokens", a.decode_tokens, "Timed decode steps (default 32)")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 20));
  cmd->add_option("--batch", a.batch, "Sequences decoded together (default 1)")
      ->check(CLI::Range(1, 4096));
  cmd->add_option("--kv", a.kv,
                  "KV-cache type of K and V: bf16 (default), f16, fp8, tq2, tq3, tq4, tq5, tq6, "
                  "tq8, f32 (CPU only)")
      ->check(kv_type_validator());
  cmd->add_flag("--json", a.json, "Print one JSON object instead of the table");
  return cmd;
}

double BenchResult::prefill_tokens_per_s() const {
  return prefill_seconds > 0 ? static_cast<double>(prompt_tokens) / prefill_seconds : 0.0;
}
double BenchResult::decode_tokens_per_s() const {
  return decode_seconds > 0
             ? static_cast<double>(batch) * static_cast<double>(decode_tokens) / decode_seconds
             : 0.0;
}
double BenchResult::decode_ms_per_step() const {
  return decode_tokens > 0 ? decode_seconds * 1e3 / static_cast<double>(decode_tokens) : 0.0;
}

BenchResult measure_bench(const BenchArgs& args) {
  if (args.model.empty() == args.preset.empty()) {
    throw Error(kOp, cat("give --model PATH or --preset NAME (", preset_names(), ")"));
  }
  if (args.prompt_tokens < 1 || args.decode_tokens < 1 || args.batch < 1) {
    throw Error(kOp, cat("--prompt-tokens ", args.prompt_tokens, ", --decode-tokens ",
                         args.decode_tokens, " and --batch ", args.batch, " must be >= 1"));
  }
  const Device device = pick_device(args.device, kOp);
  const Stream stream(device);
  KvArgs kv_args;
  kv_args.both = args.kv;

  BenchResult r;
  model::LoadedModel m;
  if (!args.model.empty()) {
    r.model = args.model;
    m = model::load_model(args.model, stream);
  } else {
    r.model = cat("preset ", args.preset);
    m.config = model::synthetic_config(args.preset);
    m.weights = model::random_mlx_weights(m.config, 4, 64, stream);
  }
  r.architecture = model::architecture_name(m.config.arch);
  r.layers = m.config.num_layers;
  r.hidden = m.config.hidden_size;
  r.vocab = m.config.vocab_size;
  r.device = device.str();
  r.batch = args.batch;
  r.prompt_tokens = args.prompt_tokens;
  r.decode_tokens = args.decode_tokens;
  r.weight_bytes = m.weights.bytes();

  model::RunnerOptions options;
  options.kv = kv_policy(kv_args);
  options.max_sequences = args.batch;
  options.prefill_chunk = args.prompt_tokens;
  options.max_context = args.prompt_tokens + 1 + args.decode_tokens;  // + the warm-up step
  r.kv = kv_policy_name(options.kv);
  const int64_t vocab = m.config.vocab_size;
  // Moved in: the runner stacks projections and releases their parts.
  model::Runner runner(std::move(m.config), std::move(m.weights), options, stream);

  std::mt19937_64 rng(kPromptSeed);
  std::uniform_int_distribution<int32_t> token_of(0, static_cast<int32_t>(vocab - 1));
  const auto random_prompt = [&] {
    std::vector<int32_t> ids(static_cast<size_t>(args.prompt_tokens));
    for (int32_t& id : ids) id = token_of(rng);
    return ids;
  };
  const Buffer first = Buffer::empty({1}, DType::i32, stream);
  const auto prefill_token = [&](int sequence, const std::vector<int32_t>& prompt) {
    argmax(runner.prefill(sequence, prompt), first, stream);
    return first.to_host<int32_t>(stream)[0];
  };

  // Prefill: on a GPU the first run pays one-time costs (library handles, pool growth, kernel
  // loading); the CPU has none worth a second run of its slow reference.
  if (!device.is_cpu()) {
    const int warm = runner.add_sequence();
    (void)prefill_token(warm, random_prompt());
    runner.free_sequence(warm);
  }
  std::vector<int> sequences;
  std::vector<int32_t> tokens;
  for (int b = 0; b < args.batch; ++b) {
    const std::vector<int32_t> prompt = random_prompt();
    sequences.push_back(runner.add_sequence());
    stream.synchronize();
    const auto start = std::chrono::steady_clock::now();
    tokens.push_back(prefill_token(sequences.back(), prompt));
    if (b == 0) r.prefill_seconds = seconds_since(start);
  }

  // Decode, greedy: ids of every sequence back on the host after each step.
  const Buffer ids = Buffer::empty({args.batch}, DType::i32, stream);
  const auto step = [&] {
    argmax(runner.decode(sequences, tokens), ids, stream);
    tokens = ids.to_host<int32_t>(stream);
  };
  step();
  stream.synchronize();
  const auto start = std::chrono::steady_clock::now();
  for (int64_t i = 0; i < args.decode_tokens; ++i) step();
  stream.synchronize();
  r.decode_seconds = seconds_since(start);

  r.kv_cache_bytes = runner.cache().memory_bytes();
  r.kv_bytes_per_token = kv_footprint(runner.cache().config()).bytes_per_token();
  return r;
}

std::string bench_table(const BenchResult& r) {
  char line[256];
  std::string out = cat(r.model, ": ", r.architecture, ", ", r.layers, " layers, hidden ", r.hidden,
                        ", vocab ", r.vocab, ", ", byte_size(static_cast<double>(r.weight_bytes)),
                        " of weights; ", r.device, ", KV cache ", r.kv, "\n");
  std::snprintf(line, sizeof(line), "  %-8s %-34s %12s %14s\n", "phase", "work", "time",
                "tokens/s");
  out += line;
  const std::string prefill_work = cat(r.prompt_tokens, " tokens in one chunk");
  std::snprintf(line, sizeof(line), "  %-8s %-34s %9.3f ms %14.1f\n", "prefill",
                prefill_work.c_str(), r.prefill_seconds * 1e3, r.prefill_tokens_per_s());
  out += line;
  const std::string decode_work = cat(r.decode_tokens, " steps of batch ", r.batch, ", greedy");
  std::snprintf(line, sizeof(line), "  %-8s %-34s %6.3f ms/step %11.1f\n", "decode",
                decode_work.c_str(), r.decode_ms_per_step(), r.decode_tokens_per_s());
  out += line;
  char per_token[32];
  std::snprintf(per_token, sizeof(per_token), "%.2f", r.kv_bytes_per_token);
  out += cat("  KV cache: ", byte_size(static_cast<double>(r.kv_cache_bytes)), " allocated, ",
             per_token, " B per token\n");
  return out;
}

std::string bench_json(const BenchResult& r) {
  const nlohmann::json j = {{"model", r.model},
                            {"architecture", r.architecture},
                            {"layers", r.layers},
                            {"hidden", r.hidden},
                            {"vocab", r.vocab},
                            {"device", r.device},
                            {"kv", r.kv},
                            {"batch", r.batch},
                            {"prompt_tokens", r.prompt_tokens},
                            {"decode_tokens", r.decode_tokens},
                            {"prefill_ms", r.prefill_seconds * 1e3},
                            {"prefill_tokens_per_s", r.prefill_tokens_per_s()},
                            {"decode_ms_per_step", r.decode_ms_per_step()},
                            {"decode_tokens_per_s", r.decode_tokens_per_s()},
                            {"weight_bytes", r.weight_bytes},
                            {"kv_cache_bytes", r.kv_cache_bytes},
                            {"kv_bytes_per_token", r.kv_bytes_per_token}};
  return j.dump();
}

int run_bench(const BenchArgs& args, std::FILE* out) {
  const BenchResult r = measure_bench(args);
  const std::string text = args.json ? bench_json(r) + "\n" : bench_table(r);
  std::fputs(text.c_str(), out);
  return 0;
}

}  // namespace mlxn::cli
