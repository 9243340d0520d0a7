// `mlxn generate`: text from a prompt, streamed as the tokens are produced, with the model's
// tokenizer, greedy or sampled on the device, and one line of statistics at the end.
#pragma once

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "mlxn/model/config.h"
#include "mlxn/ops/sampling.h"
#include "model_options.h"

namespace CLI {
class App;
}

namespace mlxn {
class Tokenizer;
}

namespace mlxn::cli {

inline constexpr const char* kDefaultPrompt = "Once upon a time";

struct GenerateArgs {
  std::string model;        // "" = the default model (default_model_path)
  std::string prompt;       // --prompt
  std::string prompt_file;  // --prompt-file (excludes --prompt); neither: kDefaultPrompt
  int64_t max_tokens = 128;
  float temperature = 0.8f;  // 0: greedy (argmax)
  int64_t top_k = 0;         // 0: off
  float top_p = 1.0f;        // 1: off
  float min_p = 0.0f;        // 0: off
  // Fixed by default so that a run is reproducible: the sampler's noise depends only on the seed
  // and the step, so the same model, prompt, options and device give the same text again.
  uint64_t seed = 0;
  KvArgs kv;
  std::string device;                // "" = cuda when usable, else cpu
  int64_t max_context = 0;           // 0: prompt + max_tokens, at most the model's max positions
  std::string activations = "bf16";  // or f32 (CPU only)
  bool chat = false;
  bool no_stats = false;
};

// Adds the `generate` subcommand to `app`, filling `args` when it is parsed.
CLI::App* add_generate_command(CLI::App& app, GenerateArgs& args);

// ---- the default model --------------------------------------------------------------------

// Where the default model is looked for, in order.
struct DefaultModelSearch {
  std::optional<std::string> env;  // MLXN_DEFAULT_MODEL, when set and not empty: must exist
  std::filesystem::path exe_dir;   // <exe_dir>/models/tiny-stories (empty: not looked at)
  std::string source_dir;          // the source tree's models/tiny-stories ("" : none)
};
// The search of this process: its environment, its executable's directory, and the source tree
// it was built from.
DefaultModelSearch default_model_search();
// The first place of `search` that holds the model. Throws Error("[generate] ...") naming every
// place looked at and asking for --model when none does.
std::string default_model_path(const DefaultModelSearch& search);

// ---- chat templates -------------------------------------------------------------------------

// One model family's single-turn chat format: the prompt becomes before + prompt + after, with
// the BOS token in front unless the tokenizer's post-processor adds one already.
struct ChatTemplate {
  std::string_view family;    // "llama3", "chatml", "gemma", "mistral"
  std::string_view marker;    // a vocabulary token only this family's template uses
  std::string_view bos;       // the BOS token it starts with ("" = none)
  std::string_view before;    // text before the prompt
  std::string_view after;     // text after it, ending where the model's reply starts
  std::string_view turn_end;  // the token that ends the model's turn ("" = its EOS does)
};
// Chosen by the first marker found in the vocabulary; otherwise "[INST] ... [/INST]" for a
// llama or mistral model with a SentencePiece vocabulary (a "▁" or "<0x0A>" token). Throws
// Error("[generate] --chat: no chat template known for this model (...)").
const ChatTemplate& select_chat_template(const std::function<bool(std::string_view)>& in_vocab,
                                         model::Architecture arch);

// The prompt's token ids: encoded with the tokenizer's special tokens, wrapped in `chat` when
// given.
std::vector<int32_t> prompt_ids(const Tokenizer& tokenizer, const std::string& prompt,
                                const ChatTemplate* chat);

// ---- end of sequence ------------------------------------------------------------------------

// The ids that end generation: the config's eos_token_id(s) (config.json or GGUF), those of
// generation_config.json beside a model directory's config.json (an id or a list), and the
// tokenizer's EOS. Throws Error("[generate] ...") for a generation_config.json that is not JSON
// or whose eos_token_id is neither.
std::set<int32_t> eos_ids(const std::string& model_path, const model::ModelConfig& config,
                          const Tokenizer& tokenizer);

// ---- running --------------------------------------------------------------------------------

// The sampler's parameters. Throws Error("[generate] ...") for a value out of range (the
// parser's checks leave top-p 0 and non-finite values to this).
SamplingParams sampling_params(const GenerateArgs& args);

struct GenerateResult {
  std::vector<int32_t> prompt;     // the prompt's ids
  std::vector<int32_t> generated;  // every sampled id, the ending EOS included
  std::string stop;                // "eos", "max tokens", "context full"
  double prefill_seconds = 0;      // prefill and the first token's selection
  double decode_seconds = 0;       // the decode steps (generated.size() - 1 of them)
  int64_t kv_bytes_used = 0;       // the pages the sequence holds, rings included
  int64_t kv_bytes_allocated = 0;  // the whole cache
  double kv_bytes_per_token = 0;
  std::string kv_type;
  std::string stats_line() const;  // one line, without newline
};

// Loads the model and its tokenizer, generates, writes the text to `out` as it is produced
// (flushed per token; the prompt first unless --chat; special tokens left out) and a newline at
// the end, then the statistics line to `err` unless
// args.no_stats. Library errors propagate.
GenerateResult generate(const GenerateArgs& args, std::FILE* out, std::FILE* err);

// generate() on stdout and stderr; returns the exit code.
int run_generate(const GenerateArgs& args);

}  // namespace mlxn::cli
