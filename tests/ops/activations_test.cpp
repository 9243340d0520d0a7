// Activations on the CPU against the textbook formulas of ops/activations.h evaluated in long
// double, known and special values, strided and in-place views, and bad input.
#include <gtest/gtest.h>

#include <cfloat>
#include <cmath>
#include <numbers>

#include "support/support.h"

using namespace mlxn;
using mlxn::test::cpu_stream;

namespace {

const DType kTypes[] = {DType::f32, DType::bf16, DType::f16};
const Activation kActs[] = {Activation::silu, Activation::gelu_tanh, Activation::gelu_erf,
                            Activation::sigmoid};

// The header's formulas as written (1 + tanh, 1 + erf): independent of the reference's
// cancellation-free forms, and accurate enough in long double for the |x| < 6 used here.
long double textbook(Activation a, long double x) {
  const long double pi = std::numbers::pi_v<long double>;
  switch (a) {
    case Activation::silu:
      return x / (1 + std::exp(-x));
    case Activation::sigmoid:
      return 1 / (1 + std::exp(-x));
    case Activation::gelu_tanh:
      return 0.5L * x * (1 + std::tanh(std::sqrt(2 / pi) * (x + 0.044715L * x * x * x)));
    case Activation::gelu_erf:
      return 0.5L * x * (1 + std::erf(x / std::sqrt(2.0L)));
  }
  return 0;
}

// The reference rounds its f64 result to f32, then to out's dtype: u_out + u_f32 relative, or
// below the normal range at most one subnormal step of out. 2^-30 covers the f64 evaluation and
// the long-double formulas (both far more accurate for |x| < 6).
std::vector<double> bounds(const std::vector<double>& want, DType out) {
  const double step = test::smallest_normal(out) * 2 * test::unit_roundoff(out);
  std::vector<double> b(want.size());
  for (size_t i = 0; i < want.size(); ++i)
    b[i] = step + (test::unit_roundoff(out) + 0x1p-24 + 0x1p-30) * std::fabs(want[i]);
  return b;
}

std::vector<float> run_f32(const std::vector<float>& x, Activation act) {
  const Stream& s = cpu_stream();
  const auto n = static_cast<int64_t>(x.size());
  Buffer xb = Buffer::from_host(std::span<const float>(x), {n}, DType::f32, s);
  Buffer out = Buffer::empty({n}, DType::f32, s);
  activate(xb, act, out, s);
  return out.to_host<float>(s);
}

}  // namespace

TEST(Activations, EveryFormMatchesItsFormula) {
  const Stream& s = cpu_stream();
  const int64_t rows = 3;
  for (DType t : kTypes) {
    for (int64_t n : {1, 33, 4095}) {
      Buffer x = test::random_buffer({rows, n}, t, 41, s);
      Buffer up = test::random_buffer({rows, n}, t, 42, s);
      const auto xv = test::to_f64(x, s), uv = test::to_f64(up, s);
      Buffer out = Buffer::empty({rows, n}, t, s);
      for (Activation act : kActs) {
        SCOPED_TRACE(::testing::Message()
                     << dtype_name(t) << " " << activation_name(act) << " n " << n);
        std::vector<double> want(xv.size()), want_gated(xv.size());
        for (size_t i = 0; i < xv.size(); ++i) {
          const long double a = textbook(act, xv[i]);
          want[i] = static_cast<double>(a);
          want_gated[i] = static_cast<double>(a * uv[i]);
        }
        activate(x, act, out, s);
        EXPECT_TRUE(test::all_within(test::to_f64(out, s), want, bounds(want, t), {rows, n}));
        gated_activation(x, up, act, out, s);
        EXPECT_TRUE(
            test::all_within(test::to_f64(out, s), want_gated, bounds(want_gated, t), {rows, n}));
      }
      for (float cap : {30.0f, 0.5f}) {
        std::vector<double> want(xv.size());
        for (size_t i = 0; i < xv.size(); ++i)
          want[i] = static_cast<double>(cap * std::tanh(static_cast<long double>(xv[i]) / cap));
        softcap(x, cap, out, s);
        EXPECT_TRUE(test::all_within(test::to_f64(out, s), want, bounds(want, t), {rows, n}))
            << dtype_name(t) << " softcap " << cap << " n " << n;
      }
    }
  }
}

