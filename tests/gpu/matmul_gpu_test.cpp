// Weights and matmul on the GPU against the CPU reference: dequantize and the embedding gather
// bit for bit; matmul (the packed bandwidth path for M <= 16 and the cuBLASLt path) within a
// bound derived from how each path rounds, over every format, x dtype and odd shapes; run to run
// identical; graph replay.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <utility>
#include <vector>

#include "formats/ggml.h"
#include "formats/mlx_affine.h"
#include "support/support.h"

using namespace mlxn;

namespace {

struct Format {
  WeightFormat format;
  int bits, group;
  DType source = DType::bf16;  // MLX: the dtype quantized from, so also of scales and biases
  std::string name() const {
    std::string s(weight_format_name(format));
    if (format == WeightFormat::mlx_affine) s += std::to_string(bits) + "g" + std::to_string(group);
    if (source != DType::bf16) s.append(" ").append(dtype_name(source));
    return s;
  }
};

const std::vector<Format>& all_formats() {
  static const std::vector<Format> f = {
      {WeightFormat::dense, 0, 0},
      {WeightFormat::mlx_affine, 2, 32},
      {WeightFormat::mlx_affine, 3, 64},
      {WeightFormat::mlx_affine, 4, 64},
      {WeightFormat::mlx_affine, 4, 128},
      {WeightFormat::mlx_affine, 5, 32},
      {WeightFormat::mlx_affine, 6, 64},
      {WeightFormat::mlx_affine, 8, 32},
      {WeightFormat::q4_0, 0, 0},
      {WeightFormat::q8_0, 0, 0},
      {WeightFormat::q4_k, 0, 0},
      {WeightFormat::q5_k, 0, 0},
      {WeightFormat::q6_k, 0, 0},
      // The MLX widths gemv.cu's affine kernel takes, with scales of x's dtype for f16 x too.
      {WeightFormat::mlx_affine, 2, 64, DType::f16},
      {WeightFormat::mlx_affine, 4, 32, DType::f16},
      {WeightFormat::mlx_affine, 8, 128}};
  return f;
}

// A CPU weight of `format` [n, k] made from seeded normal values (bf16 scales for MLX).
Weight make_weight(const Format& f, int64_t n, int64_t k, uint64_t seed, const Stream& cpu) {
  if (f.format == WeightFormat::dense) {
    return Weight::dense(test::random_buffer({n, k}, DType::bf16, seed, cpu));
  }
  if (f.format == WeightFormat::mlx_affine) {
    return quantize_mlx_affine(test::random_buffer({n, k}, f.source, seed, cpu), f.bits, f.group,
                               cpu);
  }
  const Buffer v = test::random_buffer({n, k}, DType::f32, seed, cpu);
  const int64_t row_bytes = k / ggml_block_elements(f.format) * ggml_block_bytes(f.format);
  Buffer blocks = Buffer::empty({n, row_bytes}, DType::u8, cpu);
  for (int64_t r = 0; r < n; ++r) {
    formats::quantize_row(f.format, v.data_as<float>() + r * k, k,
                          blocks.data_as<uint8_t>() + r * row_bytes);
  }
  return Weight::ggml(f.format, blocks, k);
}

Weight to_gpu(const Weight& w, const test::CpuGpu& d) {
  switch (w.format()) {
    case WeightFormat::dense:
      return Weight::dense(d.to_gpu(w.data()));
    case WeightFormat::mlx_affine:
      return Weight::mlx_affine(d.to_gpu(w.data()), d.to_gpu(w.scales()), d.to_gpu(w.biases()),
                                w.bits(), w.group_size());
    default:
      return Weight::ggml(w.format(), d.to_gpu(w.data()), w.in_features());
  }
}

int64_t smallest_k(const Format& f) {
  if (f.format == WeightFormat::mlx_affine) return f.group;
  return f.format == WeightFormat::dense ? 32 : ggml_block_elements(f.format);
}

// Per element of the weight, |scale·code| + |bias| in the decomposition the packed path uses
// (gemv.cu): rounding scale and bias to x's dtype and the fused multiply-add each move the
// weight by at most one unit of that magnitude.
std::vector<double> magnitudes(const Weight& w) {
  namespace f = formats;
  const int64_t n = w.out_features(), k = w.in_features();
  std::vector<double> m(static_cast<size_t>(n * k));
  const Stream& cpu = test::cpu_stream();
  std::vector<double> dense;
  if (w.format() == WeightFormat::dense) dense = test::to_f64(w.data(), cpu);
  std::vector<double> s, b;
  if (w.format() == WeightFormat::mlx_affine) {
    s = test::to_f64(w.scales(), cpu);
    b = test::to_f64(w.biases(), cpu);
  }
  const int64_t row_bytes = w.data().dim(1) * w.data().element_size();
  for (int64_t r = 0; r < n; ++r) {
    const auto* row = static_cast<const uint8_t*>(w.data().data()) + r * row_bytes;
    for (int64_t c = 0; c < k; ++c) {
      double v = 0;
      switch (w.format()) {
        case WeightFormat::dense:
          v = std::fabs(dense[static_cast<size_t>(r * k + c)]);
          break;
        case WeightFormat::mlx_affine: {
          const size_t g = static_cast<size_t>(r * (k / w.group_size()) + c / w.group_size());
          v = std::fabs(s[g]) * f::mlx_affine_code(row, c, w.bits()) + std::fabs(b[g]);
          break;
        }
        case WeightFormat::q4_0: {
          const auto& blk = reinterpret_cast<const f::BlockQ4_0*>(row)[c / 32];
          v = std::fabs(f::f16_bits_to_float(blk.d)) *
              static_cast<double>(f::q4_0_code(blk, static_cast<int>(c % 32)) + 8);
          break;
        }
        case WeightFormat::q8_0: {
          const auto& blk = reinterpret_cast<const f::BlockQ8_0*>(row)[c / 32];
          v = std::fabs(f::f16_bits_to_float(blk.d)) * (blk.qs[c % 32] + 128 + 128);
          break;
        }
        case WeightFormat::q4_k:
        case WeightFormat::q5_k: {
          const bool five = w.format() == WeightFormat::q5_k;
          const uint8_t* base = row + (c / 256) * (five ? 176 : 144);
          const auto& b4 = *reinterpret_cast<const f::BlockQ4_K*>(base);
          const auto& b5 = *reinterpret_cast<const f::BlockQ5_K*>(base);
          const int e = static_cast<int>(c % 256);
          const f::ScaleMin sm = f::get_scale_min_k4(e / 32, five ? b5.scales : b4.scales);
          const double d = std::fabs(f::f16_bits_to_float(b4.d)),
                       dmin = std::fabs(f::f16_bits_to_float(b4.dmin));
          v = d * sm.scale * (five ? f::q5_k_code(b5, e) : f::q4_k_code(b4, e)) + dmin * sm.min;
          break;
        }
        case WeightFormat::q6_k: {
          const auto& blk = *reinterpret_cast<const f::BlockQ6_K*>(row + (c / 256) * 210);
          const int e = static_cast<int>(c % 256);
          const double ds = std::fabs(f::f16_bits_to_float(blk.d) * blk.scales[e >> 4]);
          v = ds * (f::q6_k_code(blk, e) + 32);
          break;
        }
      }
      m[static_cast<size_t>(r * k + c)] = v;
    }
  }
  return m;
}

// A CPU weight, its GPU copy, and what the bound needs per element: the dequantized value and
// the magnitude of its decomposition.
struct Reference {
  Reference(const Weight& w, const test::CpuGpu& d)
      : g(to_gpu(w, d)), n(w.out_features()), k(w.in_features()) {
    Buffer wd = Buffer::empty({n, k}, DType::f32, d.cpu);
    dequantize(w, wd, d.cpu);
    wv = test::to_f64(wd, d.cpu);
    mag = magnitudes(w);
  }

