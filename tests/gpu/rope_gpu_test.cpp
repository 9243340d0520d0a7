// RoPE and per-head RMSNorm + RoPE on the GPU against the CPU reference: both pairings, full and
// partial rotary dimensions, head_dim 64..512, long positions, the 16-byte and the scalar paths
// (an unaligned view), strided and in-place views, every weight mode; negative positions raise.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "support/support.h"

using namespace mlxn;

namespace {

// GPU (f32) vs CPU (f64, same f32 angle): sincosf is within 2 ulp and the attention scaling
// rounds once (cos and sin off by 3 * 2^-24 of at most 1); the rotation's multiply and
// multiply-add round twice more: (|a| + |b|) * 5 * 2^-24 in all. The norm adds its sum of
// squares (head_dim / group terms in order, then 5 shuffle levels, relative 2^-24 each, halved
// by the square root) and rsqrtf's 2 ulp. Output rounding: tolerance_for(out) (two units, as
// the reference rounds too).
test::Tolerance rope_tolerance(DType out, int64_t head_dim, bool norm, double max_abs) {
  test::Tolerance t = test::tolerance_for(out);
  t.atol += 2.0 * max_abs * 5.0 * 0x1p-24;
  if (norm) t.rtol += (static_cast<double>(head_dim) / 2.0 + 5.0 + 2.0) * 0x1p-24;
  return t;
}

double max_abs_of(const std::vector<double>& v) {
  double m = 0;
  for (double e : v) m = std::max(m, std::fabs(e));
  return m;
}

}  // namespace

TEST(GpuRope, MatchesTheCpuReference) {
  MLXN_REQUIRE_CUDA();
  const test::CpuGpu p;
  struct Shape3 {
    int64_t tokens, heads, d, rot;
  };
  const Shape3 shapes[] = {{1, 32, 128, 128}, {7, 8, 64, 64},  {33, 4, 256, 64},
                           {3, 2, 512, 512},  {5, 3, 80, 40},  {300, 2, 128, 32},
                           {2, 5, 96, 96},    {4, 1, 128, 128}};
  for (DType dt : {DType::bf16, DType::f32, DType::f16}) {
    for (RopePairing pairing : {RopePairing::half, RopePairing::interleaved}) {
      for (const Shape3& sh : shapes) {
        for (bool norm : {false, true}) {
          SCOPED_TRACE(::testing::Message()
                       << dtype_name(dt) << (pairing == RopePairing::half ? " half" : " inter")
                       << " t " << sh.tokens << " h " << sh.heads << " d " << sh.d << " rot "
                       << sh.rot << (norm ? " norm" : ""));
          RopeConfig cfg;
          cfg.head_dim = sh.d;
          cfg.rotary_dim = sh.rot;
          cfg.theta = 500000.0;
          cfg.pairing = pairing;
          cfg.scaling = RopeScaling::llama3;
          cfg.factor = 8;
          cfg.original_max_position = 8192;
          const RopeTable tc(cfg, p.cpu), tg(cfg, p.gpu);
          std::vector<int32_t> pos(static_cast<size_t>(sh.tokens));
          for (size_t i = 0; i < pos.size(); ++i)
            pos[i] = static_cast<int32_t>((i * 2654435761u) % 131072u);
          const Buffer pc = test::CpuGpu::i32(pos, p.cpu), pg = test::CpuGpu::i32(pos, p.gpu);
          Buffer x = test::random_buffer({sh.tokens, sh.heads, sh.d}, dt, 3, p.cpu);
          Buffer w = test::random_buffer({sh.d}, DType::bf16, 4, p.cpu);
          const Buffer xg = p.to_gpu(x), wg = p.to_gpu(w);
          Buffer oc = Buffer::empty(x.shape(), dt, p.cpu), og = Buffer::empty(x.shape(), dt, p.gpu);
          test::poison(og, p.gpu);
          if (norm) {
            rms_norm_rope(x, w, 1e-6f, RmsWeight::one_plus, pc, tc, oc, p.cpu);
            rms_norm_rope(xg, wg, 1e-6f, RmsWeight::one_plus, pg, tg, og, p.gpu);
          } else {
            rope(x, pc, tc, oc, p.cpu);
            rope(xg, pg, tg, og, p.gpu);
          }
          const auto want = test::to_f64(oc, p.cpu);
          EXPECT_TRUE(test::all_close(test::to_f64(og, p.gpu), want,
                                      rope_tolerance(dt, sh.d, norm, max_abs_of(want)), x.shape()));
        }
      }
    }
  }
}