TEST(Activations, KnownValues) {
  const auto silu = run_f32({0.0f, 1.0f, -1.0f, 2.0f}, Activation::silu);
  EXPECT_EQ(silu[0], 0.0f);
  EXPECT_EQ(silu[1], static_cast<float>(1.0 / (1.0 + std::exp(-1.0))));
  EXPECT_EQ(silu[2], static_cast<float>(-1.0 / (1.0 + std::exp(1.0))));
  EXPECT_EQ(silu[3], static_cast<float>(2.0 / (1.0 + std::exp(-2.0))));
  const auto sig = run_f32({0.0f, 1.0f}, Activation::sigmoid);
  EXPECT_EQ(sig[0], 0.5f);
  EXPECT_EQ(sig[1], static_cast<float>(1.0 / (1.0 + std::exp(-1.0))));
  // gelu(1) with erf: 0.5 (1 + erf(1/sqrt 2)) = Phi(1).
  const auto gelu = run_f32({0.0f, 1.0f}, Activation::gelu_erf);
  EXPECT_EQ(gelu[0], 0.0f);
  EXPECT_EQ(gelu[1], static_cast<float>(0.5 * (1.0 + std::erf(1.0 / std::sqrt(2.0)))));
  const auto gt = run_f32({0.0f}, Activation::gelu_tanh);
  EXPECT_EQ(gt[0], 0.0f);
  // SwiGLU: silu(gate) * up.
  const Stream& s = cpu_stream();
  const std::vector<float> g = {1.0f, -2.0f}, u = {3.0f, 0.5f};
  Buffer gb = Buffer::from_host(std::span<const float>(g), {2}, DType::f32, s);
  Buffer ub = Buffer::from_host(std::span<const float>(u), {2}, DType::f32, s);
  Buffer out = Buffer::empty({2}, DType::f32, s);
  gated_activation(gb, ub, Activation::silu, out, s);
  const auto r = out.to_host<float>(s);
  EXPECT_EQ(r[0], static_cast<float>(3.0 / (1.0 + std::exp(-1.0))));
  EXPECT_EQ(r[1], static_cast<float>(0.5 * -2.0 / (1.0 + std::exp(2.0))));
  softcap(gb, 2.0f, out, s);
  EXPECT_EQ(out.to_host<float>(s), (std::vector<float>{static_cast<float>(2.0 * std::tanh(0.5)),
                                                       static_cast<float>(2.0 * std::tanh(-1.0))}));
}

TEST(Activations, SpecialValues) {
  const float inf = INFINITY, nan = NAN;
  const std::vector<float> x = {inf, -inf, nan, 100.0f, -100.0f, 1e30f, -1e30f, FLT_MAX, -FLT_MAX};
  for (Activation act : {Activation::silu, Activation::gelu_tanh, Activation::gelu_erf}) {
    SCOPED_TRACE(activation_name(act));
    const auto y = run_f32(x, act);
    EXPECT_EQ(y[0], inf);
    EXPECT_EQ(y[1], 0.0f);
    EXPECT_TRUE(std::signbit(y[1]));  // the limit from below
    EXPECT_TRUE(std::isnan(y[2]));
    EXPECT_EQ(y[3], 100.0f);
    // x * gate for a gate below 1e-40: -0 or a tiny negative, never NaN.
    EXPECT_TRUE(y[4] <= 0.0f && y[4] > -1e-38f) << y[4];
    EXPECT_EQ(y[5], 1e30f);
    EXPECT_EQ(y[6], 0.0f);
    EXPECT_EQ(y[7], FLT_MAX);
    EXPECT_EQ(y[8], 0.0f);
  }
  const auto sig = run_f32(x, Activation::sigmoid);
  EXPECT_EQ(sig[0], 1.0f);
  EXPECT_EQ(sig[1], 0.0f);
  EXPECT_TRUE(std::isnan(sig[2]));
  EXPECT_EQ(sig[3], 1.0f);
  EXPECT_EQ(sig[4], static_cast<float>(std::exp(-100.0) / (1.0 + std::exp(-100.0))));
  EXPECT_EQ(sig[5], 1.0f);
  EXPECT_EQ(sig[6], 0.0f);
  // silu(-100) = -100 e^-100 is an f32 subnormal, stored as such.
  EXPECT_EQ(run_f32({-100.0f}, Activation::silu)[0], static_cast<float>(-100.0 * std::exp(-100.0)));
  const Stream& s = cpu_stream();
  Buffer xb = Buffer::from_host(std::span<const float>(x), {9}, DType::f32, s);
  Buffer out = Buffer::empty({9}, DType::f32, s);
  softcap(xb, 30.0f, out, s);
  const auto c = out.to_host<float>(s);
  EXPECT_EQ(c[0], 30.0f);
  EXPECT_EQ(c[1], -30.0f);
  EXPECT_TRUE(std::isnan(c[2]));
  EXPECT_EQ(c[5], 30.0f);
  EXPECT_EQ(c[8], -30.0f);
  // Narrow outputs: the same limits, and overflow of the f16 range rounds to inf.
  Buffer h = Buffer::empty({9}, DType::f16, s), hx = Buffer::empty({9}, DType::f16, s);
  cast(xb, hx, s);
  activate(hx, Activation::silu, h, s);
  const auto hv = test::to_f64(h, s);
  EXPECT_EQ(hv[0], INFINITY);
  EXPECT_EQ(hv[1], 0.0);
  EXPECT_TRUE(std::isnan(hv[2]));
  EXPECT_EQ(hv[3], 100.0);
}

