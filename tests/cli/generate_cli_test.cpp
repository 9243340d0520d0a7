// `mlxn generate`: options into GenerateArgs and the library's option structs, parser errors,
// the chat template a vocabulary selects, the default model's lookup, and whole runs on the CPU
// with the llama golden fixture and a byte-level tokenizer, held to a direct Runner greedy loop.
#include <gtest/gtest.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "cli/cli_test_util.h"
#include "generate_command.h"
#include "mlxn/model/runner.h"
#include "mlxn/ops/sampling.h"
#include "mlxn/tokenizer/tokenizer.h"
#include "support/support.h"

namespace {

namespace fs = std::filesystem;
using mlxn::KvType;
using mlxn::cli::GenerateArgs;
using mlxn::model::Architecture;
using mlxn::test::CapturedFile;
using mlxn::test::TestDir;
using mlxn::test::throws_error;

GenerateArgs parse(const std::string& line) {
  return mlxn::test::parse_command<GenerateArgs>(mlxn::cli::add_generate_command, line);
}

TEST(GenerateCli, ParsesEveryOption) {
  const GenerateArgs a = parse(
      "generate --model dir --prompt 'Hello there' --max-tokens 5 --temperature 0.5 --top-k 40 "
      "--top-p 0.9 --min-p 0.05 --seed 7 --kv-k tq4 --kv-v tq3 --kv-boundary 2 --device cpu "
      "--max-context 64 --activations f32 --chat --no-stats");
  EXPECT_EQ(a.model, "dir");
  EXPECT_EQ(a.prompt, "Hello there");
  EXPECT_EQ(a.max_tokens, 5);
  EXPECT_FLOAT_EQ(a.temperature, 0.5f);
  EXPECT_EQ(a.top_k, 40);
  EXPECT_FLOAT_EQ(a.top_p, 0.9f);
  EXPECT_FLOAT_EQ(a.min_p, 0.05f);
  EXPECT_EQ(a.seed, 7u);
  EXPECT_EQ(a.device, "cpu");
  EXPECT_EQ(a.max_context, 64);
  EXPECT_EQ(a.activations, "f32");
  EXPECT_TRUE(a.chat);
  EXPECT_TRUE(a.no_stats);

  const mlxn::model::KvPolicy kv = mlxn::cli::kv_policy(a.kv);
  EXPECT_EQ(kv.k, KvType::tq4);
  EXPECT_EQ(kv.v, KvType::tq3);
  EXPECT_EQ(kv.boundary_layers, 2);
  EXPECT_EQ(kv.boundary_type, KvType::bf16);
  EXPECT_EQ(mlxn::cli::kv_policy_name(kv), "K tq4 / V tq3 (first and last 2 layers bf16)");

  const mlxn::SamplingParams s = mlxn::cli::sampling_params(a);
  EXPECT_FLOAT_EQ(s.temperature, 0.5f);
  EXPECT_EQ(s.top_k, 40);
  EXPECT_FLOAT_EQ(s.top_p, 0.9f);
  EXPECT_FLOAT_EQ(s.min_p, 0.05f);

  // --kv sets K and V; short forms; the prompt from a file.
  const GenerateArgs b = parse("generate --kv fp8 -n 3 -t 0 -p hi --device cuda");
  EXPECT_EQ(mlxn::cli::kv_policy(b.kv).k, KvType::fp8);
  EXPECT_EQ(mlxn::cli::kv_policy(b.kv).v, KvType::fp8);
  EXPECT_EQ(mlxn::cli::kv_policy_name(mlxn::cli::kv_policy(b.kv)), "fp8");
  EXPECT_EQ(b.max_tokens, 3);
  EXPECT_EQ(b.temperature, 0.0f);
  EXPECT_EQ(b.prompt, "hi");
  EXPECT_EQ(b.device, "cuda");
  EXPECT_EQ(parse("generate --prompt-file p.txt").prompt_file, "p.txt");
}

TEST(GenerateCli, Defaults) {
  const GenerateArgs a = parse("generate");
  EXPECT_EQ(a.model, "");
  EXPECT_EQ(a.prompt, "");
  EXPECT_EQ(a.prompt_file, "");
  EXPECT_EQ(a.max_tokens, 128);
  EXPECT_FLOAT_EQ(a.temperature, 0.8f);
  EXPECT_EQ(a.seed, 0u);  // reproducible unless asked otherwise
  EXPECT_EQ(a.device, "");
  EXPECT_EQ(a.max_context, 0);
  EXPECT_EQ(a.activations, "bf16");
  EXPECT_FALSE(a.chat);
  EXPECT_FALSE(a.no_stats);
  const mlxn::model::KvPolicy kv = mlxn::cli::kv_policy(a.kv);
  EXPECT_EQ(kv.k, KvType::bf16);
  EXPECT_EQ(kv.v, KvType::bf16);
  EXPECT_EQ(kv.boundary_layers, 0);
  const mlxn::SamplingParams s = mlxn::cli::sampling_params(a);
  EXPECT_EQ(s.top_k, 0);
  EXPECT_EQ(s.top_p, 1.0f);
  EXPECT_EQ(s.min_p, 0.0f);
}

TEST(GenerateCli, ArgumentErrors) {
  for (const char* bad :
       {"generate --prompt a --prompt-file b", "generate --kv tq4 --kv-k tq3",
        "generate --kv tq4 --kv-v tq3", "generate --kv tq7", "generate --kv-k int8",
        "generate --device tpu", "generate --activations f16", "generate --temperature -1",
        "generate --top-p 1.5", "generate --min-p 2", "generate --max-tokens -1",
        "generate --top-k -3", "generate --max-context 0", "generate --kv-boundary -1",
        "generate --seed x", "generate --frobnicate", "generate extra", "generate --model"}) {
    EXPECT_THROW(parse(bad), CLI::ParseError) << bad;
  }
  // What the parser's ranges let through, the options check.
  GenerateArgs a;
  a.top_p = 0.0f;
  EXPECT_TRUE(throws_error([&] { (void)mlxn::cli::sampling_params(a); }, "[generate]",
                           {"--top-p", "(0, 1]"}));
  a = GenerateArgs();
  a.temperature = -0.5f;
  EXPECT_TRUE(
      throws_error([&] { (void)mlxn::cli::sampling_params(a); }, "[generate]", {"--temperature"}));
  EXPECT_TRUE(throws_error([] { (void)mlxn::cli::pick_device("tpu", "generate"); }, "[generate]",
                           {"'tpu'"}));
  if (mlxn::cuda_device_count() == 0) {
    EXPECT_TRUE(throws_error([] { (void)mlxn::cli::pick_device("cuda", "generate"); }, "[generate]",
                             {"--device cuda", "no CUDA device"}));
    EXPECT_TRUE(mlxn::cli::pick_device("", "generate").is_cpu());
  } else {
    EXPECT_TRUE(mlxn::cli::pick_device("", "generate").is_cuda());
  }
}

// The vocabulary as a set of token strings.
std::function<bool(std::string_view)> vocab(std::set<std::string> tokens) {
  return
      [tokens = std::move(tokens)](std::string_view t) { return tokens.contains(std::string(t)); };
}

TEST(GenerateCli, ChatTemplateFromVocabulary) {
  using mlxn::cli::select_chat_template;
  const auto family = [](const std::set<std::string>& tokens, Architecture arch) {
    return std::string(select_chat_template(vocab(tokens), arch).family);
  };
  EXPECT_EQ(family({"<|begin_of_text|>", "<|start_header_id|>", "<|eot_id|>"}, Architecture::llama),
            "llama3");
  EXPECT_EQ(family({"<|im_start|>", "<|im_end|>"}, Architecture::qwen2), "chatml");
  EXPECT_EQ(family({"<|im_start|>", "<|im_end|>"}, Architecture::qwen3), "chatml");
  EXPECT_EQ(family({"<bos>", "<start_of_turn>", "<end_of_turn>"}, Architecture::gemma3), "gemma");
  EXPECT_EQ(family({"<s>", "[INST]", "[/INST]"}, Architecture::mistral), "mistral");
  // Llama 2 / Mistral v0.1: plain-text [INST] over a SentencePiece vocabulary.
  EXPECT_EQ(family({"<s>", "</s>", "\xe2\x96\x81", "<0x0A>"}, Architecture::llama), "mistral");
  EXPECT_EQ(family({"<s>", "<0x0A>"}, Architecture::mistral), "mistral");
  // A marker wins over the architecture's fallback, in the table's order.
  EXPECT_EQ(family({"<|start_header_id|>", "[INST]", "\xe2\x96\x81"}, Architecture::mistral),
            "llama3");

  const mlxn::cli::ChatTemplate llama3 =
      select_chat_template(vocab({"<|start_header_id|>"}), Architecture::llama);
  EXPECT_EQ(llama3.bos, "<|begin_of_text|>");
  EXPECT_EQ(llama3.turn_end, "<|eot_id|>");
  EXPECT_EQ(std::string(llama3.before) + "Hi" + std::string(llama3.after),
            "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>"
            "assistant<|end_header_id|>\n\n");
  const mlxn::cli::ChatTemplate chatml =
      select_chat_template(vocab({"<|im_start|>"}), Architecture::qwen2);
  EXPECT_EQ(std::string(chatml.before) + "Hi" + std::string(chatml.after),
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
  EXPECT_EQ(chatml.turn_end, "<|im_end|>");
  const mlxn::cli::ChatTemplate gemma =
      select_chat_template(vocab({"<start_of_turn>"}), Architecture::gemma3);
  EXPECT_EQ(std::string(gemma.before) + "Hi" + std::string(gemma.after),
            "<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n");
  EXPECT_EQ(gemma.turn_end, "<end_of_turn>");
  const mlxn::cli::ChatTemplate inst = select_chat_template(vocab({"[INST]"}), Architecture::llama);
  EXPECT_EQ(std::string(inst.before) + "Hi" + std::string(inst.after), "[INST] Hi [/INST]");
  EXPECT_EQ(inst.bos, "<s>");

  // Byte-level vocabularies without markers: no template.
  for (Architecture arch : {Architecture::llama, Architecture::qwen2, Architecture::gemma3}) {
    EXPECT_TRUE(throws_error(
        [&] {
          (void)select_chat_template(vocab({"a", "b"}), arch);
        },
        "[generate]",
        {"--chat: no chat template known for this model", mlxn::model::architecture_name(arch),
         "<|im_start|>"}));
  }
  // SentencePiece alone does not make a qwen or gemma model an [INST] model.
  EXPECT_TRUE(
      throws_error([] { (void)select_chat_template(vocab({"\xe2\x96\x81"}), Architecture::qwen3); },
                   "[generate]", {"no chat template"}));
}

// The byte-level tokenizer with Llama 3's four chat tokens added (ids 256..259), and a
// post-processor that adds <|begin_of_text|> when `adds_bos`.
mlxn::Tokenizer llama3_chat_tokenizer(bool adds_bos) {
  nlohmann::json j = nlohmann::json::parse(mlxn::test::byte_level_tokenizer_json());
  const char* special[] = {"<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
                           "<|eot_id|>"};
  for (int i = 0; i < 4; ++i) {
    j["added_tokens"].push_back({{"id", 256 + i},
                                 {"content", special[i]},
                                 {"single_word", false},
                                 {"lstrip", false},
                                 {"rstrip", false},
                                 {"normalized", false},
                                 {"special", true}});
  }
  if (adds_bos) {
    const nlohmann::json bos = {{"SpecialToken", {{"id", "<|begin_of_text|>"}, {"type_id", 0}}}};
    j["post_processor"] = {
        {"type", "TemplateProcessing"},
        {"single", {bos, {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}}},
        {"pair",
         {bos,
          {{"Sequence", {{"id", "A"}, {"type_id", 0}}}},
          bos,
          {{"Sequence", {{"id", "B"}, {"type_id", 1}}}}}},
        {"special_tokens",
         {{"<|begin_of_text|>",
           {{"id", "<|begin_of_text|>"}, {"ids", {256}}, {"tokens", {"<|begin_of_text|>"}}}}}}};
  }
  return mlxn::Tokenizer::from_json(j.dump(), "llama3_chat_tokenizer.json");
}

TEST(GenerateCli, ChatPromptIds) {
  for (bool adds_bos : {false, true}) {
    SCOPED_TRACE(adds_bos ? "post-processor adds BOS" : "no post-processor");
    const mlxn::Tokenizer t = llama3_chat_tokenizer(adds_bos);
    const auto in_vocab = [&](std::string_view token) { return t.token_to_id(token).has_value(); };
    const mlxn::cli::ChatTemplate chat =
        mlxn::cli::select_chat_template(in_vocab, Architecture::llama);
    ASSERT_EQ(chat.family, "llama3");
    // <|begin_of_text|> once, the header tokens as single ids, the prompt's bytes.
    std::vector<int32_t> want = {256, 257};
    for (char c : std::string("user")) want.push_back(c);
    want.push_back(258);
    want.insert(want.end(), {'\n', '\n', 'H', 'i', 259, 257});
    for (char c : std::string("assistant")) want.push_back(c);
    want.insert(want.end(), {258, '\n', '\n'});
    EXPECT_EQ(mlxn::cli::prompt_ids(t, "Hi", &chat), want);
    // Without --chat the text is encoded as it is, the post-processor's BOS included.
    std::vector<int32_t> plain = {'H', 'i'};
    if (adds_bos) plain.insert(plain.begin(), 256);
    EXPECT_EQ(mlxn::cli::prompt_ids(t, "Hi", nullptr), plain);
  }
}

TEST(GenerateCli, DefaultModelLookupOrder) {
  using mlxn::cli::default_model_path;
  using mlxn::cli::DefaultModelSearch;
  TestDir dir;
  const fs::path exe_dir = dir.path() / "bin";
  const fs::path beside_exe = exe_dir / "models/tiny-stories";
  const fs::path source = dir.path() / "src/models/tiny-stories";
  const fs::path env_model = dir.path() / "mine";
  fs::create_directories(exe_dir);
  fs::create_directories(env_model);

  // Nothing exists: the error names every place and asks for --model.
  DefaultModelSearch s{std::nullopt, exe_dir, source.string()};
  EXPECT_TRUE(throws_error([&] { (void)default_model_path(s); }, "[generate]",
                           {"default model was not found", "MLXN_DEFAULT_MODEL",
                            beside_exe.string(), source.string(), "pass --model PATH"}));
  // The source tree's copy, then the one beside the executable first.
  fs::create_directories(source);
  EXPECT_EQ(default_model_path(s), source.string());
  fs::create_directories(beside_exe);
  EXPECT_EQ(default_model_path(s), beside_exe.string());
  // The environment variable wins, and must name something that exists.
  s.env = env_model.string();
  EXPECT_EQ(default_model_path(s), env_model.string());
  s.env = (dir.path() / "missing").string();
  EXPECT_TRUE(throws_error([&] { (void)default_model_path(s); }, "[generate]",
                           {"MLXN_DEFAULT_MODEL", "missing", "--model"}));
  // This process's search reads the variable.
  ::setenv("MLXN_DEFAULT_MODEL", env_model.string().c_str(), 1);
  EXPECT_EQ(mlxn::cli::default_model_search().env, env_model.string());
  ::setenv("MLXN_DEFAULT_MODEL", "", 1);  // empty counts as unset
  EXPECT_FALSE(mlxn::cli::default_model_search().env.has_value());
  ::unsetenv("MLXN_DEFAULT_MODEL");
  EXPECT_FALSE(mlxn::cli::default_model_search().env.has_value());
  EXPECT_FALSE(mlxn::cli::default_model_search().exe_dir.empty());
}

// ---- whole runs on the CPU ----------------------------------------------------------------------

struct Generated {
  mlxn::cli::GenerateResult result;
  std::string out, err;
};

Generated generate_captured(const GenerateArgs& args) {
  CapturedFile out, err;
  Generated r;
  r.result = mlxn::cli::generate(args, out.get(), err.get());
  r.out = out.text();
  r.err = err.text();
  return r;
}

GenerateArgs cpu_args(const TestDir& dir) {
  GenerateArgs a;
  a.model = dir.path().string();
  a.device = "cpu";
  a.temperature = 0.0f;
  return a;
}

// Greedy ids straight from the Runner, with the options generate uses by default (bf16
// activations and cache, one sequence sized for the prompt and the new tokens); stops after
// `max_tokens` or at an id of `eos` (included).
std::vector<int32_t> runner_greedy(const std::string& dir, const std::vector<int32_t>& prompt,
                                   int64_t max_tokens, const std::set<int32_t>& eos) {
  const mlxn::Stream& s = mlxn::test::cpu_stream();
  mlxn::model::LoadedModel m = mlxn::model::load_model(dir, s);
  mlxn::model::RunnerOptions o;
  o.max_context = static_cast<int64_t>(prompt.size()) + max_tokens;
  mlxn::model::Runner runner(m.config, m.weights, o, s);
  const int seq = runner.add_sequence();
  const mlxn::Buffer id = mlxn::Buffer::empty({1}, mlxn::DType::i32, s);
  mlxn::argmax(runner.prefill(seq, prompt), id, s);
  std::vector<int32_t> out;
  for (;;) {
    out.push_back(id.to_host<int32_t>(s)[0]);
    if (eos.contains(out.back()) || static_cast<int64_t>(out.size()) == max_tokens) return out;
    const int32_t token[] = {out.back()};
    const int seqs[] = {seq};
    mlxn::argmax(runner.decode(seqs, token), id, s);
  }
}

TEST(GenerateCli, GreedyRunStreamsTheRunnersTokens) {
  TestDir dir;
  mlxn::test::write_tiny_model(dir.path());
  const mlxn::Tokenizer tokenizer = mlxn::Tokenizer::from_model_path(dir.path().string());
  GenerateArgs a = cpu_args(dir);
  a.max_tokens = 12;
  const Generated run = generate_captured(a);

  // The default prompt, one token per byte (this tokenizer adds no BOS).
  const std::string prompt = mlxn::cli::kDefaultPrompt;
  ASSERT_EQ(run.result.prompt.size(), prompt.size());
  for (size_t i = 0; i < prompt.size(); ++i)
    EXPECT_EQ(run.result.prompt[i], static_cast<unsigned char>(prompt[i]));

  // The llama fixture's config says eos 2.
  const std::vector<int32_t> want = runner_greedy(dir.path().string(), run.result.prompt, 12, {2});
  EXPECT_EQ(run.result.generated, want);
  const std::vector<int32_t>& got = run.result.generated;
  const bool ended = run.result.stop == "eos";
  // The prompt is echoed, then the generated text, decoded as one sequence.
  std::vector<int32_t> text_ids = run.result.prompt;
  text_ids.insert(text_ids.end(), got.begin(), got.end() - (ended ? 1 : 0));
  EXPECT_EQ(run.out, tokenizer.decode(text_ids, {.skip_special = true}) + "\n");
  EXPECT_EQ(run.out.rfind(prompt, 0), 0u) << run.out;
  // One statistics line.
  EXPECT_EQ(run.err.find('\n'), run.err.size() - 1) << run.err;
  for (const char* part : {"prompt 16 tokens, prefill ", "tokens/s; generated ", "decode ",
                           "KV cache bf16: ", " B/token", "allocated"}) {
    EXPECT_NE(run.err.find(part), std::string::npos) << part << " in " << run.err;
  }
  // bf16 K and V of 2 layers, 1 kv-head of 64, and a page-table entry per 16 tokens.
  EXPECT_DOUBLE_EQ(run.result.kv_bytes_per_token, 2 * 2 * 64 * 2 + 4.0 / 16);
  EXPECT_GT(run.result.kv_bytes_used, 0);
  EXPECT_LE(run.result.kv_bytes_used, run.result.kv_bytes_allocated);
}

TEST(GenerateCli, MaxTokensAndEndOfSequence) {
  TestDir dir;
  mlxn::test::write_tiny_model(dir.path());
  GenerateArgs a = cpu_args(dir);
  a.max_tokens = 3;
  a.no_stats = true;
  const Generated three = generate_captured(a);
  ASSERT_EQ(three.result.generated.size(), 3u);
  EXPECT_EQ(three.result.stop, "max tokens");
  EXPECT_EQ(three.err, "");  // --no-stats

  // Zero tokens: the prompt is prefilled, nothing is printed but the newline.
  a.max_tokens = 0;
  const Generated none = generate_captured(a);
  EXPECT_TRUE(none.result.generated.empty());
  EXPECT_EQ(none.out, "\n");

  // An id of generation_config.json ends the run where greedy decoding first produces it.
  a.max_tokens = 12;
  const Generated free_run = generate_captured(a);
  const std::vector<int32_t>& ids = free_run.result.generated;
  size_t stop_at = 1;
  while (stop_at < ids.size() &&
         std::find(ids.begin(), ids.begin() + static_cast<std::ptrdiff_t>(stop_at), ids[stop_at]) !=
             ids.begin() + static_cast<std::ptrdiff_t>(stop_at))
    ++stop_at;
  ASSERT_LT(stop_at, ids.size()) << "every greedy token repeats an earlier one";
  mlxn::test::write_text(dir.file("generation_config.json"),
                         "{\"eos_token_id\": [255, " + std::to_string(ids[stop_at]) + "]}");
  const Generated stopped = generate_captured(a);
  EXPECT_EQ(stopped.result.stop, "eos");
  ASSERT_EQ(stopped.result.generated.size(), stop_at + 1);
  EXPECT_TRUE(std::equal(ids.begin(), ids.begin() + static_cast<std::ptrdiff_t>(stop_at + 1),
                         stopped.result.generated.begin()));
  const mlxn::Tokenizer tokenizer = mlxn::Tokenizer::from_model_path(dir.path().string());
  std::vector<int32_t> shown = stopped.result.prompt;
  shown.insert(shown.end(), ids.begin(), ids.begin() + static_cast<std::ptrdiff_t>(stop_at));
  EXPECT_EQ(stopped.out, tokenizer.decode(shown, {.skip_special = true}) + "\n");

  // A single id works too; a malformed file is an error naming it.
  mlxn::test::write_text(dir.file("generation_config.json"),
                         "{\"eos_token_id\": " + std::to_string(ids[stop_at]) + "}");
  EXPECT_EQ(generate_captured(a).result.generated.size(), stop_at + 1);
  mlxn::test::write_text(dir.file("generation_config.json"), "{\"eos_token_id\": \"x\"}");
  EXPECT_TRUE(throws_error([&] { (void)generate_captured(a); }, "[generate]",
                           {"generation_config.json", "eos_token_id"}));
}

TEST(GenerateCli, SamplingIsReproducibleBySeed) {
  TestDir dir;
  mlxn::test::write_tiny_model(dir.path());
  GenerateArgs a = cpu_args(dir);
  a.temperature = 1.0f;
  a.top_k = 50;
  a.max_tokens = 8;
  a.no_stats = true;
  const Generated first = generate_captured(a);
  const Generated again = generate_captured(a);
  EXPECT_EQ(first.result.generated, again.result.generated);
  EXPECT_EQ(first.out, again.out);
  // Another seed draws other tokens (8 draws of a near-uniform random model all equal by chance:
  // negligible).
  a.seed = 12345;
  EXPECT_NE(generate_captured(a).result.generated, first.result.generated);
}

TEST(GenerateCli, PromptOptionsAndErrors) {
  TestDir dir;
  mlxn::test::write_tiny_model(dir.path());
  GenerateArgs a = cpu_args(dir);
  a.max_tokens = 2;
  a.no_stats = true;

  mlxn::test::write_text(dir.file("prompt.txt"), "The cat\n");
  a.prompt_file = dir.file("prompt.txt");
  const std::vector<int32_t> from_file = generate_captured(a).result.prompt;
  EXPECT_EQ(from_file, (std::vector<int32_t>{'T', 'h', 'e', ' ', 'c', 'a', 't', '\n'}));
  a.prompt_file = dir.file("absent.txt");
  EXPECT_TRUE(throws_error([&] { (void)generate_captured(a); }, "[generate]",
                           {"--prompt-file", "absent.txt"}));
  a.prompt_file.clear();

  // Longer than the context asked for, or than the model's 256 positions.
  a.prompt = "a prompt of more than eight bytes";
  a.max_context = 8;
  EXPECT_TRUE(throws_error([&] { (void)generate_captured(a); }, "[generate]",
                           {"33 tokens", "longer than the context of 8 tokens", "--max-context"}));
  a.max_context = 0;
  a.prompt = std::string(300, 'x');
  EXPECT_TRUE(throws_error([&] { (void)generate_captured(a); }, "[generate]",
                           {"300 tokens", "256", "max_position_embeddings"}));
  // A context the prompt fills: one token from the prompt's logits, then it is full.
  a.prompt = "abcd";
  a.max_context = 4;
  a.max_tokens = 10;
  const Generated full = generate_captured(a);
  EXPECT_EQ(full.result.stop, "context full");
  EXPECT_EQ(full.result.generated.size(), 1u);

  // This byte-level llama has no chat markers.
  a = cpu_args(dir);
  a.chat = true;
  EXPECT_TRUE(throws_error([&] { (void)generate_captured(a); }, "[generate]",
                           {"--chat: no chat template known"}));
  // A missing model is named; the library's own errors surface as they are.
  a = cpu_args(dir);
  a.model = dir.file("nothing-here");
  EXPECT_TRUE(throws_error([&] { (void)generate_captured(a); }, "[generate]",
                           {"--model", "nothing-here", "does not exist"}));
  fs::remove(dir.file("tokenizer.json"));
  a.model = dir.path().string();
  EXPECT_THROW((void)generate_captured(a), mlxn::Error);
}

TEST(GenerateCli, F32AndCompressedCachesRun) {
  TestDir dir;
  mlxn::test::write_tiny_model(dir.path());
  GenerateArgs a = cpu_args(dir);
  a.max_tokens = 4;
  a.activations = "f32";
  a.kv.both = "f32";
  const Generated f32 = generate_captured(a);
  EXPECT_EQ(f32.result.generated.size(), 4u);
  EXPECT_NE(f32.err.find("KV cache f32"), std::string::npos) << f32.err;
  a = cpu_args(dir);
  a.max_tokens = 4;
  a.kv.k = "tq4";
  a.kv.v = "tq3";
  a.kv.boundary = 1;
  const Generated tq = generate_captured(a);
  EXPECT_EQ(tq.result.generated.size(), 4u);
  EXPECT_NE(tq.err.find("KV cache K tq4 / V tq3 (first and last 1 layer bf16)"), std::string::npos)
      << tq.err;
}

}  // namespace
