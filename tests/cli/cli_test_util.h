// Helpers for the tests of the model-running commands: a tiny runnable model directory (a golden
// fixture's checkpoint with a byte-level tokenizer beside it) and capture of what a command writes
// to a FILE*.
#pragma once

#include <CLI/CLI.hpp>
#include <cstdio>
#include <filesystem>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "io/io_test_util.h"
#include "tokenizer/unicode.h"

namespace mlxn::test {

// `line` (without the program name) parsed by an app holding only the command that `add`
// (an add_<command>_command function) registers.
template <typename Args, typename Add>
Args parse_command(Add add, const std::string& line) {
  CLI::App app;
  Args args;
  add(app, args);
  app.parse(line, false);
  return args;
}

// GPT-2's byte-level symbol of `byte` (the tokenizer's own table): token id b is the symbol of
// byte b, so the 256 symbols encode any text without merges.
inline std::string byte_level_symbol(int byte) {
  const char c = static_cast<char>(byte);
  return tokenizer_detail::to_byte_level(std::string_view(&c, 1));
}

// A tokenizer.json of a ByteLevel BPE whose vocabulary is the 256 byte symbols, without merges,
// post-processor or added tokens: every byte of the text is one token, its id the byte.
inline std::string byte_level_tokenizer_json() {
  nlohmann::json vocab = nlohmann::json::object();
  for (int b = 0; b < 256; ++b) vocab[byte_level_symbol(b)] = b;
  const nlohmann::json byte_level = {{"type", "ByteLevel"},
                                     {"add_prefix_space", false},
                                     {"trim_offsets", true},
                                     {"use_regex", true}};
  const nlohmann::json j = {{"version", "1.0"},
                            {"truncation", nullptr},
                            {"padding", nullptr},
                            {"added_tokens", nlohmann::json::array()},
                            {"normalizer", nullptr},
                            {"pre_tokenizer", byte_level},
                            {"post_processor", nullptr},
                            {"decoder", byte_level},
                            {"model",
                             {{"type", "BPE"},
                              {"dropout", nullptr},
                              {"unk_token", nullptr},
                              {"continuing_subword_prefix", nullptr},
                              {"end_of_word_suffix", nullptr},
                              {"fuse_unk", false},
                              {"byte_fallback", false},
                              {"ignore_merges", false},
                              {"vocab", vocab},
                              {"merges", nlohmann::json::array()}}}};
  return j.dump(1);
}

// `dir` gets the llama golden fixture's config.json and model.safetensors (vocab 256) and the
// byte-level tokenizer.json: a model `generate` can run.
inline void write_tiny_model(const std::filesystem::path& dir) {
  const std::filesystem::path fixture = std::filesystem::path(MLXN_TEST_FIXTURES) / "models/llama";
  for (const char* name : {"config.json", "model.safetensors"}) {
    std::filesystem::copy_file(fixture / name, dir / name,
                               std::filesystem::copy_options::overwrite_existing);
  }
  write_text((dir / "tokenizer.json").string(), byte_level_tokenizer_json());
}

// A temporary FILE* whose contents can be read back.
class CapturedFile {
 public:
  CapturedFile() : file_(std::tmpfile()) {}
  ~CapturedFile() {
    if (file_ != nullptr) std::fclose(file_);
  }
  CapturedFile(const CapturedFile&) = delete;
  CapturedFile& operator=(const CapturedFile&) = delete;

  std::FILE* get() const { return file_; }
  std::string text() const {
    std::fflush(file_);
    std::rewind(file_);
    std::string out;
    char chunk[4096];
    for (size_t n; (n = std::fread(chunk, 1, sizeof(chunk), file_)) > 0;) out.append(chunk, n);
    return out;
  }

 private:
  std::FILE* file_;
};

}  // namespace mlxn::test
