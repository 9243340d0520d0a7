// Sampling on the GPU: argmax against the CPU over odd and vocabulary-sized rows, 10^5 draws
// against the warped softmax (chi-square, nothing outside the kept set), exact repetition run to
// run and between batch sizes, agreement with the CPU reference, CUDA-graph replay, penalties
// bit for bit, and NaN logits raising.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>

#include "support/support.h"

using namespace mlxn;

namespace {

Buffer i64s(const std::vector<int64_t>& v, const Stream& s) {
  return Buffer::from_host(std::span<const int64_t>(v), {static_cast<int64_t>(v.size())},
                           DType::i64, s);
}

// The warped distribution of ops/sampling.h in f64 (zero outside the kept set).
std::vector<double> warped(const std::vector<double>& logits, const SamplingParams& p) {
  const auto v = static_cast<int64_t>(logits.size());
  std::vector<double> z(logits.size());
  for (size_t i = 0; i < z.size(); ++i) z[i] = static_cast<float>(logits[i]) / p.temperature;
  std::vector<int64_t> order(z.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return z[a] > z[b]; });
  const double zmax = z[order[0]];
  int64_t n = (p.top_k > 0 && p.top_k < v) ? p.top_k : v;
  std::vector<double> prob(z.size(), 0.0);
  double total = 0;
  for (int64_t i = 0; i < n; ++i) total += prob[order[i]] = std::exp(z[order[i]] - zmax);
  int64_t m = n;
  if (p.top_p < 1.0f) {
    double above = 0;
    for (m = 0; m < n && above < p.top_p * total; ++m) above += prob[order[m]];
  }
  for (int64_t i = m; i < v; ++i) prob[order[i]] = 0;
  double kept = 0;
  for (int64_t i = 0; i < v; ++i) {
    if (std::exp(z[i] - zmax) < p.min_p) prob[i] = 0;
    kept += prob[i];
  }
  for (double& q : prob) q /= kept;
  return prob;
}

}  // namespace

TEST(GpuSampling, ArgmaxMatchesTheCpu) {
  MLXN_REQUIRE_CUDA();
  const test::CpuGpu p;
  for (DType t : {DType::f32, DType::bf16, DType::f16}) {
    for (int64_t v : {1, 33, 4095, 151936, 262144}) {
      SCOPED_TRACE(::testing::Message() << dtype_name(t) << " vocab " << v);
      Buffer x = test::random_buffer({3, v}, t, 9, p.cpu);
      Buffer oc = Buffer::empty({3}, DType::i32, p.cpu), og = Buffer::empty({3}, DType::i32, p.gpu);
      argmax(x, oc, p.cpu);
      argmax(p.to_gpu(x), og, p.gpu);
      EXPECT_EQ(og.to_host<int32_t>(p.gpu), oc.to_host<int32_t>(p.cpu));
    }
  }
  // A tie across blocks: the lower index wins.
  std::vector<float> tie(200000, 0.0f);
  tie[150001] = 3.0f;
  tie[7] = 3.0f;
  Buffer x = Buffer::from_host(std::span<const float>(tie), {1, 200000}, DType::f32, p.gpu);
  Buffer o = Buffer::empty({1}, DType::i32, p.gpu);
  argmax(x, o, p.gpu);
  EXPECT_EQ(o.to_host<int32_t>(p.gpu)[0], 7);
}

TEST(GpuSampling, HundredThousandDrawsFollowTheWarpedSoftmax) {
  MLXN_REQUIRE_CUDA();
  const Stream s(Device::cuda(0));
  const int64_t v = 151936, rows = 100;
  const int calls = 1000;  // 10^5 draws
  Buffer one = Buffer::empty({1, v}, DType::f32, s);
  fill_random(one, {Distribution::normal, 21, 0.0f, 3.0f}, s);
  Buffer logits = Buffer::empty({rows, v}, DType::f32, s);
  copy(one.broadcast_to({rows, v}), logits, s);
  const auto l = test::to_f64(one, s);
  const SamplingParams cases[] = {{0.8f, 50, 1.0f, 0.0f},
                                  {1.0f, 0, 0.6f, 0.0f},
                                  {0.7f, 20, 0.8f, 0.0f},
                                  {1.0f, 0, 1.0f, 0.2f},
                                  {1.2f, 100, 0.9f, 0.05f}};
  for (const SamplingParams& params : cases) {
    SCOPED_TRACE(::testing::Message() << "T " << params.temperature << " k " << params.top_k
                                      << " p " << params.top_p << " min_p " << params.min_p);
    std::vector<int64_t> seed_values(static_cast<size_t>(rows));
    std::iota(seed_values.begin(), seed_values.end(), 1000);
    Buffer seeds = i64s(seed_values, s), steps = i64s(std::vector<int64_t>(rows, 0), s);
    Buffer out = Buffer::empty({calls, rows}, DType::i32, s);
    for (int c = 0; c < calls; ++c) sample(logits, params, seeds, steps, out.select(0, c), s);
    const auto tokens = out.to_host<int32_t>(s);
    std::vector<int64_t> counts(static_cast<size_t>(v), 0);
    for (int32_t t : tokens) {
      ASSERT_TRUE(t >= 0 && t < v) << t;
      ++counts[static_cast<size_t>(t)];
    }
    const test::ChiSquare c = test::chi_square(counts, warped(l, params));
    EXPECT_LT(c.statistic, test::chi_square_bound(c.df)) << "df " << c.df;
    EXPECT_EQ(steps.to_host<int64_t>(s), std::vector<int64_t>(rows, calls));
  }
}

