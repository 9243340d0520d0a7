// Softmax and log-softmax on the GPU against the CPU reference, within error bounds derived from
// the kernel's f32 evaluation: every dtype pair, row lengths on both sides of each kernel
// variant's limits (warp, 128, 256, 1024 threads per row; inside and beyond the register cache)
// up to a 262144-entry vocabulary, a spike anywhere in the row, the special rows, unaligned
// rows and in-place use. Outputs are poisoned first.
#include <gtest/gtest.h>

#include <cfloat>
#include <cmath>

#include "support/support.h"

using namespace mlxn;

namespace {

const DType kTypes[] = {DType::f32, DType::bf16, DType::f16};
constexpr double u = 0x1p-24;  // f32 unit roundoff; an ulp of a normal result is at most 2u

// Threads the kernel gives one row (src/backend/cuda/softmax/softmax.cu).
int64_t threads_per_row(int64_t n) {
  return n <= 1024 ? 32 : n <= 4096 ? 128 : n <= 8192 ? 256 : 1024;
}

// |GPU - CPU| per element for rows of x (as stored). The kernel, first order in u:
//   z_i = (x_i - m) [/ t]: the subtraction rounds (u), the division too when t != 1: dz.
//   e_i = expf(z_i): 2 ulp (4u) plus |z_i| dz through the exponential.
//   s = sum e_i: each thread adds at most ceil(n / threads) + 7 of them in order (8-element
//     packs), then 5 butterfly levels and threads / 32 - 1 additions across warps: depth D,
//     relative error D u, plus the terms' own errors weighted by e_i / s: dz W + 4u with
//     W = sum p_i |z_i|.
//   softmax: e_i * (1 / s), two more roundings (2u).
//   log_softmax: z_i - logf(s): the absolute errors |z_i| dz, of log s (s's relative error, plus
//     logf's 1 ulp = 2u log s) and the subtraction's u |y_i|.
// Then both sides round to out (2 u_out) and the reference through f32 (u). 0.1 % covers the
// products of first-order errors. Absolute floor: one subnormal step of out (two roundings
// below the normal range) and 2^-147 for expf's 2 ulp of an f32 subnormal times 1/s <= 1 plus
// the product's rounding there. Rows holding NaN or +-inf as their maximum are exact (bound 0).
std::vector<double> bounds(const std::vector<double>& x, int64_t n, DType out, float t, bool log) {
  const double uo = test::unit_roundoff(out);
  const double abs_floor = test::smallest_normal(out) * 2 * uo + 0x1p-147;
  const double dz = t == 1.0f ? u : 2 * u;
  const int64_t threads = threads_per_row(n);
  const double depth = static_cast<double>((n + threads - 1) / threads + 7 + 5 + threads / 32 - 1);
  std::vector<double> b(x.size(), 0.0);
  std::vector<double> z(static_cast<size_t>(n));
  for (size_t r = 0; r < x.size() / static_cast<size_t>(n); ++r) {
    const double* xr = x.data() + r * static_cast<size_t>(n);
    double m = -INFINITY;
    bool nan = false;
    for (int64_t i = 0; i < n; ++i) {
      nan = nan || std::isnan(xr[i]);
      m = std::max(m, xr[i]);
    }
    if (nan || !std::isfinite(m)) continue;
    double s = 0, w = 0;
    for (int64_t i = 0; i < n; ++i) {
      z[static_cast<size_t>(i)] = (xr[i] - m) / t;
      s += std::exp(z[static_cast<size_t>(i)]);
    }
    for (int64_t i = 0; i < n; ++i) {
      const double zi = z[static_cast<size_t>(i)];
      if (std::isfinite(zi)) w += std::exp(zi) / s * std::fabs(zi);
    }
    const double es = dz * w + 4 * u + depth * u;
    for (int64_t i = 0; i < n; ++i) {
      const double zi = z[static_cast<size_t>(i)];
      double& bi = b[r * static_cast<size_t>(n) + static_cast<size_t>(i)];
      if (!std::isfinite(zi)) continue;  // -inf entries: exactly 0 (log: -inf) on both sides
      if (log) {
        const double y = zi - std::log(s);
        bi = abs_floor +
             1.001 * (std::fabs(zi) * dz + es + 2 * u * std::log(s) + u * std::fabs(y)) +
             (2 * uo + u) * std::fabs(y) * (1 + 2 * uo);
      } else {
        const double y = std::exp(zi) / s;
        const double d = std::fabs(zi) * dz + 4 * u + es + 2 * u;
        bi = abs_floor + (2 * uo + u + 1.001 * d) * y * (1 + 2 * uo);
      }
    }
  }
  return b;
}

// Runs the op on the CPU input and on its GPU copy (poisoned output) and compares.
::testing::AssertionResult matches(const Buffer& x, const Buffer& xg, DType out, float t, bool log,
                                   const test::CpuGpu& p) {
  const Shape& shape = x.shape();
  Buffer oc = Buffer::empty(shape, out, p.cpu), og = Buffer::empty(shape, out, p.gpu);
  test::poison(og, p.gpu);
  if (log) {
    log_softmax(x, oc, p.cpu, t);
    log_softmax(xg, og, p.gpu, t);
  } else {
    softmax(x, oc, p.cpu, t);
    softmax(xg, og, p.gpu, t);
  }
  return test::all_within(test::to_f64(og, p.gpu), test::to_f64(oc, p.cpu),
                          bounds(test::to_f64(x, p.cpu), x.dim(-1), out, t, log), shape);
}

Buffer random_scaled(const Shape& shape, DType t, uint64_t seed, float sigma, const Stream& s) {
  Buffer b = Buffer::empty(shape, t, s);
  fill_random(b, {Distribution::normal, seed, 0.0f, sigma}, s);
  return b;
}

}  // namespace