TEST(GpuRope, ScalarPathStridedAndInPlace) {
  MLXN_REQUIRE_CUDA();
  const test::CpuGpu p;
  const int64_t t = 9, d = 128;
  RopeConfig cfg;
  cfg.head_dim = d;
  cfg.scaling = RopeScaling::yarn;
  cfg.factor = 4;
  cfg.original_max_position = 32768;
  cfg.theta = 1e6;
  const RopeTable tc(cfg, p.cpu), tg(cfg, p.gpu);
  std::vector<int32_t> pos = {0, 5, 131071, 77, 4096, 1, 2, 3, 99999};
  const Buffer pc = test::CpuGpu::i32(pos, p.cpu), pg = test::CpuGpu::i32(pos, p.gpu);
  // Heads 1..4 of a [t, 7, d] buffer whose token rows start one element in: no 16-byte packs.
  Buffer fused = test::random_buffer({t * 7 * d + 1}, DType::bf16, 8, p.cpu);
  const auto view = [&](const Buffer& b) {
    return b.slice(0, 1, t * 7 * d + 1).reshape({t, 7, d}).slice(1, 1, 5);
  };
  Buffer fused_g = p.to_gpu(fused);
  Buffer qc = view(fused), qg = view(fused_g);
  for (bool norm : {false, true}) {
    Buffer oc = Buffer::empty({t, 4, d}, DType::bf16, p.cpu);
    Buffer og = Buffer::empty({t, 4, d}, DType::bf16, p.gpu);
    Buffer w = test::random_buffer({d}, DType::f32, 9, p.cpu);
    if (norm) {
      rms_norm_rope(qc, w, 1e-6f, RmsWeight::multiply, pc, tc, oc, p.cpu);
      rms_norm_rope(qg, p.to_gpu(w), 1e-6f, RmsWeight::multiply, pg, tg, og, p.gpu);
    } else {
      rope(qc, pc, tc, oc, p.cpu);
      rope(qg, pg, tg, og, p.gpu);
    }
    const auto want = test::to_f64(oc, p.cpu);
    EXPECT_TRUE(test::all_close(test::to_f64(og, p.gpu), want,
                                rope_tolerance(DType::bf16, d, norm, max_abs_of(want)), {t, 4, d}));
  }
  // In place on the strided view: the same bits as out of place, the other heads untouched.
  Buffer og = Buffer::empty({t, 4, d}, DType::bf16, p.gpu);
  rope(qg, pg, tg, og, p.gpu);
  const auto before = test::to_bits(fused_g, p.gpu);
  rope(qg, pg, tg, qg, p.gpu);
  EXPECT_TRUE(test::same_bits(qg, og, p.gpu, p.gpu));
  const auto after = test::to_bits(fused_g, p.gpu);
  const auto heads_view =
      test::to_bits(fused_g.slice(0, 1, t * 7 * d + 1).reshape({t, 7, d}), p.gpu);
  size_t changed_outside = 0;
  for (int64_t i = 0; i < t; ++i) {
    for (int64_t h : {0, 5, 6}) {
      for (int64_t e = 0; e < d; ++e) {
        const auto k = static_cast<size_t>((i * 7 + h) * d + e);
        changed_outside += heads_view[k] != before[k + 1];
      }
    }
  }
  EXPECT_EQ(before[0], after[0]);
  EXPECT_EQ(changed_outside, 0u);
}

TEST(GpuRope, NegativePositionRaises) {
  MLXN_REQUIRE_CUDA();
  const test::CpuGpu p;
  RopeConfig cfg;
  cfg.head_dim = 64;
  const RopeTable tg(cfg, p.gpu);
  Buffer x = test::random_buffer({3, 2, 64}, DType::bf16, 1, p.gpu);
  Buffer out = Buffer::empty({3, 2, 64}, DType::bf16, p.gpu);
  EXPECT_TRUE(test::throws_error(
      [&] {
        rope(x, test::CpuGpu::i32({4, 2, -1}, p.gpu), tg, out, p.gpu);
        p.gpu.synchronize();
      },
      "[rope]", {"positions"}));
}
