// Activations on the GPU against the CPU reference: every dtype and activation over odd sizes,
// within error bounds derived from the kernel's f32 evaluation; the fused gate/up views (the
// elementwise engine's row-pitched path), strided, unaligned and in-place views bit for bit
// against the contiguous result; special values. Outputs are poisoned first.
#include <gtest/gtest.h>

#include <cfloat>
#include <cmath>
#include <numbers>

#include "support/support.h"

using namespace mlxn;

namespace {

const DType kTypes[] = {DType::f32, DType::bf16, DType::f16};
const Activation kActs[] = {Activation::silu, Activation::gelu_tanh, Activation::gelu_erf,
                            Activation::sigmoid};
constexpr double u = 0x1p-24;  // f32 unit roundoff; an ulp of a normal result is at most 2u

// Relative error of the kernel's x * sigmoid(w) = (w < 0 ? x e : x) / (1 + e), e = expf(-|w|),
// where w carries a relative error dw from its own evaluation (first order). e: expf's 2 ulp (4u)
// plus |w| dw through the exponential; 1 + e: the share e / (1 + e) of e's error, plus u; the
// numerator (w < 0): e's error, plus u unless x is 1 (sigmoid); the division: u.
double mul_sigmoid_error(double w, double dw, bool unit_x) {
  const double e = std::exp(-std::fabs(w));
  const double share = e / (1 + e);
  const double de = std::fabs(w) * dw + 4 * u;
  if (w >= 0) return share * de + 2 * u;
  return de + (unit_x ? 0 : u) + share * de + 2 * u;
}

// Relative error of the kernel's f32 activation of an exact input x.
double activation_error(Activation act, double x) {
  switch (act) {
    case Activation::silu:
      return mul_sigmoid_error(x, 0, false);
    case Activation::sigmoid:
      return mul_sigmoid_error(x, 0, true);
    case Activation::gelu_tanh: {
      // w = x * fmaf(b, x * x, a), a and b rounded to f32: x * x, the constants and the fma
      // round once each (3u over two positive terms), the product once more: 4u.
      const double a = 2 * std::sqrt(2 / std::numbers::pi);
      return mul_sigmoid_error(a * (x + 0.044715 * x * x * x), 4 * u, false);
    }
    case Activation::gelu_erf: {
      // (0.5 x) * erfcf(t), t = -x * (1/sqrt 2 rounded): t is 2u off, amplified by erfc's
      // condition number k(t) = 2|t| exp(-t^2) / (sqrt(pi) erfc(t)) (< 2t^2 + 1 where erfc
      // underflows); erfcf's 4 ulp (8u); the product: u.
      const double t = -x / std::numbers::sqrt2;
      const double c = std::erfc(t);
      const double k = c > 0
                           ? 2 * std::fabs(t) * std::exp(-t * t) / (std::sqrt(std::numbers::pi) * c)
                           : 2 * t * t + 1;
      return 2 * u * k + 9 * u;
    }
  }
  return INFINITY;
}

// |GPU - CPU| per element, given the kernel's relative error d of the exact result y (taken as
// the CPU's value, which is within u_out + u of y): both sides round to out (2 u_out) and the
// reference rounds through f32 (u); the bounds above are first order, and 0.1 % covers the
// products of errors. Absolute: one subnormal step of out (the two roundings below the normal
// range), plus 2^-140 |scale| for f32 subnormals inside the kernel (expf's 2 ulp = 2^-148 times
// |x| < 104 where exp(-|x|) is nonzero; erfcf's 4 ulp times 0.5|x| < 8 likewise).
double bound(double want, double d, DType out, double scale = 1) {
  const double uo = test::unit_roundoff(out);
  const double step = test::smallest_normal(out) * 2 * uo;
  return step + 0x1p-140 * std::max(1.0, std::fabs(scale)) +
         (2 * uo + u + 1.001 * d) * std::fabs(want) * (1 + 2 * uo);
}

enum class Form { plain, gated, softcap };

// Bounds for one op over inputs x (and up) as stored, against the CPU output `want`.
std::vector<double> bounds(Form form, Activation act, const std::vector<double>& x,
                           const std::vector<double>& up, const std::vector<double>& want,
                           DType out) {
  std::vector<double> b(want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    if (!std::isfinite(x[i]) || (form == Form::gated && !std::isfinite(up[i]))) {
      b[i] = 0;  // the limits and NaN are exact
      continue;
    }
    switch (form) {
      case Form::plain:
        b[i] = bound(want[i], activation_error(act, x[i]), out);
        break;
      case Form::gated:  // the product with up rounds once more
        b[i] = bound(want[i], activation_error(act, x[i]) + u, out, up[i]);
        break;
      case Form::softcap:
        // x / cap (u) enters tanh, whose condition number is at most 1; tanhf's 2 ulp (4u);
        // the product with cap (u).
        b[i] = bound(want[i], 6 * u, out);
        break;
    }
  }
  return b;
}

Buffer random_scaled(const Shape& shape, DType t, uint64_t seed, float sigma, const Stream& s) {
  Buffer b = Buffer::empty(shape, t, s);
  fill_random(b, {Distribution::normal, seed, 0.0f, sigma}, s);
  return b;
}

}  // namespace