TEST(GpuSoftmax, MatchesTheCpuReference) {
  MLXN_REQUIRE_CUDA();
  const test::CpuGpu p;
  struct Size {
    int64_t n, rows;
    bool all_pairs;  // every (x, out) dtype pair, or three representative ones
  };
  const Size sizes[] = {{1, 37, true},    {33, 37, true},    {4095, 37, true},  {262144, 2, true},
                        {1024, 9, false}, {1025, 9, false},  {4096, 9, false},  {8192, 5, false},
                        {8193, 5, false}, {16384, 3, false}, {16385, 3, false}, {151936, 1, false}};
  for (const Size& size : sizes) {
    for (DType xt : kTypes) {
      for (DType ot : kTypes) {
        if (!size.all_pairs && !(xt == ot || (xt == DType::f32 && ot == DType::bf16))) continue;
        // sigma 4: peaked rows whose exponents span tens, and -inf-free.
        Buffer x = random_scaled({size.rows, size.n}, xt, 100 + static_cast<uint64_t>(size.n), 4.0f,
                                 p.cpu);
        const Buffer xg = p.to_gpu(x);
        for (float t : {1.0f, 0.7f}) {
          for (bool log : {false, true}) {
            EXPECT_TRUE(matches(x, xg, ot, t, log, p))
                << dtype_name(xt) << "->" << dtype_name(ot) << " " << size.rows << " x " << size.n
                << " temperature " << t << (log ? " log_softmax" : " softmax");
          }
        }
      }
    }
  }
}

// A spike of +100 over N(0, 1) values: the kernel must find it as the maximum (else exp(~95)
// overflows to inf and the row turns NaN), sum it (else its probability is far above 1) and
// write it, wherever it sits: first, last, middle, past the register cache.
TEST(GpuSoftmax, ASpikeAnywhereInTheRow) {
  MLXN_REQUIRE_CUDA();
  const test::CpuGpu p;
  for (int64_t n : {int64_t{1000}, int64_t{8193}, int64_t{20000}, int64_t{262144}}) {
    for (int64_t at : {int64_t{0}, n / 2, n - 1, std::min(n - 2, int64_t{16384 + 7})}) {
      std::vector<float> v = test::random_buffer({n}, DType::f32, 7, p.cpu).to_host<float>(p.cpu);
      v[static_cast<size_t>(at)] = 100.0f;
      Buffer x = Buffer::from_host(std::span<const float>(v), {1, n}, DType::f32, p.cpu);
      const Buffer xg = p.to_gpu(x);
      for (bool log : {false, true}) {
        EXPECT_TRUE(matches(x, xg, DType::f32, 1.0f, log, p)) << "n " << n << " spike at " << at;
      }
      Buffer og = Buffer::empty({1, n}, DType::f32, p.gpu);
      softmax(xg, og, p.gpu);
      EXPECT_GT(test::to_f64(og.select(1, at), p.gpu)[0], 0.99) << "n " << n << " at " << at;
    }
  }
}

