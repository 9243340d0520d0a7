// Softmax and log-softmax on the CPU against the textbook formula in long double (no max
// shift), known values, the special rows ops/softmax.h defines, in-place use, and bad input.
#include <gtest/gtest.h>

#include <cfloat>
#include <cmath>

#include "support/support.h"

using namespace mlxn;
using mlxn::test::cpu_stream;

namespace {

const DType kTypes[] = {DType::f32, DType::bf16, DType::f16};

std::vector<float> run_f32(const std::vector<float>& x, int64_t rows, bool log, float t = 1.0f) {
  const Stream& s = cpu_stream();
  const auto n = static_cast<int64_t>(x.size()) / rows;
  Buffer xb = Buffer::from_host(std::span<const float>(x), {rows, n}, DType::f32, s);
  Buffer out = Buffer::empty({rows, n}, DType::f32, s);
  if (log) {
    log_softmax(xb, out, s, t);
  } else {
    softmax(xb, out, s, t);
  }
  return out.to_host<float>(s);
}

}  // namespace

TEST(Softmax, MatchesTheFormula) {
  const Stream& s = cpu_stream();
  const int64_t rows = 3;
  for (DType xt : kTypes) {
    for (DType ot : kTypes) {
      for (int64_t n : {1, 33, 4095, 8193}) {
        for (float t : {1.0f, 0.5f}) {
          SCOPED_TRACE(::testing::Message() << dtype_name(xt) << "->" << dtype_name(ot) << " n "
                                            << n << " temperature " << t);
          Buffer x = test::random_buffer({rows, n}, xt, 61, s);
          const auto xv = test::to_f64(x, s);
          std::vector<double> p(xv.size()), lp(xv.size()), bp(xv.size()), blp(xv.size());
          // The reference rounds its f64 result to f32 and then to out (u_out + u_f32 relative,
          // or one subnormal step of out); 2^-30 covers both f64 and long-double evaluation
          // errors (n terms of 2^-53 at most, far below 2^-30 of the values or of |x / t|).
          const double u = test::unit_roundoff(ot) + 0x1p-24 + 0x1p-30;
          const double step = test::smallest_normal(ot) * 2 * test::unit_roundoff(ot);
          for (int64_t r = 0; r < rows; ++r) {
            long double sum = 0;
            for (int64_t i = 0; i < n; ++i)
              sum += std::exp(static_cast<long double>(xv[r * n + i]) / t);
            for (int64_t i = 0; i < n; ++i) {
              const long double z = static_cast<long double>(xv[r * n + i]) / t;
              const size_t k = static_cast<size_t>(r * n + i);
              p[k] = static_cast<double>(std::exp(z) / sum);
              lp[k] = static_cast<double>(z - std::log(sum));
              bp[k] = step + u * std::fabs(p[k]);
              blp[k] = step + u * std::fabs(lp[k]) + 0x1p-30 * std::fabs(static_cast<double>(z));
            }
          }
          Buffer out = Buffer::empty({rows, n}, ot, s);
          softmax(x, out, s, t);
          EXPECT_TRUE(test::all_within(test::to_f64(out, s), p, bp, {rows, n}));
          log_softmax(x, out, s, t);
          EXPECT_TRUE(test::all_within(test::to_f64(out, s), lp, blp, {rows, n}));
        }
      }
    }
  }
}

TEST(Softmax, KnownValues) {
  EXPECT_EQ(run_f32({0, 0, 3, 3}, 2, false), (std::vector<float>{0.5f, 0.5f, 0.5f, 0.5f}));
  EXPECT_EQ(run_f32({1, 1, 1, 1}, 1, false), (std::vector<float>{0.25f, 0.25f, 0.25f, 0.25f}));
  const auto l = run_f32({0, 0}, 1, true);
  EXPECT_EQ(l[0], static_cast<float>(-std::log(2.0)));
  // softmax([0, ln 3]) = [1/4, 3/4]; a temperature of 2 on [0, 2 ln 3] gives the same.
  const float ln3 = static_cast<float>(std::log(3.0));
  const auto p = run_f32({0, ln3}, 1, false);
  EXPECT_FLOAT_EQ(p[0], 0.25f);
  EXPECT_FLOAT_EQ(p[1], 0.75f);
  const auto pt = run_f32({0, 2 * ln3}, 1, false, 2.0f);
  EXPECT_FLOAT_EQ(pt[0], 0.25f);
  EXPECT_FLOAT_EQ(pt[1], 0.75f);
  // Rows of one element: probability 1, log 0.
  EXPECT_EQ(run_f32({-7, 123, 0}, 3, false), (std::vector<float>{1, 1, 1}));
  EXPECT_EQ(run_f32({-7, 123, 0}, 3, true), (std::vector<float>{0, 0, 0}));
}