  // matmul(x_gpu, g, bias) on the GPU against the exact product of x (the same values on the
  // CPU) and the dequantized weight: |gpu - exact| <= 2.1·u_x·Σ|x|·magnitude +
  // (K + 2)·2^-24·Σ|x·w| + two units of the output dtype + its smallest normal.
  ::testing::AssertionResult check(const Buffer& x, const Buffer& x_gpu, const Buffer& bias,
                                   DType ot, const test::CpuGpu& d) const {
    const int64_t m = x.dim(0);
    Buffer out = Buffer::empty({m, n}, ot, d.gpu);
    test::poison(out, d.gpu);
    matmul(x_gpu, g, bias.defined() ? d.to_gpu(bias) : Buffer(), out, d.gpu);
    const auto xv = test::to_f64(x, d.cpu);
    const auto bv = bias.defined() ? test::to_f64(bias, d.cpu) : std::vector<double>();
    const double ux = x.dtype() == DType::f32 ? 0.0 : test::unit_roundoff(x.dtype());
    std::vector<double> expected(static_cast<size_t>(m * n)), bound(expected.size());
    for (int64_t i = 0; i < m; ++i) {
      for (int64_t j = 0; j < n; ++j) {
        double acc = bv.empty() ? 0.0 : bv[static_cast<size_t>(j)], xm = 0, xw = 0;
        for (int64_t q = 0; q < k; ++q) {
          const double xe = xv[static_cast<size_t>(i * k + q)];
          acc += xe * wv[static_cast<size_t>(j * k + q)];
          xm += std::fabs(xe) * mag[static_cast<size_t>(j * k + q)];
          xw += std::fabs(xe * wv[static_cast<size_t>(j * k + q)]);
        }
        const size_t at = static_cast<size_t>(i * n + j);
        expected[at] = acc;
        bound[at] = 2.1 * ux * xm + static_cast<double>(k + 2) * std::ldexp(1.0, -24) * xw +
                    2.0 * test::unit_roundoff(ot) * std::fabs(acc) + test::smallest_normal(ot);
      }
    }
    return test::all_within(test::to_f64(out, d.gpu), expected, bound, out.shape());
  }

