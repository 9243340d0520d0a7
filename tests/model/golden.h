// The golden fixtures of tests/fixtures/models (scripts/make_fixtures.py): tiny random-weight
// checkpoints of each architecture with the logits transformers computed for a prompt and 16
// greedy decode steps, in f32 and in bf16.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "mlxn/core/buffer.h"
#include "mlxn/core/stream.h"
#include "mlxn/model/runner.h"

namespace mlxn::test {

inline constexpr const char* kGoldenModels[] = {"llama", "mistral", "qwen2", "qwen3", "gemma3"};

struct Golden {
  std::string dir;              // the checkpoint directory
  std::vector<int32_t> tokens;  // prompt, then the f32 model's greedy tokens
  int64_t prompt_len = 0;
  int64_t vocab = 0;
  std::vector<float> logits;       // [tokens, vocab], f32 pass: row i predicts token i + 1
  std::vector<float> logits_bf16;  // the same through the model in bf16
  double bf16_deviation = 0;       // max |logits_bf16 - logits|: the scale of bf16 error
  int64_t rows() const { return static_cast<int64_t>(tokens.size()); }
  const float* row(int64_t i) const { return logits.data() + i * vocab; }
  const float* row_bf16(int64_t i) const { return logits_bf16.data() + i * vocab; }
};

Golden load_golden(const std::string& model);

struct RowError {
  double max_abs = 0;     // largest |got - want| over the row
  double row_absmax = 0;  // largest |want| over the row
  int32_t argmax = -1;    // of got
};
// `got` is [vocab] f32 on the host.
RowError compare_row(const float* got, const float* want, int64_t vocab);

// Every row of logits of the golden sequence through `runner` ([rows, vocab] f32, host): the
// prompt in one prefill call (all logits), then each later golden token in its own decode step
// (teacher-forced, so rows compare one to one). Uses a fresh sequence and frees it.
std::vector<float> run_golden_sequence(model::Runner& runner, const Golden& g);

// Greedy steps (rows prompt_len - 1 .. rows - 2) whose argmax differs from the golden token.
int greedy_mismatches(const Golden& g, const std::vector<float>& logits);

// Largest |logits - golden f32| over every row, and the same for transformers' own bf16 pass:
// the scale of bf16 error that a bf16 run is held to.
struct Deviation {
  double ours = 0;
  double transformers_bf16 = 0;
};
Deviation bf16_deviation(const Golden& g, const std::vector<float>& logits);

// Next-token distributions of `logits` against `reference` (both [rows, vocab]) over rows
// [first, rows): mean and largest KL(reference || logits) in nats, and the share of rows whose
// argmax agrees.
struct Divergence {
  double mean_kl = 0;
  double max_kl = 0;
  double top1_agreement = 0;
};
Divergence divergence(const std::vector<float>& reference, const std::vector<float>& logits,
                      int64_t vocab, int64_t first);

}  // namespace mlxn::test