TEST(GpuActivations, MatchTheCpuReference) {
  MLXN_REQUIRE_CUDA();
  const test::CpuGpu p;
  for (DType t : kTypes) {
    for (int64_t n : {1, 33, 4095, 262144}) {
      for (int64_t rows : {int64_t{1}, n > 4096 ? int64_t{3} : int64_t{37}}) {
        SCOPED_TRACE(::testing::Message() << dtype_name(t) << " " << rows << " x " << n);
        // sigma 3 reaches the tails where the naive forms cancel (|x| up to ~15).
        Buffer x = random_scaled({rows, n}, t, 81, 3.0f, p.cpu);
        Buffer up = random_scaled({rows, n}, t, 82, 1.0f, p.cpu);
        const Buffer xg = p.to_gpu(x), ug = p.to_gpu(up);
        const auto xv = test::to_f64(x, p.cpu), uv = test::to_f64(up, p.cpu);
        const auto compare = [&](Form form, Activation act, float cap, auto&& run) {
          Buffer oc = Buffer::empty({rows, n}, t, p.cpu), og = Buffer::empty({rows, n}, t, p.gpu);
          test::poison(og, p.gpu);
          run(x, up, oc, p.cpu);
          run(xg, ug, og, p.gpu);
          const auto want = test::to_f64(oc, p.cpu);
          EXPECT_TRUE(test::all_within(test::to_f64(og, p.gpu), want,
                                       bounds(form, act, xv, uv, want, t), {rows, n}))
              << activation_name(act) << " form " << static_cast<int>(form) << " cap " << cap;
        };
        for (Activation act : kActs) {
          compare(Form::plain, act, 0,
                  [&](const Buffer& a, const Buffer&, const Buffer& o, const Stream& s) {
                    activate(a, act, o, s);
                  });
          compare(Form::gated, act, 0,
                  [&](const Buffer& a, const Buffer& b, const Buffer& o, const Stream& s) {
                    gated_activation(a, b, act, o, s);
                  });
        }
        for (float cap : {30.0f, 0.5f}) {
          compare(Form::softcap, Activation::silu, cap,
                  [&](const Buffer& a, const Buffer&, const Buffer& o, const Stream& s) {
                    softcap(a, cap, o, s);
                  });
        }
      }
    }
  }
}

