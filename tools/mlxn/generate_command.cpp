#include "generate_command.h"

#include <CLI/CLI.hpp>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <span>
#include <system_error>

#include "core/text.h"
#include "mlxn/core/buffer.h"
#include "mlxn/core/error.h"
#include "mlxn/core/stream.h"
#include "mlxn/model/runner.h"
#include "mlxn/ops/sampling.h"
#include "mlxn/tokenizer/tokenizer.h"

#ifndef MLXN_SOURCE_MODEL_DIR
#define MLXN_SOURCE_MODEL_DIR ""
#endif

namespace mlxn::cli {

namespace {

namespace fs = std::filesystem;
using text::cat;
using text::in_quotes;

constexpr const char* kOp = "generate";
constexpr const char* kDefaultModelEnv = "MLXN_DEFAULT_MODEL";
constexpr const char* kDefaultModelSubdir = "models/tiny-stories";

// Every chat format in one place; select_chat_template tries them in this order.
constexpr std::array<ChatTemplate, 4> kChatTemplates = {{
    {"llama3", "<|start_header_id|>", "<|begin_of_text|>",
     "<|start_header_id|>user<|end_header_id|>\n\n",
     "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n", "<|eot_id|>"},
    {"chatml", "<|im_start|>", "", "<|im_start|>user\n", "<|im_end|>\n<|im_start|>assistant\n",
     "<|im_end|>"},
    {"gemma", "<start_of_turn>", "<bos>", "<start_of_turn>user\n",
     "<end_of_turn>\n<start_of_turn>model\n", "<end_of_turn>"},
    {"mistral", "[INST]", "<s>", "[INST] ", " [/INST]", ""},
}};
constexpr const ChatTemplate& kInstTemplate = kChatTemplates[3];

std::string read_prompt_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(kOp, cat("--prompt-file ", in_quotes(path), ": cannot be read"));
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// eos_token_id of generation_config.json: an id, a list of ids, or absent/null.
void add_generation_config_eos(const fs::path& path, std::set<int32_t>& ids) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return;
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    throw Error(kOp, cat(path.string(), ": not valid JSON (", e.what(), ")"));
  }
  if (!j.is_object() || !j.contains("eos_token_id") || j["eos_token_id"].is_null()) return;
  const nlohmann::json& eos = j["eos_token_id"];
  const auto add = [&](const nlohmann::json& v) {
    if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() > INT32_MAX) {
      throw Error(kOp, cat(path.string(),
                           ": eos_token_id must be a token id or a list of ids, got ", v.dump()));
    }
    ids.insert(v.get<int32_t>());
  };
  if (eos.is_array()) {
    for (const nlohmann::json& v : eos) add(v);
  } else {
    add(eos);
  }
}

void write(std::FILE* out, const std::string& piece) {
  if (piece.empty()) return;
  std::fwrite(piece.data(), 1, piece.size(), out);
  std::fflush(out);
}

}  // namespace