TEST(Activations, FusedGateUpViewsAndInPlace) {
  const Stream& s = cpu_stream();
  for (DType t : kTypes) {
    const int64_t m = 5, inter = 24;
    Buffer fused = test::random_buffer({m, 2 * inter}, t, 51, s);
    const Buffer gate = fused.slice(-1, 0, inter), up = fused.slice(-1, inter, 2 * inter);
    Buffer gc = Buffer::empty({m, inter}, t, s), uc = Buffer::empty({m, inter}, t, s);
    copy(gate, gc, s);
    copy(up, uc, s);
    for (Activation act : kActs) {
      Buffer want = Buffer::empty({m, inter}, t, s), got = Buffer::empty({m, inter}, t, s);
      gated_activation(gc, uc, act, want, s);
      gated_activation(gate, up, act, got, s);
      EXPECT_TRUE(test::same_bits(got, want, s, s)) << dtype_name(t) << " " << activation_name(act);
      // A strided output, and the gate half overwritten in place.
      Buffer wide = Buffer::empty({m, inter + 3}, t, s);
      gated_activation(gate, up, act, wide.slice(-1, 0, inter), s);
      EXPECT_TRUE(test::same_bits(wide.slice(-1, 0, inter), want, s, s));
      Buffer f2 = Buffer::empty({m, 2 * inter}, t, s);
      copy(fused, f2, s);
      gated_activation(f2.slice(-1, 0, inter), f2.slice(-1, inter, 2 * inter), act,
                       f2.slice(-1, 0, inter), s);
      EXPECT_TRUE(test::same_bits(f2.slice(-1, 0, inter), want, s, s));
      EXPECT_TRUE(test::same_bits(f2.slice(-1, inter, 2 * inter), uc, s, s)) << "up untouched";
    }
  }
}

TEST(Activations, BadInputIsRejected) {
  const Stream& s = cpu_stream();
  Buffer x = test::random_buffer({4, 8}, DType::f32, 1, s);
  Buffer out = Buffer::empty({4, 8}, DType::f32, s);
  EXPECT_EQ(test::error_of([&] {
              activate(x, Activation::silu, Buffer::empty({4, 8}, DType::i32, s), s);
            }),
            "[activate] out dtype i32 unsupported (supported: f32, f16, bf16)");
  EXPECT_TRUE(test::throws_error(
      [&] {
        activate(test::random_buffer({4, 8}, DType::bf16, 1, s), Activation::silu, out, s);
      },
      "[activate]", {"x is bf16[4,8]", "share one dtype"}));
  EXPECT_TRUE(test::throws_error(
      [&] {
        activate(x, Activation::gelu_erf, Buffer::empty({4, 9}, DType::f32, s), s);
      },
      "[activate]", {"differ in shape"}));
  // No broadcasting: an up of [8] is a shape error, not a repeat.
  EXPECT_TRUE(test::throws_error(
      [&] {
        gated_activation(x, test::random_buffer({8}, DType::f32, 2, s), Activation::silu, out, s);
      },
      "[gated_activation]", {"up", "differ in shape"}));
  EXPECT_TRUE(test::throws_error(
      [&] {
        gated_activation(x, test::random_buffer({4, 8}, DType::f16, 2, s), Activation::silu, out,
                         s);
      },
      "[gated_activation]", {"up is f16"}));
  EXPECT_TRUE(test::throws_error([&] { gated_activation(x, Buffer(), Activation::silu, out, s); },
                                 "[gated_activation]", {"up is an undefined buffer"}));
  EXPECT_TRUE(test::throws_error([&] { activate(x, static_cast<Activation>(7), out, s); },
                                 "[activate]", {"unknown Activation 7"}));
  for (float cap : {0.0f, -1.0f, INFINITY, NAN}) {
    EXPECT_TRUE(test::throws_error([&] { softcap(x, cap, out, s); }, "[softcap]", {"cap"})) << cap;
  }
  // Partial overlap is refused; the very same view is fine.
  Buffer big = test::random_buffer({10}, DType::f32, 3, s);
  EXPECT_TRUE(test::throws_error(
      [&] { activate(big.slice(0, 0, 8), Activation::silu, big.slice(0, 2, 10), s); }, "[activate]",
      {"x overlaps out"}));
  EXPECT_TRUE(test::throws_error(
      [&] {
        gated_activation(big.slice(0, 0, 8), big.slice(0, 1, 9), Activation::silu,
                         big.slice(0, 0, 8), s);
      },
      "[gated_activation]", {"up overlaps out"}));
  EXPECT_NO_THROW(activate(big, Activation::sigmoid, big, s));
  EXPECT_NO_THROW(softcap(big, 1.0f, big, s));
}