// Every layout runs the same per-element f32 code, so each must match the contiguous result bit
// for bit: the halves of a fused [.., 2I] projection (row-pitched packs when I is a multiple of
// the pack, the strided loop otherwise), an unaligned start, a strided out, and out = gate.
TEST(GpuActivations, FusedGateUpAndOtherViewsMatchContiguousBitForBit) {
  MLXN_REQUIRE_CUDA();
  const test::CpuGpu p;
  for (DType t : kTypes) {
    for (int64_t inter : {8, 64, 33, 1000}) {
      for (const Shape& lead : {Shape{37}, Shape{3, 5}}) {
        SCOPED_TRACE(::testing::Message()
                     << dtype_name(t) << " I " << inter << " lead " << shape_str(lead));
        Shape fused_shape = lead, shape = lead;
        fused_shape.push_back(2 * inter + 8);  // 8 spare columns: an unaligned gate start too
        shape.push_back(inter);
        const int axis = static_cast<int>(lead.size());
        Buffer fused = p.to_gpu(random_scaled(fused_shape, t, 91, 3.0f, p.cpu));
        const Buffer gate = fused.slice(axis, 0, inter), up = fused.slice(axis, inter, 2 * inter);
        const Buffer gate_odd = fused.slice(axis, 1, inter + 1);
        Buffer gc = Buffer::empty(shape, t, p.gpu), uc = Buffer::empty(shape, t, p.gpu);
        Buffer goc = Buffer::empty(shape, t, p.gpu);
        copy(gate, gc, p.gpu);
        copy(up, uc, p.gpu);
        copy(gate_odd, goc, p.gpu);
        for (Activation act : kActs) {
          SCOPED_TRACE(activation_name(act));
          Buffer want = Buffer::empty(shape, t, p.gpu), got = Buffer::empty(shape, t, p.gpu);
          test::poison(got, p.gpu);
          gated_activation(gc, uc, act, want, p.gpu);
          gated_activation(gate, up, act, got, p.gpu);
          EXPECT_TRUE(test::same_bits(got, want, p.gpu, p.gpu)) << "fused halves";
          // Against the CPU too (the CPU's own strided loop on the same views).
          const Buffer fused_cpu = Buffer::empty(fused_shape, t, p.cpu);
          copy(fused, fused_cpu, p.gpu);
          Buffer oc = Buffer::empty(shape, t, p.cpu);
          gated_activation(fused_cpu.slice(axis, 0, inter), fused_cpu.slice(axis, inter, 2 * inter),
                           act, oc, p.cpu);
          const auto gv = test::to_f64(gc, p.gpu), uv = test::to_f64(uc, p.gpu);
          const auto cv = test::to_f64(oc, p.cpu);
          EXPECT_TRUE(test::all_within(test::to_f64(got, p.gpu), cv,
                                       bounds(Form::gated, act, gv, uv, cv, t), shape));
          // Unaligned gate start, a strided out whose padding must stay untouched.
          Buffer want_odd = Buffer::empty(shape, t, p.gpu);
          gated_activation(goc, uc, act, want_odd, p.gpu);
          Shape wide_shape = lead;
          wide_shape.push_back(inter + 5);
          Buffer wide = Buffer::empty(wide_shape, t, p.gpu);
          test::poison(wide, p.gpu);
          gated_activation(gate_odd, up, act, wide.slice(axis, 0, inter), p.gpu);
          EXPECT_TRUE(test::same_bits(wide.slice(axis, 0, inter), want_odd, p.gpu, p.gpu))
              << "unaligned gate, strided out";
          const auto pad = test::to_f64(wide.slice(axis, inter, inter + 5), p.gpu);
          EXPECT_TRUE(std::all_of(pad.begin(), pad.end(), [](double v) { return std::isnan(v); }))
              << "out's padding was written";
          // In place: out is the gate half itself.
          Buffer f2 = Buffer::empty(fused_shape, t, p.gpu);
          copy(fused, f2, p.gpu);
          gated_activation(f2.slice(axis, 0, inter), f2.slice(axis, inter, 2 * inter), act,
                           f2.slice(axis, 0, inter), p.gpu);
          EXPECT_TRUE(test::same_bits(f2.slice(axis, 0, inter), want, p.gpu, p.gpu)) << "in place";
          EXPECT_TRUE(test::same_bits(f2.slice(axis, inter, 2 * inter), uc, p.gpu, p.gpu))
              << "up untouched";
          // The one-input form on a pitched view, and softcap on it.
          Buffer a1 = Buffer::empty(shape, t, p.gpu), a2 = Buffer::empty(shape, t, p.gpu);
          activate(gc, act, a1, p.gpu);
          activate(gate, act, a2, p.gpu);
          EXPECT_TRUE(test::same_bits(a2, a1, p.gpu, p.gpu)) << "activate on the gate half";
        }
        Buffer s1 = Buffer::empty(shape, t, p.gpu), s2 = Buffer::empty(shape, t, p.gpu);
        softcap(gc, 2.0f, s1, p.gpu);
        softcap(gate, 2.0f, s2, p.gpu);
        EXPECT_TRUE(test::same_bits(s2, s1, p.gpu, p.gpu)) << "softcap on the gate half";
      }
    }
  }
}