  Weight g;
  int64_t n, k;
  std::vector<double> wv, mag;
};

}  // namespace

TEST(GpuWeights, DequantizeAndEmbeddingAreBitIdentical) {
  MLXN_REQUIRE_CUDA();
  test::CpuGpu d;
  uint64_t seed = 11;
  for (const Format& f : all_formats()) {
    for (int64_t n : {1, 37}) {
      const int64_t k = smallest_k(f) * 3;
      const Weight w = make_weight(f, n, k, seed++, d.cpu);
      const Weight g = to_gpu(w, d);
      for (DType out : {DType::f32, DType::bf16, DType::f16}) {
        Buffer a = Buffer::empty({n, k}, out, d.cpu), b = Buffer::empty({n, k}, out, d.gpu);
        test::poison(b, d.gpu);
        dequantize(w, a, d.cpu);
        dequantize(g, b, d.gpu);
        EXPECT_TRUE(test::same_bits(b, a, d.gpu, d.cpu)) << f.name() << " n " << n;
      }
      const std::vector<int32_t> ids = {static_cast<int32_t>(n - 1), 0,
                                        static_cast<int32_t>(n / 2)};
      Buffer a = Buffer::empty({3, k}, DType::bf16, d.cpu),
             b = Buffer::empty({3, k}, DType::bf16, d.gpu);
      embedding(test::CpuGpu::i32(ids, d.cpu), w, a, d.cpu);
      embedding(test::CpuGpu::i32(ids, d.gpu), g, b, d.gpu);
      EXPECT_TRUE(test::same_bits(b, a, d.gpu, d.cpu)) << f.name();
    }
  }
  const Weight g = to_gpu(make_weight(all_formats()[3], 4, 64, 1, d.cpu), d);
  Buffer b = Buffer::empty({2, 64}, DType::f32, d.gpu);
  embedding(test::CpuGpu::i32({0, 4}, d.gpu), g, b, d.gpu);
  EXPECT_THROW(d.gpu.synchronize(), Error);
}

