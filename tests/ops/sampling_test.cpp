// Sampling on the CPU: argmax ties, the kept set of each warper on hand-computed distributions,
// the empirical distribution against the softmax (chi-square), steps and reproducibility,
// penalties on known values, and bad input.
#include <gtest/gtest.h>

#include <cmath>
#include <set>

#include "support/support.h"

using namespace mlxn;
using mlxn::test::cpu_stream;
using mlxn::test::throws_error;

namespace {

Buffer f32_rows(const std::vector<float>& v, int64_t rows, const Stream& s) {
  return Buffer::from_host(std::span<const float>(v), {rows, static_cast<int64_t>(v.size()) / rows},
                           DType::f32, s);
}

Buffer i64s(const std::vector<int64_t>& v, const Stream& s) {
  return Buffer::from_host(std::span<const int64_t>(v), {static_cast<int64_t>(v.size())},
                           DType::i64, s);
}

// Tokens drawn by `draws` calls on one row (the step advancing each call).
std::vector<int64_t> histogram_of_draws(const Buffer& logits, const SamplingParams& p, int draws,
                                        uint64_t seed) {
  const Stream& s = cpu_stream();
  const int64_t v = logits.dim(1);
  Buffer seeds = i64s({static_cast<int64_t>(seed)}, s), steps = i64s({0}, s);
  Buffer out = Buffer::empty({1}, DType::i32, s);
  std::vector<int64_t> counts(static_cast<size_t>(v), 0);
  for (int i = 0; i < draws; ++i) {
    sample(logits, p, seeds, steps, out, s);
    ++counts[static_cast<size_t>(out.to_host<int32_t>(s)[0])];
  }
  EXPECT_EQ(steps.to_host<int64_t>(s)[0], draws);
  return counts;
}

}  // namespace

TEST(Sampling, ArgmaxTakesTheFirstMaximum) {
  const Stream& s = cpu_stream();
  const float inf = INFINITY;
  Buffer logits = f32_rows({1, 5, 5, -inf, /**/ -inf, -inf, 2, 2, /**/ 0, 0, 0, 0}, 3, s);
  Buffer out = Buffer::empty({3}, DType::i32, s);
  argmax(logits, out, s);
  EXPECT_EQ(out.to_host<int32_t>(s), (std::vector<int32_t>{1, 2, 0}));
  SamplingParams greedy;
  greedy.temperature = 0;
  Buffer other = Buffer::empty({3}, DType::i32, s);
  sample(logits, greedy, Buffer(), Buffer(), other, s);  // greedy needs no seeds
  EXPECT_EQ(other.to_host<int32_t>(s), out.to_host<int32_t>(s));
}

TEST(Sampling, DrawsStayInTheKeptSetOfEachWarper) {
  // p = 0.4, 0.25, 0.15, 0.1, 0.05, 0.05 at temperature 1.
  const std::vector<double> p = {0.4, 0.25, 0.15, 0.1, 0.05, 0.05};
  std::vector<float> l;
  for (double v : p) l.push_back(static_cast<float>(std::log(v)));
  const Buffer logits = f32_rows(l, 1, cpu_stream());
  struct Case {
    SamplingParams params;
    std::set<int> kept;
  };
  const Case cases[] = {
      {{1.0f, 3, 1.0f, 0.0f}, {0, 1, 2}},
      // mass strictly above: 0, 0.4, 0.65 -> the third is not below 0.5
      {{1.0f, 0, 0.5f, 0.0f}, {0, 1}},
      // over the top 3 (0.8): 0.5, 0.3125, 0.1875; mass above 0, 0.5, 0.8125 vs 0.7
      {{1.0f, 3, 0.7f, 0.0f}, {0, 1}},
      // p >= 0.3 * 0.4 = 0.12
      {{1.0f, 0, 1.0f, 0.3f}, {0, 1, 2}},
      {{1.0f, 1, 1.0f, 0.0f}, {0}},
      {{1.0f, 0, 0.01f, 0.0f}, {0}},
  };
  for (const Case& c : cases) {
    const auto counts = histogram_of_draws(logits, c.params, 600, 77);
    for (int t = 0; t < 6; ++t) {
      if (c.kept.count(t)) {
        EXPECT_GT(counts[static_cast<size_t>(t)], 0) << "token " << t << " never drawn";
      } else {
        EXPECT_EQ(counts[static_cast<size_t>(t)], 0) << "token " << t << " drawn";
      }
    }
  }
  // Ties at the top-k boundary are all kept.
  const Buffer tied = f32_rows({1, 1, 1, 1, 1, 0}, 1, cpu_stream());
  const auto counts = histogram_of_draws(tied, {1.0f, 2, 1.0f, 0.0f}, 500, 5);
  for (int t = 0; t < 5; ++t) EXPECT_GT(counts[static_cast<size_t>(t)], 0) << t;
  EXPECT_EQ(counts[5], 0);
}