CLI::App* add_generate_command(CLI::App& app, GenerateArgs& a) {
  CLI::App* cmd = app.add_subcommand(
      "generate",
      "Generate text from a prompt, streamed to stdout as it is produced; statistics on stderr");
  cmd->add_option("--model", a.model,
                  "Model directory (Hugging Face / MLX: config.json, safetensors, tokenizer.json) "
                  "or .gguf file. Default: the bundled models/tiny-stories ($MLXN_DEFAULT_MODEL "
                  "overrides it)");
  CLI::Option* prompt =
      cmd->add_option("-p,--prompt", a.prompt, "Prompt text (default: \"Once upon a time\")");
  CLI::Option* prompt_file = cmd->add_option("--prompt-file", a.prompt_file,
                                             "Read the prompt from this file, as it is (a final "
                                             "newline stays part of the prompt)");
  prompt->excludes(prompt_file);
  cmd->add_option("-n,--max-tokens", a.max_tokens,
                  "Most tokens to generate (default 128); generation also stops at an "
                  "end-of-sequence token or a full context")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("-t,--temperature", a.temperature,
                  "Sampling temperature (default 0.8); 0 = greedy (argmax)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--top-k", a.top_k, "Keep the k most likely tokens (default 0 = off)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--top-p", a.top_p,
                  "Keep the smallest set of most likely tokens whose probability reaches p, in "
                  "(0, 1] (default 1 = off)")
      ->check(CLI::Range(0.0f, 1.0f));
  cmd->add_option("--min-p", a.min_p,
                  "Keep tokens at least min-p times as likely as the most likely one, in [0, 1] "
                  "(default 0 = off)")
      ->check(CLI::Range(0.0f, 1.0f));
  cmd->add_option("--seed", a.seed,
                  "Sampling seed (default 0, so a run repeats: the same model, prompt, options "
                  "and device give the same text)");
  CLI::Option* kv = cmd->add_option("--kv", a.kv.both,
                                    "KV-cache type of K and V: bf16 (default), f16, fp8, tq2, "
                                    "tq3, tq4, tq5, tq6, tq8 (TurboQuant bits), f32 (CPU only)")
                        ->check(kv_type_validator());
  CLI::Option* kv_k =
      cmd->add_option("--kv-k", a.kv.k, "KV-cache type of K alone (TurboQuant K and V may differ)")
          ->check(kv_type_validator());
  CLI::Option* kv_v =
      cmd->add_option("--kv-v", a.kv.v, "KV-cache type of V alone")->check(kv_type_validator());
  kv->excludes(kv_k)->excludes(kv_v);
  cmd->add_option("--kv-boundary", a.kv.boundary,
                  "Keep the first and last N layers' cache in bf16 (default 0)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--device", a.device, "cpu or cuda (default: cuda when a GPU is usable)")
      ->check(CLI::IsMember(std::vector<std::string>{"cpu", "cuda"}));
  cmd->add_option("--max-context", a.max_context,
                  "Tokens per sequence, prompt included, the cache is sized for (default: prompt "
                  "+ max tokens, at most the model's max_position_embeddings)")
      ->check(CLI::Range(int64_t{1}, int64_t{INT32_MAX}));
  cmd->add_option("--activations", a.activations,
                  "Activation dtype: bf16 (default) or f32 (CPU only, the reference precision)")
      ->check(CLI::IsMember(std::vector<std::string>{"bf16", "f32"}));
  cmd->add_flag("--chat", a.chat,
                "Wrap the prompt in the model family's chat template (Llama 3, ChatML/Qwen, "
                "Gemma, Mistral [INST]); its end-of-turn token ends generation");
  cmd->add_flag("--no-stats", a.no_stats, "Do not print the statistics line on stderr");
  return cmd;
}

// ---- the default model ------------------------------------------------------------------------

DefaultModelSearch default_model_search() {
  DefaultModelSearch s;
  // Set but empty counts as unset, as `VAR= mlxn generate` means to.
  if (const char* env = std::getenv(kDefaultModelEnv); env != nullptr && *env != '\0') s.env = env;
  std::error_code ec;
  const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  if (!ec) s.exe_dir = exe.parent_path();
  s.source_dir = MLXN_SOURCE_MODEL_DIR;
  return s;
}

std::string default_model_path(const DefaultModelSearch& search) {
  if (search.env) {
    if (search.env->empty() || !fs::exists(*search.env)) {
      throw Error(kOp, cat("$", kDefaultModelEnv, " is ", in_quotes(*search.env),
                           ", which does not exist; set it to a model directory or .gguf file, "
                           "or pass --model PATH"));
    }
    return *search.env;
  }
  std::vector<std::string> looked;
  if (!search.exe_dir.empty()) looked.push_back((search.exe_dir / kDefaultModelSubdir).string());
  if (!search.source_dir.empty()) looked.push_back(search.source_dir);
  for (const std::string& dir : looked) {
    if (fs::is_directory(dir)) return dir;
  }
  std::string places;
  for (const std::string& dir : looked) places += cat(places.empty() ? "" : ", ", dir);
  throw Error(kOp, cat("no --model given and the default model was not found ($", kDefaultModelEnv,
                       " is not set; looked in: ", places.empty() ? "nowhere" : places,
                       "); pass --model PATH"));
}

// ---- chat templates ---------------------------------------------------------------------------

const ChatTemplate& select_chat_template(const std::function<bool(std::string_view)>& in_vocab,
                                         model::Architecture arch) {
  for (const ChatTemplate& t : kChatTemplates) {
    if (in_vocab(t.marker)) return t;
  }
  // Llama 2 and Mistral v0.1 chat models mark turns with plain text, not tokens.
  const bool sentencepiece = in_vocab("\xe2\x96\x81") || in_vocab("<0x0A>");
  if ((arch == model::Architecture::llama || arch == model::Architecture::mistral) &&
      sentencepiece) {
    return kInstTemplate;
  }
  std::string markers;
  for (const ChatTemplate& t : kChatTemplates)
    markers += cat(markers.empty() ? "" : ", ", t.marker);
  throw Error(kOp, cat("--chat: no chat template known for this model (",
                       model::architecture_name(arch), "; none of ", markers,
                       " in its vocabulary, and not a SentencePiece "
                       "llama/mistral vocabulary)"));
}

