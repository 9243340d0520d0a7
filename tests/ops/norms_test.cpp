// Row normalisations on the CPU against the formulas of ops/norms.h evaluated in f64, known
// values, the fused residual add, and bad input.
#include <gtest/gtest.h>

#include <cmath>

#include "support/support.h"

using namespace mlxn;
using mlxn::test::cpu_stream;

namespace {

const DType kTypes[] = {DType::f32, DType::bf16, DType::f16};
const int64_t kSizes[] = {1, 33, 4095, 8193};

// The documented formula for one row, in f64 from the stored inputs.
std::vector<double> expected(const std::vector<double>& x, const std::vector<double>& w,
                             const std::vector<double>& b, int64_t rows, int64_t n,
                             const char* kind, RmsWeight mode, double eps) {
  std::vector<double> y(x.size());
  for (int64_t r = 0; r < rows; ++r) {
    const double* v = x.data() + r * n;
    double mean = 0, var = 0;
    if (std::string(kind) == "layer") {
      for (int64_t i = 0; i < n; ++i) mean += v[i] / static_cast<double>(n);
      for (int64_t i = 0; i < n; ++i) var += (v[i] - mean) * (v[i] - mean) / static_cast<double>(n);
    } else {
      for (int64_t i = 0; i < n; ++i) var += v[i] * v[i];
      if (std::string(kind) == "rms") var /= static_cast<double>(n);
    }
    for (int64_t i = 0; i < n; ++i) {
      double t = (v[i] - mean) / std::sqrt(var + eps);
      if (!w.empty()) t *= mode == RmsWeight::one_plus ? 1 + w[i] : w[i];
      if (!b.empty()) t += b[i];
      y[r * n + i] = t;
    }
  }
  return y;
}

}  // namespace

TEST(Norms, EveryFormMatchesItsFormula) {
  const Stream& s = cpu_stream();
  const int64_t rows = 3;
  for (DType t : kTypes) {
    for (int64_t n : kSizes) {
      SCOPED_TRACE(::testing::Message() << dtype_name(t) << " n " << n);
      Buffer x = test::random_buffer({rows, n}, t, 11, s);
      Buffer w = test::random_buffer({n}, t, 12, s);
      Buffer b = test::random_buffer({n}, DType::f32, 13, s);
      const auto xv = test::to_f64(x, s), wv = test::to_f64(w, s), bv = test::to_f64(b, s);
      Buffer out = Buffer::empty({rows, n}, t, s);
      const auto check = [&](const std::vector<double>& want) {
        EXPECT_TRUE(
            test::all_close(test::to_f64(out, s), want, test::tolerance_for(t, n), {rows, n}));
      };
      rms_norm(x, w, 1e-6f, out, s);
      check(expected(xv, wv, {}, rows, n, "rms", RmsWeight::multiply, 1e-6f));
      rms_norm(x, w, 1e-6f, out, s, RmsWeight::one_plus);
      check(expected(xv, wv, {}, rows, n, "rms", RmsWeight::one_plus, 1e-6f));
      rms_norm(x, Buffer(), 1e-6f, out, s, RmsWeight::none);
      check(expected(xv, {}, {}, rows, n, "rms", RmsWeight::none, 1e-6f));
      layer_norm(x, w, b, 1e-5f, out, s);
      check(expected(xv, wv, bv, rows, n, "layer", RmsWeight::multiply, 1e-5f));
      layer_norm(x, Buffer(), Buffer(), 1e-5f, out, s);
      check(expected(xv, {}, {}, rows, n, "layer", RmsWeight::none, 1e-5f));
      l2_norm(x, 1e-6f, out, s);
      check(expected(xv, {}, {}, rows, n, "l2", RmsWeight::none, 1e-6f));
    }
  }
}