TEST(Sampling, EmpiricalDistributionMatchesTheSoftmax) {
  const int64_t v = 24;
  Buffer logits = test::random_buffer({1, v}, DType::f32, 3, cpu_stream());
  const auto l = test::to_f64(logits, cpu_stream());
  const float temperature = 0.7f;
  std::vector<double> want(static_cast<size_t>(v));
  double total = 0;
  for (int64_t i = 0; i < v; ++i) total += want[i] = std::exp(l[i] / temperature);
  for (double& w : want) w /= total;
  const auto counts = histogram_of_draws(logits, {temperature, 0, 1.0f, 0.0f}, 20000, 11);
  const test::ChiSquare c = test::chi_square(counts, want);
  EXPECT_LT(c.statistic, test::chi_square_bound(c.df)) << "df " << c.df;
}

TEST(Sampling, StepsAdvanceAndDrawsRepeat) {
  const Stream& s = cpu_stream();
  Buffer logits = test::random_buffer({3, 1000}, DType::bf16, 4, s);
  Buffer seeds = i64s({1, 2, 3}, s), steps = i64s({10, 0, 5}, s);
  Buffer a = Buffer::empty({3}, DType::i32, s), b = Buffer::empty({3}, DType::i32, s);
  const SamplingParams params{1.5f, 0, 0.95f, 0.0f};
  sample(logits, params, seeds, steps, a, s);
  EXPECT_EQ(steps.to_host<int64_t>(s), (std::vector<int64_t>{11, 1, 6}));
  Buffer again = i64s({10, 0, 5}, s);
  sample(logits, params, seeds, again, b, s);
  EXPECT_EQ(a.to_host<int32_t>(s), b.to_host<int32_t>(s));
}

TEST(Sampling, PenaltiesOnKnownValues) {
  const Stream& s = cpu_stream();
  Buffer logits = f32_rows({2, -2, 1, 0.5f, /**/ 3, 3, 3, 3}, 2, s);
  const std::vector<int32_t> h = {0, 0, 1, 3, -1, /**/ -1, -1, -1, -1, 2};
  Buffer history = Buffer::from_host(std::span<const int32_t>(h), {2, 5}, DType::i32, s);
  apply_penalties(logits, history, {2.0f, 0.5f, 0.25f}, s);
  // token 0 twice: 2 / 2 - 0.5 - 0.5; token 1: -2 * 2 - 0.5 - 0.25; token 3: 0.5 / 2 - 0.75.
  EXPECT_EQ(logits.to_host<float>(s),
            (std::vector<float>{0.0f, -4.75f, 1.0f, -0.5f, 3.0f, 3.0f, 0.75f, 3.0f}));
}

TEST(Sampling, BadInputIsRejected) {
  const Stream& s = cpu_stream();
  Buffer logits = test::random_buffer({2, 10}, DType::f32, 1, s);
  Buffer seeds = i64s({1, 2}, s), steps = i64s({0, 0}, s);
  Buffer out = Buffer::empty({2}, DType::i32, s);
  const auto sample_with = [&](SamplingParams p) { sample(logits, p, seeds, steps, out, s); };
  EXPECT_TRUE(throws_error(
      [&] {
        sample_with({-1.0f, 0, 1.0f, 0.0f});
      },
      "[sample]", {"temperature"}));
  EXPECT_TRUE(throws_error(
      [&] {
        sample_with({NAN, 0, 1.0f, 0.0f});
      },
      "[sample]", {"temperature"}));
  EXPECT_TRUE(throws_error([&] { sample_with({1.0f, -3, 1.0f, 0.0f}); }, "[sample]", {"top_k"}));
  EXPECT_TRUE(throws_error([&] { sample_with({1.0f, 0, 0.0f, 0.0f}); }, "[sample]", {"top_p"}));
  EXPECT_TRUE(throws_error([&] { sample_with({1.0f, 0, 1.0f, 1.5f}); }, "[sample]", {"min_p"}));
  EXPECT_TRUE(throws_error([&] { sample(logits, {}, i64s({1}, s), steps, out, s); }, "[sample]",
                           {"seeds"}));
  EXPECT_TRUE(
      throws_error([&] { sample(logits, {}, seeds, steps, Buffer::empty({2}, DType::i64, s), s); },
                   "[sample]", {"out"}));
  EXPECT_TRUE(
      throws_error([&] { argmax(logits.reshape({20}), out, s); }, "[argmax]", {"[batch, vocab]"}));
  EXPECT_TRUE(throws_error(
      [&] {
        argmax(Buffer::empty({2, 10}, DType::i32, s), out, s);
      },
      "[argmax]", {"dtype"}));
  // NaN logits and out-of-range history tokens are device-side errors, raised at synchronize.
  Buffer nan = f32_rows({1, NAN, 2}, 1, s);
  Buffer one = Buffer::empty({1}, DType::i32, s);
  EXPECT_TRUE(throws_error(
      [&] {
        argmax(nan, one, s);
        s.synchronize();
      },
      "[sample]", {"logits"}));
  EXPECT_EQ(one.to_host<int32_t>(s)[0], 2);  // NaN counts as -inf
  const std::vector<int32_t> h = {0, 12};
  Buffer history = Buffer::from_host(std::span<const int32_t>(h), {1, 2}, DType::i32, s);
  EXPECT_TRUE(throws_error(
      [&] {
        apply_penalties(logits.slice(0, 0, 1), history, {1.2f, 0, 0}, s);
        s.synchronize();
      },
      "[apply_penalties]", {"history"}));
  EXPECT_TRUE(throws_error(
      [&] {
        apply_penalties(logits, history, {0.0f, 0, 0}, s);
      },
      "[apply_penalties]"));
}