std::vector<int32_t> prompt_ids(const Tokenizer& tokenizer, const std::string& prompt,
                                const ChatTemplate* chat) {
  EncodeOptions options;
  options.add_special = true;
  options.parse_special = true;
  if (chat == nullptr) return tokenizer.encode(prompt, options);
  std::vector<int32_t> ids = tokenizer.encode(cat(chat->before, prompt, chat->after), options);
  if (!chat->bos.empty()) {
    std::optional<int32_t> bos = tokenizer.token_to_id(chat->bos);
    if (!bos) bos = tokenizer.bos_id();
    if (bos && (ids.empty() || ids.front() != *bos)) ids.insert(ids.begin(), *bos);
  }
  return ids;
}

// ---- end of sequence --------------------------------------------------------------------------

std::set<int32_t> eos_ids(const std::string& model_path, const model::ModelConfig& config,
                          const Tokenizer& tokenizer) {
  std::set<int32_t> ids;
  for (int64_t id : config.eos_token_ids) {
    if (id >= 0 && id <= INT32_MAX) ids.insert(static_cast<int32_t>(id));
  }
  if (fs::is_directory(model_path)) {
    add_generation_config_eos(fs::path(model_path) / "generation_config.json", ids);
  }
  if (const std::optional<int32_t> eos = tokenizer.eos_id()) ids.insert(*eos);
  return ids;
}

// ---- running ----------------------------------------------------------------------------------

SamplingParams sampling_params(const GenerateArgs& args) {
  if (!(args.temperature >= 0.0f) || !std::isfinite(args.temperature)) {
    throw Error(kOp, cat("--temperature must be >= 0 (0: greedy), got ", args.temperature));
  }
  if (args.top_k < 0) throw Error(kOp, cat("--top-k must be >= 0 (0: off), got ", args.top_k));
  if (!(args.top_p > 0.0f && args.top_p <= 1.0f)) {
    throw Error(kOp, cat("--top-p must be in (0, 1] (1: off), got ", args.top_p));
  }
  if (!(args.min_p >= 0.0f && args.min_p <= 1.0f)) {
    throw Error(kOp, cat("--min-p must be in [0, 1] (0: off), got ", args.min_p));
  }
  SamplingParams p;
  p.temperature = args.temperature;
  p.top_k = args.top_k;
  p.top_p = args.top_p;
  p.min_p = args.min_p;
  return p;
}

std::string GenerateResult::stats_line() const {
  const auto rate = [](double tokens, double seconds) {
    char text[32];
    if (tokens <= 0 || seconds <= 0) return std::string("-");
    std::snprintf(text, sizeof(text), "%.1f", tokens / seconds);
    return std::string(text);
  };
  const double steps = generated.empty() ? 0.0 : static_cast<double>(generated.size() - 1);
  char per_token[32];
  std::snprintf(per_token, sizeof(per_token), "%.2f", kv_bytes_per_token);
  return cat("prompt ", static_cast<int64_t>(prompt.size()), " tokens, prefill ",
             rate(static_cast<double>(prompt.size()), prefill_seconds), " tokens/s; generated ",
             static_cast<int64_t>(generated.size()), " tokens (", stop, "), decode ",
             rate(steps, decode_seconds), " tokens/s; KV cache ", kv_type, ": ",
             byte_size(static_cast<double>(kv_bytes_used)), " used, ", per_token, " B/token, ",
             byte_size(static_cast<double>(kv_bytes_allocated)), " allocated");
}

