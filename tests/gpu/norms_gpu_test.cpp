// Row normalisations on the GPU against the CPU reference: the fused sum bit for bit, outputs
// within the f32-accumulation tolerance, over odd sizes (warp-per-row and block-per-row paths,
// rows longer than the register cache) and mixed dtypes. Outputs are poisoned first.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "support/support.h"

using namespace mlxn;

namespace {

// How far the GPU (f32) may be from the CPU reference (f64), from how the kernel computes:
// a lane sums at most n/32 of a row's terms in order, then up to 13 tree levels combine the
// lanes; rsqrtf is within 2 ulp; the weight multiply and bias add round once each; the output
// rounds once (2 units of out's roundoff allow for the f64 reference rounding on the other
// side). LayerNorm subtracts the mean, whose absolute error (the same relative bound times
// mean |x|) carries into every element independently of its size: an absolute term.
test::Tolerance norm_tolerance(DType out, int64_t n, bool layer, const std::vector<double>& x,
                               const std::vector<double>& w, const std::vector<double>& b) {
  const double u = std::ldexp(1.0, -24);
  const double terms = static_cast<double>(n) / 32.0 + 13.0 + 2.0 + 2.0;
  test::Tolerance t = test::tolerance_for(out, 1);
  t.rtol += terms * u;
  if (layer) {
    const int64_t rows = static_cast<int64_t>(x.size()) / n;
    double spread = 0;  // max over rows of mean|x| / std
    for (int64_t r = 0; r < rows; ++r) {
      double m = 0, a = 0, v = 0;
      for (int64_t i = 0; i < n; ++i) m += x[r * n + i] / static_cast<double>(n);
      for (int64_t i = 0; i < n; ++i) {
        a += std::fabs(x[r * n + i]) / static_cast<double>(n);
        v += (x[r * n + i] - m) * (x[r * n + i] - m) / static_cast<double>(n);
      }
      spread = std::max(spread, a / std::sqrt(v + 1e-5));
    }
    double wmax = 0, bmax = 0;
    for (double e : w) wmax = std::max(wmax, std::fabs(e));
    for (double e : b) bmax = std::max(bmax, std::fabs(e));
    t.atol += terms * u * (2.0 * spread * wmax + bmax);
  }
  return t;
}

}  // namespace

TEST(GpuNorms, MatchTheCpuReference) {
  MLXN_REQUIRE_CUDA();
  const test::CpuGpu p;
  const std::pair<DType, DType> types[] = {{DType::bf16, DType::bf16},
                                           {DType::f32, DType::bf16},
                                           {DType::f16, DType::f32},
                                           {DType::f32, DType::f32}};
  for (auto [xt, ot] : types) {
    for (auto [n, rows] : {std::pair<int64_t, int64_t>{1, 37},
                           {33, 37},
                           {1024, 37},
                           {1025, 37},
                           {4095, 37},
                           {4096, 37},
                           {4097, 3},
                           {8193, 3},
                           {20000, 3},
                           // Past 2 rows per SM the kernel gives a row 32 or 128 threads.
                           {33, 1000},
                           {1024, 1000},
                           {4096, 1000}}) {
      SCOPED_TRACE(::testing::Message()
                   << dtype_name(xt) << "->" << dtype_name(ot) << " n " << n << " rows " << rows);
      Buffer x = test::random_buffer({rows, n}, xt, 31, p.cpu);
      Buffer r = test::random_buffer({rows, n}, xt, 32, p.cpu);
      Buffer w = test::random_buffer({n}, DType::bf16, 33, p.cpu);
      Buffer b = test::random_buffer({n}, DType::f32, 34, p.cpu);
      const Buffer xg = p.to_gpu(x), rg = p.to_gpu(r), wg = p.to_gpu(w), bg = p.to_gpu(b);
      const auto xs = test::to_f64(x, p.cpu), ws = test::to_f64(w, p.cpu),
                 bs = test::to_f64(b, p.cpu);
      const auto compare = [&](auto&& run_cpu, auto&& run_gpu, bool layer = false) {
        Buffer oc = Buffer::empty({rows, n}, ot, p.cpu), og = Buffer::empty({rows, n}, ot, p.gpu);
        test::poison(og, p.gpu);
        run_cpu(oc);
        run_gpu(og);
        EXPECT_TRUE(test::all_close(test::to_f64(og, p.gpu), test::to_f64(oc, p.cpu),
                                    norm_tolerance(ot, n, layer, xs, ws, bs), {rows, n}));
      };
      compare([&](const Buffer& o) { rms_norm(x, w, 1e-6f, o, p.cpu); },
              [&](const Buffer& o) { rms_norm(xg, wg, 1e-6f, o, p.gpu); });
      compare([&](const Buffer& o) { rms_norm(x, w, 1e-6f, o, p.cpu, RmsWeight::one_plus); },
              [&](const Buffer& o) { rms_norm(xg, wg, 1e-6f, o, p.gpu, RmsWeight::one_plus); });
      compare([&](const Buffer& o) { layer_norm(x, w, b, 1e-5f, o, p.cpu); },
              [&](const Buffer& o) { layer_norm(xg, wg, bg, 1e-5f, o, p.gpu); }, true);
      compare([&](const Buffer& o) { l2_norm(x, 1e-6f, o, p.cpu); },
              [&](const Buffer& o) { l2_norm(xg, 1e-6f, o, p.gpu); });
      Buffer sc = Buffer::empty({rows, n}, xt, p.cpu), sg = Buffer::empty({rows, n}, xt, p.gpu);
      test::poison(sg, p.gpu);
      compare([&](const Buffer& o) { add_rms_norm(x, r, w, 1e-6f, sc, o, p.cpu); },
              [&](const Buffer& o) { add_rms_norm(xg, rg, wg, 1e-6f, sg, o, p.gpu); });
      EXPECT_TRUE(test::same_bits(sg, sc, p.gpu, p.cpu)) << "the fused sum";
    }
  }
}