TEST(Norms, KnownValues) {
  const Stream& s = cpu_stream();
  const std::vector<float> v = {3.0f, 4.0f};
  Buffer x = Buffer::from_host(std::span<const float>(v), {1, 2}, DType::f32, s);
  Buffer out = Buffer::empty({1, 2}, DType::f32, s);
  l2_norm(x, 0.0f, out, s);
  EXPECT_EQ(out.to_host<float>(s), (std::vector<float>{0.6f, 0.8f}));
  rms_norm(x, Buffer(), 0.0f, out, s, RmsWeight::none);  // mean square 12.5
  const auto r = out.to_host<float>(s);
  EXPECT_FLOAT_EQ(r[0], static_cast<float>(3.0 / std::sqrt(12.5)));
  EXPECT_FLOAT_EQ(r[1], static_cast<float>(4.0 / std::sqrt(12.5)));
  // Gemma's (1 + w) with w = 0 is the plain norm; a constant row has layer norm = bias.
  Buffer zero =
      Buffer::from_host(std::span<const float>(std::vector<float>{0, 0}), {2}, DType::f32, s);
  Buffer plus = Buffer::empty({1, 2}, DType::f32, s);
  rms_norm(x, zero, 0.0f, plus, s, RmsWeight::one_plus);
  EXPECT_EQ(plus.to_host<float>(s), r);
  const std::vector<float> c = {2.0f, 2.0f}, bias = {0.5f, -1.0f};
  Buffer cx = Buffer::from_host(std::span<const float>(c), {1, 2}, DType::f32, s);
  Buffer cb = Buffer::from_host(std::span<const float>(bias), {2}, DType::f32, s);
  layer_norm(cx, Buffer(), cb, 1e-5f, out, s);
  EXPECT_EQ(out.to_host<float>(s), bias);
}

TEST(Norms, AddRmsNormStoresTheRoundedSumAndNormalisesIt) {
  const Stream& s = cpu_stream();
  for (DType t : kTypes) {
    const int64_t rows = 4, n = 333;
    Buffer x = test::random_buffer({rows, n}, t, 21, s);
    Buffer r = test::random_buffer({rows, n}, t, 22, s);
    Buffer w = test::random_buffer({n}, DType::bf16, 23, s);
    Buffer sum = Buffer::empty({rows, n}, t, s), out = Buffer::empty({rows, n}, DType::f32, s);
    add_rms_norm(x, r, w, 1e-6f, sum, out, s);
    const auto xv = test::to_f64(x, s), rv = test::to_f64(r, s), sv = test::to_f64(sum, s);
    for (size_t i = 0; i < xv.size(); ++i) {
      ASSERT_EQ(sv[i], test::round_to(static_cast<float>(xv[i] + rv[i]), t))
          << dtype_name(t) << " " << i;
    }
    EXPECT_TRUE(test::all_close(
        test::to_f64(out, s),
        expected(sv, test::to_f64(w, s), {}, rows, n, "rms", RmsWeight::multiply, 1e-6f),
        test::tolerance_for(DType::f32, n), {rows, n}));
  }
}

TEST(Norms, BadInputIsRejected) {
  const Stream& s = cpu_stream();
  Buffer x = test::random_buffer({2, 8}, DType::f32, 1, s);
  Buffer out = Buffer::empty({2, 8}, DType::f32, s);
  Buffer w7 = test::random_buffer({7}, DType::f32, 2, s);
  Buffer w8 = test::random_buffer({8}, DType::f32, 2, s);
  EXPECT_TRUE(test::throws_error([&] { rms_norm(x, w7, 1e-6f, out, s); }, "[rms_norm]",
                                 {"weight must be [8]"}));
  EXPECT_TRUE(
      test::throws_error([&] { rms_norm(x, w8, 1e-6f, out, s, RmsWeight::none); }, "[rms_norm]"));
  EXPECT_TRUE(test::throws_error([&] { rms_norm(x, Buffer(), 1e-6f, out, s); }, "[rms_norm]"));
  EXPECT_TRUE(test::throws_error([&] { l2_norm(x, -1.0f, out, s); }, "[l2_norm]", {"eps"}));
  EXPECT_TRUE(test::throws_error(
      [&] {
        l2_norm(x, 1e-6f, Buffer::empty({2, 9}, DType::f32, s), s);
      },
      "[l2_norm]"));
  EXPECT_TRUE(test::throws_error(
      [&] {
        l2_norm(x.transpose(0, 1), 1e-6f, out.reshape({8, 2}), s);
      },
      "[l2_norm]", {"contiguous"}));
  EXPECT_TRUE(test::throws_error(
      [&] {
        l2_norm(x, 1e-6f, Buffer::empty({2, 8}, DType::i32, s), s);
      },
      "[l2_norm]"));
  Buffer rb = test::random_buffer({2, 8}, DType::bf16, 3, s);
  EXPECT_TRUE(test::throws_error([&] { add_rms_norm(x, rb, w8, 1e-6f, out, out, s); },
                                 "[add_rms_norm]", {"dtype"}));
}