TEST(Softmax, SpecialRows) {
  const float inf = INFINITY, nan = NAN;
  // -inf entries get nothing; the rest share the mass.
  EXPECT_EQ(run_f32({-inf, 0, 0, -inf}, 1, false), (std::vector<float>{0, 0.5f, 0.5f, 0}));
  const auto l = run_f32({-inf, 0, 0, -inf}, 1, true);
  EXPECT_EQ(l[0], -inf);
  EXPECT_EQ(l[1], static_cast<float>(-std::log(2.0)));
  EXPECT_EQ(l[3], -inf);
  // A row of -inf only: zeros, or -inf for log_softmax; the next row is unaffected.
  EXPECT_EQ(run_f32({-inf, -inf, -inf, 5, 5, 5}, 2, false),
            (std::vector<float>{0, 0, 0, 1.0f / 3, 1.0f / 3, 1.0f / 3}));
  const auto ln = run_f32({-inf, -inf, -inf, 5, 5, 5}, 2, true);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(ln[i], -inf);
  EXPECT_EQ(ln[3], static_cast<float>(-std::log(3.0)));
  EXPECT_EQ(run_f32({-inf}, 1, false)[0], 0.0f);
  // NaN or +inf anywhere: that row is NaN, the others are not.
  for (float bad : {nan, inf}) {
    for (bool log : {false, true}) {
      const auto y = run_f32({1, bad, 2, 0, 0, 0}, 2, log);
      for (int i = 0; i < 3; ++i) EXPECT_TRUE(std::isnan(y[i])) << bad << " " << i;
      for (int i = 3; i < 6; ++i) EXPECT_FALSE(std::isnan(y[i])) << bad << " " << i;
    }
  }
  // Huge finite values: the shift by the maximum keeps them finite.
  EXPECT_EQ(run_f32({1e30f, 0}, 1, false), (std::vector<float>{1, 0}));
  EXPECT_EQ(run_f32({-FLT_MAX, FLT_MAX}, 1, false), (std::vector<float>{0, 1}));
  EXPECT_EQ(run_f32({FLT_MAX, FLT_MAX}, 1, false), (std::vector<float>{0.5f, 0.5f}));
  const auto big = run_f32({-FLT_MAX, FLT_MAX}, 1, true);
  EXPECT_EQ(big[0], -inf);  // -2 FLT_MAX overflows: its probability is 0
  EXPECT_EQ(big[1], 0.0f);
  // A small temperature sharpens without overflowing.
  EXPECT_EQ(run_f32({0, 1}, 1, false, 1e-3f), (std::vector<float>{0, 1}));
}

TEST(Softmax, InPlace) {
  const Stream& s = cpu_stream();
  for (DType t : kTypes) {
    Buffer x = test::random_buffer({4, 100}, t, 71, s);
    Buffer want = Buffer::empty({4, 100}, t, s);
    log_softmax(x, want, s, 0.8f);
    log_softmax(x, x, s, 0.8f);
    EXPECT_TRUE(test::same_bits(x, want, s, s)) << dtype_name(t);
  }
}

TEST(Softmax, BadInputIsRejected) {
  const Stream& s = cpu_stream();
  Buffer x = test::random_buffer({2, 8}, DType::f32, 1, s);
  Buffer out = Buffer::empty({2, 8}, DType::bf16, s);
  for (float t : {0.0f, -1.0f, INFINITY, NAN}) {
    EXPECT_TRUE(test::throws_error([&] { softmax(x, out, s, t); }, "[softmax]", {"temperature"}))
        << t;
  }
  EXPECT_TRUE(test::throws_error(
      [&] {
        log_softmax(x, Buffer::empty({2, 9}, DType::f32, s), s);
      },
      "[log_softmax]", {"differ in shape"}));
  EXPECT_TRUE(test::throws_error(
      [&] {
        softmax(x.transpose(0, 1), out.reshape({8, 2}), s);
      },
      "[softmax]", {"contiguous"}));
  EXPECT_EQ(test::error_of([&] {
              softmax(x, Buffer::empty({2, 8}, DType::i32, s), s);
            }),
            "[softmax] out dtype i32 unsupported (supported: f32, f16, bf16)");
  EXPECT_TRUE(test::throws_error(
      [&] {
        softmax(test::random_buffer({2, 8}, DType::f8e4m3, 1, s), out, s);
      },
      "[softmax]", {"x dtype f8e4m3 unsupported"}));
  EXPECT_TRUE(test::throws_error(
      [&] {
        softmax(Buffer::empty({2, 0}, DType::f32, s), Buffer::empty({2, 0}, DType::f32, s), s);
      },
      "[softmax]", {"non-empty last axis"}));
  EXPECT_TRUE(test::throws_error([&] { softmax(Buffer(), out, s); }, "[softmax]",
                                 {"x is an undefined buffer"}));
  Buffer big = test::random_buffer({20}, DType::f32, 2, s);
  EXPECT_TRUE(test::throws_error(
      [&] {
        softmax(big.slice(0, 0, 16).reshape({2, 8}), big.slice(0, 4, 20).reshape({2, 8}), s);
      },
      "[softmax]", {"x overlaps out"}));
  EXPECT_NO_THROW(softmax(big.reshape({4, 5}), big.reshape({4, 5}), s));
}