TEST(GpuActivations, SpecialValuesMatchTheCpu) {
  MLXN_REQUIRE_CUDA();
  const test::CpuGpu p;
  const float inf = INFINITY, nan = NAN;
  std::vector<float> x = {0.0f,  -0.0f,  1.0f,   -1.0f,   20.0f,   -20.0f, 88.0f,   -88.0f,
                          89.0f, -89.0f, 100.0f, -100.0f, 1e30f,   -1e30f, FLT_MAX, -FLT_MAX,
                          inf,   -inf,   nan,    1e-30f,  -1e-30f, 1e-40f, -1e-40f, 15.0f};
  const auto n = static_cast<int64_t>(x.size());
  Buffer xc = Buffer::from_host(std::span<const float>(x), {n}, DType::f32, p.cpu);
  std::vector<float> ones(x.size(), 1.0f);
  Buffer one = Buffer::from_host(std::span<const float>(ones), {n}, DType::f32, p.cpu);
  for (DType t : kTypes) {
    Buffer xt = Buffer::empty({n}, t, p.cpu), ut = Buffer::empty({n}, t, p.cpu);
    cast(xc, xt, p.cpu);
    cast(one, ut, p.cpu);
    const Buffer xg = p.to_gpu(xt), ug = p.to_gpu(ut);
    const auto xv = test::to_f64(xt, p.cpu), uv = test::to_f64(ut, p.cpu);
    for (Activation act : kActs) {
      SCOPED_TRACE(::testing::Message() << dtype_name(t) << " " << activation_name(act));
      Buffer oc = Buffer::empty({n}, t, p.cpu), og = Buffer::empty({n}, t, p.gpu);
      test::poison(og, p.gpu);
      activate(xt, act, oc, p.cpu);
      activate(xg, act, og, p.gpu);
      const auto want = test::to_f64(oc, p.cpu), got = test::to_f64(og, p.gpu);
      EXPECT_TRUE(test::all_within(got, want, bounds(Form::plain, act, xv, uv, want, t), {n}));
      const bool sig = act == Activation::sigmoid;
      EXPECT_EQ(got[16], sig ? 1.0 : INFINITY);
      EXPECT_EQ(got[17], 0.0);
      if (!sig) {
        EXPECT_TRUE(std::signbit(got[17])) << "the limit at -inf is -0";
      }
      EXPECT_TRUE(std::isnan(got[18]));
      EXPECT_TRUE(std::isfinite(got[11]) && std::fabs(got[11]) < (sig ? 1e-40 : 1e-38))
          << "f(-100) = " << got[11];
      EXPECT_EQ(got[10], sig ? 1.0 : 100.0);
      Buffer gg = Buffer::empty({n}, t, p.gpu);
      gated_activation(xg, ug, act, gg, p.gpu);
      EXPECT_TRUE(test::same_bits(gg, og, p.gpu, p.gpu)) << "times 1 changes nothing";
    }
    Buffer sc = Buffer::empty({n}, t, p.cpu), sg = Buffer::empty({n}, t, p.gpu);
    softcap(xt, 30.0f, sc, p.cpu);
    softcap(xg, 30.0f, sg, p.gpu);
    const auto want = test::to_f64(sc, p.cpu), got = test::to_f64(sg, p.gpu);
    EXPECT_TRUE(
        test::all_within(got, want, bounds(Form::softcap, Activation::silu, xv, uv, want, t), {n}));
    EXPECT_EQ(got[16], 30.0);
    EXPECT_EQ(got[17], -30.0);
    EXPECT_TRUE(std::isnan(got[18]));
  }
}