GenerateResult generate(const GenerateArgs& args, std::FILE* out, std::FILE* err) {
  const std::string path =
      args.model.empty() ? default_model_path(default_model_search()) : args.model;
  if (!fs::exists(path)) {
    throw Error(kOp, cat("--model ", in_quotes(path),
                         " does not exist (expected a model directory or a .gguf file)"));
  }
  const std::string prompt = !args.prompt_file.empty() ? read_prompt_file(args.prompt_file)
                             : !args.prompt.empty()    ? args.prompt
                                                       : std::string(kDefaultPrompt);
  const SamplingParams sampling = sampling_params(args);
  const Device device = pick_device(args.device, kOp);
  const Stream stream(device);

  model::RunnerOptions options;
  options.activations = args.activations == "f32" ? DType::f32 : DType::bf16;
  options.kv = kv_policy(args.kv);
  options.max_sequences = 1;

  Tokenizer tokenizer = Tokenizer::from_model_path(path);
  model::LoadedModel m = model::load_model(path, stream);
  const ChatTemplate* chat = nullptr;
  if (args.chat) {
    chat = &select_chat_template(
        [&](std::string_view token) { return tokenizer.token_to_id(token).has_value(); },
        m.config.arch);
  }
  std::set<int32_t> stop_ids = eos_ids(path, m.config, tokenizer);
  if (chat != nullptr && !chat->turn_end.empty()) {
    if (const auto id = tokenizer.token_to_id(chat->turn_end)) stop_ids.insert(*id);
  }

  GenerateResult r;
  r.prompt = prompt_ids(tokenizer, prompt, chat);
  if (r.prompt.empty()) throw Error(kOp, "the prompt encodes to no tokens");
  const int64_t prompt_len = static_cast<int64_t>(r.prompt.size());
  const int64_t model_limit = m.config.max_position_embeddings;
  if (args.max_context > 0) {
    options.max_context = args.max_context;
  } else {
    options.max_context = std::max<int64_t>(prompt_len + args.max_tokens, 1);
    if (model_limit > 0) options.max_context = std::min(options.max_context, model_limit);
  }
  if (prompt_len > options.max_context) {
    throw Error(kOp, cat("the prompt is ", prompt_len, " tokens, longer than the context of ",
                         options.max_context, " tokens",
                         args.max_context > 0 ? " (--max-context)"
                                              : " the model supports (max_position_embeddings)"));
  }
  options.prefill_chunk = std::min<int64_t>(options.prefill_chunk, options.max_context);

  model::Runner runner(std::move(m.config), std::move(m.weights), options, stream);
  r.kv_type = kv_policy_name(options.kv);

  // One sequence: the sampler's per-row seed and step counter live on the device.
  const std::vector<int64_t> seed{static_cast<int64_t>(args.seed)}, step{0};
  const Buffer seeds = Buffer::from_host(std::span<const int64_t>(seed), {1}, DType::i64, stream);
  const Buffer steps = Buffer::from_host(std::span<const int64_t>(step), {1}, DType::i64, stream);
  const Buffer next = Buffer::empty({1}, DType::i32, stream);
  const auto select = [&](const Buffer& logits) {
    if (sampling.temperature == 0.0f) {
      argmax(logits, next, stream);
    } else {
      sample(logits, sampling, seeds, steps, next, stream);
    }
    return next.to_host<int32_t>(stream)[0];  // synchronises the stream
  };

  const int sequence = runner.add_sequence();
  stream.synchronize();
  const auto prefill_start = std::chrono::steady_clock::now();
  const Buffer prompt_logits = runner.prefill(sequence, r.prompt);
  r.stop = "max tokens";
  if (args.max_tokens > 0) {
    int32_t token = select(prompt_logits);
    r.prefill_seconds = seconds_since(prefill_start);
    // The decoder sees the prompt first, so the first generated token decodes in context (a
    // SentencePiece word's leading space is kept); a plain prompt is echoed, a chat one is not.
    DecodeOptions decode_options;
    decode_options.skip_special = true;
    StreamingDecoder decoder(tokenizer, decode_options);
    for (int32_t id : r.prompt) {
      const std::string piece = decoder.push(id);
      if (chat == nullptr) write(out, piece);
    }
    const auto decode_start = std::chrono::steady_clock::now();
    for (;;) {
      r.generated.push_back(token);
      if (stop_ids.contains(token)) {
        r.stop = "eos";
        break;
      }
      write(out, decoder.push(token));
      if (static_cast<int64_t>(r.generated.size()) >= args.max_tokens) break;
      if (runner.length(sequence) >= options.max_context) {
        r.stop = "context full";
        break;
      }
      const int32_t ids[] = {token};
      const int sequences[] = {sequence};
      token = select(runner.decode(sequences, ids));
    }
    r.decode_seconds = seconds_since(decode_start);
    write(out, decoder.finish());
  } else {
    stream.synchronize();
    r.prefill_seconds = seconds_since(prefill_start);
  }
  write(out, "\n");

  const KvFootprint footprint = kv_footprint(runner.cache().config());
  const int64_t pages = (runner.length(sequence) + footprint.page_size - 1) / footprint.page_size;
  r.kv_bytes_used = footprint.bytes_for_pages(footprint.page_bytes > 0 ? pages : 0);
  r.kv_bytes_allocated = runner.cache().memory_bytes();
  r.kv_bytes_per_token = footprint.bytes_per_token();
  if (!args.no_stats) {
    std::fprintf(err, "%s\n", r.stats_line().c_str());
    std::fflush(err);
  }
  return r;
}

int run_generate(const GenerateArgs& args) {
  (void)generate(args, stdout, stderr);
  return 0;
}

}  // namespace mlxn::cli
