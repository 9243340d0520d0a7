#include "model/golden.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "mlxn/io/safetensors.h"
#include "mlxn/ops/memory.h"
#include "support/support.h"

namespace mlxn::test {

Golden load_golden(const std::string& model) {
  Golden g;
  g.dir = std::string(MLXN_TEST_FIXTURES) + "/models/" + model;
  const io::SafetensorsFile file = io::SafetensorsFile::open(g.dir + "/golden.safetensors");
  const Stream& s = cpu_stream();
  g.tokens = file.load(file.at("tokens"), s).to_host<int32_t>(s);
  g.prompt_len = file.load(file.at("prompt_len"), s).to_host<int32_t>(s).at(0);
  const Buffer logits = file.load(file.at("logits"), s);
  g.vocab = logits.dim(1);
  g.logits = logits.to_host<float>(s);
  g.logits_bf16 = file.load(file.at("logits_bf16"), s).to_host<float>(s);
  for (size_t i = 0; i < g.logits.size(); ++i) {
    g.bf16_deviation =
        std::max(g.bf16_deviation, std::fabs(static_cast<double>(g.logits_bf16[i]) - g.logits[i]));
  }
  if (logits.dim(0) != g.rows() || g.prompt_len <= 0 || g.prompt_len >= g.rows()) {
    throw std::runtime_error("malformed golden file in " + g.dir);
  }
  return g;
}

RowError compare_row(const float* got, const float* want, int64_t vocab) {
  RowError e;
  float best = -INFINITY;
  for (int64_t i = 0; i < vocab; ++i) {
    e.max_abs = std::max(e.max_abs, std::fabs(static_cast<double>(got[i]) - want[i]));
    e.row_absmax = std::max(e.row_absmax, std::fabs(static_cast<double>(want[i])));
    if (got[i] > best) {
      best = got[i];
      e.argmax = static_cast<int32_t>(i);
    }
  }
  return e;
}

std::vector<float> run_golden_sequence(model::Runner& runner, const Golden& g) {
  const Stream& s = runner.stream();
  std::vector<float> rows(static_cast<size_t>(g.rows() * g.vocab));
  const int seq = runner.add_sequence();
  const std::vector<int32_t> prompt(g.tokens.begin(), g.tokens.begin() + g.prompt_len);
  std::vector<float> host = runner.prefill(seq, prompt, true).to_host<float>(s);
  std::copy_n(host.begin(), g.prompt_len * g.vocab, rows.begin());
  for (int64_t r = g.prompt_len; r < g.rows(); ++r) {
    const int seqs[] = {seq};
    const int32_t token = g.tokens[static_cast<size_t>(r)];
    host = runner.decode(seqs, {&token, 1}).to_host<float>(s);
    std::copy_n(host.begin(), g.vocab, rows.begin() + r * g.vocab);
  }
  runner.free_sequence(seq);
  return rows;
}

int greedy_mismatches(const Golden& g, const std::vector<float>& logits) {
  int mismatches = 0;
  for (int64_t r = g.prompt_len - 1; r + 1 < g.rows(); ++r) {
    const float* row = logits.data() + r * g.vocab;
    const int64_t argmax = std::max_element(row, row + g.vocab) - row;
    mismatches += argmax != g.tokens[static_cast<size_t>(r + 1)];
  }
  return mismatches;
}

Deviation bf16_deviation(const Golden& g, const std::vector<float>& logits) {
  Deviation d;
  for (size_t i = 0; i < g.logits.size(); ++i) {
    d.ours = std::max(d.ours, std::fabs(static_cast<double>(logits[i]) - g.logits[i]));
  }
  d.transformers_bf16 = g.bf16_deviation;
  return d;
}

namespace {
// log-softmax of one row, in double.
std::vector<double> log_probs(const float* row, int64_t vocab) {
  const double m = *std::max_element(row, row + vocab);
  double sum = 0;
  for (int64_t i = 0; i < vocab; ++i) sum += std::exp(row[i] - m);
  const double log_sum = std::log(sum);
  std::vector<double> out(static_cast<size_t>(vocab));
  for (int64_t i = 0; i < vocab; ++i) out[static_cast<size_t>(i)] = row[i] - m - log_sum;
  return out;
}
}  // namespace

Divergence divergence(const std::vector<float>& reference, const std::vector<float>& logits,
                      int64_t vocab, int64_t first) {
  Divergence d;
  const int64_t rows = static_cast<int64_t>(reference.size()) / vocab;
  int64_t agree = 0;
  for (int64_t r = first; r < rows; ++r) {
    const float* ref = reference.data() + r * vocab;
    const float* got = logits.data() + r * vocab;
    const std::vector<double> lp = log_probs(ref, vocab), lq = log_probs(got, vocab);
    double kl = 0;
    for (int64_t i = 0; i < vocab; ++i) {
      const double p = std::exp(lp[static_cast<size_t>(i)]);
      kl += p * (lp[static_cast<size_t>(i)] - lq[static_cast<size_t>(i)]);
    }
    d.mean_kl += kl;
    d.max_kl = std::max(d.max_kl, kl);
    agree +=
        (std::max_element(ref, ref + vocab) - ref) == (std::max_element(got, got + vocab) - got);
  }
  d.mean_kl /= static_cast<double>(rows - first);
  d.top1_agreement = static_cast<double>(agree) / static_cast<double>(rows - first);
  return d;
}

}  // namespace mlxn::test