TEST(GpuSampling, RepeatsRunToRunAndAcrossBatchSizesAndAgreesWithTheCpu) {
  MLXN_REQUIRE_CUDA();
  const test::CpuGpu p;
  for (int64_t v : {151936, 262144, 5000}) {
    const int64_t rows = 7;
    Buffer x = test::random_buffer({rows, v}, DType::bf16, 31, p.cpu);
    fill_random(x, {Distribution::normal, 31, 0.0f, 2.0f}, p.cpu);
    const Buffer xg = p.to_gpu(x);
    const std::vector<int64_t> seed_values = {5, 6, 7, 8, 9, 10, 11};
    const std::vector<int64_t> step_values = {0, 3, 9, 1, 1, 2, 100};
    for (const SamplingParams& params :
         {SamplingParams{1.0f, 0, 0.9f, 0.0f}, SamplingParams{0.6f, 40, 1.0f, 0.0f},
          SamplingParams{1.0f, 20, 0.8f, 0.02f}, SamplingParams{1.0f, 0, 1.0f, 0.0f}}) {
      SCOPED_TRACE(::testing::Message()
                   << "vocab " << v << " k " << params.top_k << " p " << params.top_p);
      const auto run = [&](const Buffer& logits, const std::vector<int64_t>& sd,
                           const std::vector<int64_t>& st, const Stream& s) {
        Buffer out = Buffer::empty({logits.dim(0)}, DType::i32, s);
        sample(logits, params, i64s(sd, s), i64s(st, s), out, s);
        return out.to_host<int32_t>(s);
      };
      const auto first = run(xg, seed_values, step_values, p.gpu);
      EXPECT_EQ(run(xg, seed_values, step_values, p.gpu), first) << "run to run";
      for (int64_t r = 0; r < rows; ++r) {
        const auto alone = run(xg.slice(0, r, r + 1), {seed_values[r]}, {step_values[r]}, p.gpu);
        EXPECT_EQ(alone[0], first[static_cast<size_t>(r)]) << "row " << r << " alone";
      }
      // The CPU reference uses the same Gumbel variates: the same token unless two scores
      // are within a rounding of each other (not expected for 7 rows).
      EXPECT_EQ(run(x, seed_values, step_values, p.cpu), first) << "CPU reference";
    }
  }
}

TEST(GpuSampling, GraphReplayDrawsFreshTokens) {
  MLXN_REQUIRE_CUDA();
  const Stream s(Device::cuda(0));
  const int64_t rows = 4, v = 151936;
  Buffer logits = test::random_buffer({rows, v}, DType::bf16, 41, s);
  const SamplingParams params{1.0f, 50, 0.95f, 0.0f};
  Buffer seeds = i64s({1, 2, 3, 4}, s), steps = i64s({0, 0, 0, 0}, s);
  Buffer out = Buffer::empty({rows}, DType::i32, s);
  Graph g = Graph::capture(s, [&] { sample(logits, params, seeds, steps, out, s); });
  Buffer eager_steps = i64s({0, 0, 0, 0}, s), eager_out = Buffer::empty({rows}, DType::i32, s);
  for (int i = 0; i < 5; ++i) {
    g.replay(s);
    sample(logits, params, seeds, eager_steps, eager_out, s);
    EXPECT_EQ(out.to_host<int32_t>(s), eager_out.to_host<int32_t>(s)) << "replay " << i;
  }
  EXPECT_EQ(steps.to_host<int64_t>(s), std::vector<int64_t>(rows, 5));
}

TEST(GpuSampling, PenaltiesMatchTheCpuBitForBit) {
  MLXN_REQUIRE_CUDA();
  const test::CpuGpu p;
  for (DType t : {DType::f32, DType::bf16}) {
    const int64_t rows = 3, v = 151936, len = 700;
    Buffer x = test::random_buffer({rows, v}, t, 51, p.cpu);
    std::vector<int32_t> h(static_cast<size_t>(rows * len));
    for (size_t i = 0; i < h.size(); ++i)
      h[i] = i % 11 == 0 ? -1 : static_cast<int32_t>((i * 7919) % 300);
    Buffer hc = Buffer::from_host(std::span<const int32_t>(h), {rows, len}, DType::i32, p.cpu);
    Buffer xg = p.to_gpu(x);
    apply_penalties(x, hc, {1.3f, 0.4f, 0.1f}, p.cpu);
    apply_penalties(xg, p.to_gpu(hc), {1.3f, 0.4f, 0.1f}, p.gpu);
    EXPECT_TRUE(test::same_bits(xg, x, p.gpu, p.cpu)) << dtype_name(t);
  }
}

TEST(GpuSampling, NonFiniteLogitsRaise) {
  MLXN_REQUIRE_CUDA();
  const Stream s(Device::cuda(0));
  std::vector<float> row(5000, 1.0f);
  row[4321] = NAN;
  Buffer x = Buffer::from_host(std::span<const float>(row), {1, 5000}, DType::f32, s);
  Buffer out = Buffer::empty({1}, DType::i32, s);
  EXPECT_TRUE(test::throws_error(
      [&] {
        sample(x, {}, i64s({1}, s), i64s({0}, s), out, s);
        s.synchronize();
      },
      "[sample]", {"logits"}));
  std::vector<float> masked(5000, -INFINITY);
  Buffer m = Buffer::from_host(std::span<const float>(masked), {1, 5000}, DType::f32, s);
  EXPECT_TRUE(test::throws_error(
      [&] {
        sample(m, {}, i64s({1}, s), i64s({0}, s), out, s);
        s.synchronize();
      },
      "[sample]", {"logits"}));
  EXPECT_EQ(out.to_host<int32_t>(s)[0], -1);
}