TEST(GpuSoftmax, SpecialRows) {
  MLXN_REQUIRE_CUDA();
  const test::CpuGpu p;
  const float inf = INFINITY, nan = NAN;
  for (int64_t n : {int64_t{5}, int64_t{300}, int64_t{20000}}) {
    const int64_t rows = 7;
    std::vector<float> v =
        test::random_buffer({rows, n}, DType::f32, 8, p.cpu).to_host<float>(p.cpu);
    const auto at = [&](int64_t r, int64_t i) -> float& {
      return v[static_cast<size_t>(r * n + i)];
    };
    for (int64_t i = 0; i < n; ++i) at(0, i) = -inf;  // no distribution
    at(1, n - 1) = nan;                               // NaN at the very end
    at(2, n / 2) = inf;                               // +inf: inf - inf
    for (int64_t i = 0; i < n; ++i) at(3, i) = -inf;  // two survivors
    at(3, 1) = 0.0f;
    at(3, n - 2) = 0.0f;
    for (int64_t i = 0; i < n; i += 3) at(4, i) = -inf;  // -inf sprinkled
    at(5, 0) = 1e30f;                                    // huge, finite
    at(5, n - 1) = -FLT_MAX;
    at(6, n - 1) = FLT_MAX;
    Buffer x = Buffer::from_host(std::span<const float>(v), {rows, n}, DType::f32, p.cpu);
    const Buffer xg = p.to_gpu(x);
    for (DType ot : {DType::f32, DType::bf16}) {
      for (bool log : {false, true}) {
        SCOPED_TRACE(::testing::Message()
                     << "n " << n << " " << dtype_name(ot) << (log ? " log_softmax" : " softmax"));
        EXPECT_TRUE(matches(x, xg, ot, 1.0f, log, p));
        Buffer og = Buffer::empty({rows, n}, ot, p.gpu);
        test::poison(og, p.gpu);
        if (log) {
          log_softmax(xg, og, p.gpu);
        } else {
          softmax(xg, og, p.gpu);
        }
        const auto y = test::to_f64(og, p.gpu);
        const auto row = [&](int64_t r) {
          return std::vector<double>(y.begin() + r * n, y.begin() + (r + 1) * n);
        };
        for (double e : row(0)) EXPECT_EQ(e, log ? -INFINITY : 0.0);
        for (int64_t r : {1, 2}) {
          for (double e : row(r)) EXPECT_TRUE(std::isnan(e)) << "row " << r;
        }
        // Two survivors share the mass: 0.5 exactly (log_softmax: -logf(2), held to its bound
        // by matches() above).
        const auto r3 = row(3);
        for (int64_t i = 0; i < n; ++i) {
          const double e = r3[static_cast<size_t>(i)];
          if (i == 1 || i == n - 2) {
            EXPECT_TRUE(log ? (e < 0 && std::isfinite(e)) : e == 0.5) << i << ": " << e;
          } else {
            EXPECT_EQ(e, log ? -INFINITY : 0.0) << i;
          }
        }
        for (int64_t i = 0; i < n; i += 3)
          EXPECT_EQ(row(4)[static_cast<size_t>(i)], log ? -INFINITY : 0.0);
      }
    }
  }
}

TEST(GpuSoftmax, UnalignedRowsAndInPlace) {
  MLXN_REQUIRE_CUDA();
  const test::CpuGpu p;
  for (DType t : kTypes) {
    for (int64_t n : {int64_t{33}, int64_t{4096}, int64_t{20000}, int64_t{262144}}) {
      const int64_t rows = 3;
      SCOPED_TRACE(::testing::Message() << dtype_name(t) << " n " << n);
      Buffer x = random_scaled({rows * n + 1}, t, 9, 4.0f, p.cpu);
      // One element in: contiguous rows that no 16-byte pack can start.
      const Buffer xs = x.slice(0, 1, rows * n + 1).reshape({rows, n});
      const Buffer xg = p.to_gpu(x).slice(0, 1, rows * n + 1).reshape({rows, n});
      for (bool log : {false, true}) {
        EXPECT_TRUE(matches(xs, xg, t, 0.7f, log, p)) << (log ? "log_softmax" : "softmax");
        Buffer a = p.to_gpu(random_scaled({rows, n}, t, 10, 4.0f, p.cpu));
        Buffer want = Buffer::empty({rows, n}, t, p.gpu);
        if (log) {
          log_softmax(a, want, p.gpu);
          log_softmax(a, a, p.gpu);
        } else {
          softmax(a, want, p.gpu);
          softmax(a, a, p.gpu);
        }
        EXPECT_TRUE(test::same_bits(a, want, p.gpu, p.gpu)) << "in place";
      }
    }
  }
}