// |gpu - exact| <= 2.1·u_x·Σ|x|·magnitude (the weight rounded to x's dtype, packed path) +
// K·2^-24·Σ|x·w| (f32 accumulation, any order) + the output rounding. For f32 x the weight is
// not rounded (u_x = 0).
TEST(GpuMatmul, MatchesTheCpuReferenceWithinTheDerivedBound) {
  MLXN_REQUIRE_CUDA();
  test::CpuGpu d;
  uint64_t seed = 100;
  for (const Format& f : all_formats()) {
    for (int64_t n : {1, 33, 200}) {
      for (int64_t kmul : {1, 5}) {
        const int64_t k = smallest_k(f) * kmul * (f.format == WeightFormat::dense ? 2 : 1);
        const Reference ref(make_weight(f, n, k, seed++, d.cpu), d);
        for (int64_t m : {1, 3, 8, 9, 16, 17, 300}) {
          for (DType xt : {DType::bf16, DType::f16, DType::f32}) {
            if (m == 300 && xt != DType::bf16) continue;
            const DType ot = xt == DType::f32 ? DType::f32 : (m % 2 ? DType::f32 : xt);
            const Buffer x = test::random_buffer({m, k}, xt, seed++, d.cpu);
            const Buffer bias =
                n == 33 ? test::random_buffer({n}, DType::bf16, seed++, d.cpu) : Buffer();
            EXPECT_TRUE(ref.check(x, d.to_gpu(x), bias, ot, d))
                << f.name() << " n " << n << " k " << k << " m " << m << " x " << dtype_name(xt);
          }
        }
      }
    }
  }
}

// M <= 4 runs the small-batch kernel (gemv.cu): odd N, K whose last step is partial, K long
// enough to split across warps or blocks, an N past one wave of blocks (no split, several steps), x
// at an offset in its allocation, every packed format, bf16 and f16 x, f32 / bf16 / f16 outputs and
// biases; the same bound as above.
TEST(GpuMatmul, SmallBatchMatchesTheCpuReference) {
  MLXN_REQUIRE_CUDA();
  test::CpuGpu d;
  uint64_t seed = 500;
  for (const Format& f : all_formats()) {
    if (f.format == WeightFormat::dense) continue;
    std::vector<std::pair<int64_t, int64_t>> shapes;  // (n, k)
    for (int64_t n : {1, 31, 33, 1000}) {
      for (int64_t k : {smallest_k(f), smallest_k(f) * 5, int64_t{4096}}) shapes.emplace_back(n, k);
    }
    shapes.emplace_back(17000, 512);
    for (const auto& [n, k] : shapes) {
      const Reference ref(make_weight(f, n, k, seed++, d.cpu), d);
      for (int64_t m = 1; m <= 4; ++m) {
        if (n > 1000 && m != 1 && m != 4) continue;
        for (DType xt : {DType::bf16, DType::f16}) {
          if (n > 1000 && xt != DType::bf16) continue;
          const DType ot = m % 2 ? DType::f32 : (m == 2 ? xt : DType::bf16);
          // x: rows 1..m of an (m + 1)-row buffer, so its data starts 2·K bytes in.
          const Buffer x_all = test::random_buffer({m + 1, k}, xt, seed++, d.cpu);
          const Buffer x = x_all.slice(0, 1, m + 1);
          const DType bias_type = n == 1000 ? DType::f32 : (n == 33 ? DType::f16 : DType::bf16);
          const Buffer bias =
              n == 31 ? Buffer() : test::random_buffer({n}, bias_type, seed++, d.cpu);
          EXPECT_TRUE(ref.check(x, d.to_gpu(x_all).slice(0, 1, m + 1), bias, ot, d))
              << f.name() << " n " << n << " k " << k << " m " << m << " x " << dtype_name(xt);
        }
      }
    }
  }
}

TEST(GpuMatmul, RunToRunIdenticalAndGraphReplay) {
  MLXN_REQUIRE_CUDA();
  test::CpuGpu d;
  for (const Format& f : {all_formats()[3], all_formats()[10]}) {
    const Weight g = to_gpu(make_weight(f, 4096, 1024, 5, d.cpu), d);
    for (int64_t m : {1, 4, 16, 64}) {
      const Buffer x = d.to_gpu(test::random_buffer({m, 1024}, DType::bf16, 6, d.cpu));
      Buffer a = Buffer::empty({m, 4096}, DType::bf16, d.gpu);
      Buffer b = Buffer::empty({m, 4096}, DType::bf16, d.gpu);
      matmul(x, g, {}, a, d.gpu);
      test::poison(b, d.gpu);
      Graph graph = Graph::capture(d.gpu, [&] { matmul(x, g, {}, b, d.gpu); });
      graph.replay(d.gpu);
      graph.replay(d.gpu);
      EXPECT_TRUE(test::same_bits(b, a, d.gpu, d.gpu)) << f.name() << " m " << m;
    }
  }
}
