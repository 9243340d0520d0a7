// matmul on the GPU: y = x·Wᵀ for the projection shapes of Llama-3-8B / Qwen3-8B (N×K = 4096×4096,
// 14336×4096, 4096×14336, 151936×4096), M ∈ {1, 4, 16, 64, 512, 4096} rows of bf16 x, weights in
// MLX 4-bit g64, 8-bit g64, 3-bit g64, 4-bit g128, GGML Q4_0, Q8_0, Q4_K, Q6_K; the peer is cuBLAS
// with the bf16 weight (the library's dense path is cuBLASLt) timed in the same run. Bytes: the
// weight as stored + x + out. The weights are a 64-row block (quantized from seeded values on the
// CPU) repeated down the rows; enough weight copies rotate to keep the working set beyond L2. Each
// (format, shape) is first checked at M = 1 and M = 64 against cuBLAS on the dequantized weight.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "formats/ggml.h"
#include "harness.h"

using namespace mlxn;
using namespace mlxn::bench;

namespace {

struct Format {
  std::string name;
  WeightFormat format;
  int bits, group;
};

// A 64-row block of the format, from seeded normal values (scales like a trained layer's).
Weight block_weight(const Format& f, int64_t k, const Stream& cpu) {
  const int64_t rows = 64;
  Buffer v = Buffer::empty({rows, k}, DType::f32, cpu);
  fill_random(v, {Distribution::normal, 17, 0.0f, 0.02f}, cpu);
  if (f.format == WeightFormat::dense) {
    Buffer b = Buffer::empty({rows, k}, DType::bf16, cpu);
    cast(v, b, cpu);
    return Weight::dense(b);
  }
  if (f.format == WeightFormat::mlx_affine) {
    Buffer b = Buffer::empty({rows, k}, DType::bf16, cpu);
    cast(v, b, cpu);
    return quantize_mlx_affine(b, f.bits, f.group, cpu);
  }
  const int64_t row_bytes = k / ggml_block_elements(f.format) * ggml_block_bytes(f.format);
  Buffer blocks = Buffer::empty({rows, row_bytes}, DType::u8, cpu);
  for (int64_t r = 0; r < rows; ++r) {
    formats::quantize_row(f.format, v.data_as<float>() + r * k, k,
                          blocks.data_as<uint8_t>() + r * row_bytes);
  }
  return Weight::ggml(f.format, blocks, k);
}

// [n, ...] on the GPU: the block's rows repeated.
Buffer tile_rows(const Buffer& block, int64_t n, const Stream& s) {
  Buffer out = Buffer::empty_exact({n, block.dim(1)}, block.dtype(), s);
  Buffer src = Buffer::empty({block.dim(0), block.dim(1)}, block.dtype(), s);
  copy(block, src, s);
  for (int64_t r = 0; r < n; r += block.dim(0)) {
    const int64_t rows = std::min(block.dim(0), n - r);
    copy(src.slice(0, 0, rows), out.slice(0, r, r + rows), s);
  }
  return out;
}

Weight gpu_weight(const Weight& b, int64_t n, const Stream& s) {
  switch (b.format()) {
    case WeightFormat::dense:
      return Weight::dense(tile_rows(b.data(), n, s));
    case WeightFormat::mlx_affine:
      return Weight::mlx_affine(tile_rows(b.data(), n, s), tile_rows(b.scales(), n, s),
                                tile_rows(b.biases(), n, s), b.bits(), b.group_size());
    default:
      return Weight::ggml(b.format(), tile_rows(b.data(), n, s), b.in_features());
  }
}

// max |y - ref| / max |ref| between two [m, n] outputs.
double relative_error(const Buffer& y, const Buffer& ref, const Stream& s) {
  Buffer a = Buffer::empty(y.shape(), DType::f32, s), b = Buffer::empty(y.shape(), DType::f32, s);
  cast(y, a, s);
  cast(ref, b, s);
  const auto av = a.to_host<float>(s), bv = b.to_host<float>(s);
  double worst = 0, scale = 1e-30;
  for (size_t i = 0; i < av.size(); ++i) {
    worst = std::max(worst, std::fabs(double{av[i]} - bv[i]));
    scale = std::max(scale, std::fabs(double{bv[i]}));
  }
  return worst / scale;
}

}  // namespace

// An optional argument keeps only the cases whose name (followed by "$") contains it.
int main(int argc, char** argv) {
  try {
    const std::string only = argc > 1 ? argv[1] : "";
    if (!have_gpu()) return 1;
    Stream s(Device::cuda(0));
    Stream cpu(Device::cpu());
    const double copy_gbps = report_copy_ceiling(s);
    const std::vector<Format> formats = {{"bf16", WeightFormat::dense, 0, 0},
                                         {"mlx4g64", WeightFormat::mlx_affine, 4, 64},
                                         {"mlx8g64", WeightFormat::mlx_affine, 8, 64},
                                         {"mlx3g64", WeightFormat::mlx_affine, 3, 64},
                                         {"mlx4g128", WeightFormat::mlx_affine, 4, 128},
                                         {"q4_0", WeightFormat::q4_0, 0, 0},
                                         {"q8_0", WeightFormat::q8_0, 0, 0},
                                         {"q4_k", WeightFormat::q4_k, 0, 0},
                                         {"q6_k", WeightFormat::q6_k, 0, 0}};
    const std::vector<std::pair<int64_t, int64_t>> shapes = {
        {4096, 4096}, {14336, 4096}, {4096, 14336}, {151936, 4096}};
    const std::vector<int64_t> ms = {1, 4, 16, 64, 512, 4096};
    // A case runs when its name ("matmul_mlx4g64_14336x4096_m1", with the "$" of a regex for
    // its end) contains the filter: "_m1$" selects every M = 1 case.
    const auto wanted = [&](const std::string& prefix, int64_t m) {
      return only.empty() || (prefix + std::to_string(m) + "$").find(only) != std::string::npos;
    };
    const auto start = std::chrono::steady_clock::now();
    for (const auto& [n, k] : shapes) {
      const Weight dense_block = block_weight(formats[0], k, cpu);
      std::vector<double> cublas_us(ms.size(), 0);
      for (const Format& f : formats) {
        const std::string prefix =
            "matmul_" + f.name + "_" + std::to_string(n) + "x" + std::to_string(k) + "_m";
        if (std::none_of(ms.begin(), ms.end(), [&](int64_t m) { return wanted(prefix, m); })) {
          continue;
        }
        // Progress on stderr: where the run's time goes.
        std::fprintf(
            stderr, "%.1f s: %s %lldx%lld\n",
            std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(),
            f.name.c_str(), static_cast<long long>(n), static_cast<long long>(k));
        const Weight block =
            f.format == WeightFormat::dense ? dense_block : block_weight(f, k, cpu);
        const int copies =
            std::min(rotation_sets(gpu_weight(block, 64, s).nbytes() * n / 64, s.device()), 8);
        std::vector<Weight> w;
        for (int i = 0; i < copies; ++i) w.push_back(gpu_weight(block, n, s));
        // The reference: cuBLAS on this weight dequantized to bf16.
        Buffer wd = Buffer::empty({n, k}, DType::bf16, s);
        dequantize(w[0], wd, s);
        const Weight ref_w = Weight::dense(wd);
        for (size_t mi = 0; mi < ms.size(); ++mi) {
          const int64_t m = ms[mi];
          if (n == 151936 && m == 4096 && f.format != WeightFormat::dense) continue;
          if (!wanted(prefix, m)) continue;
          Buffer x = Buffer::empty({m, k}, DType::bf16, s),
                 y = Buffer::empty({m, n}, DType::bf16, s);
          fill_random(x, {Distribution::normal, 3, 0.0f, 1.0f}, s);
          if (m == 1 || m == 64) {
            Buffer ref = Buffer::empty({m, n}, DType::bf16, s);
            matmul(x, ref_w, {}, ref, s);
            matmul(x, w[0], {}, y, s);
            const double err = relative_error(y, ref, s);
            validate(err < 2e-2, f.name + " " + std::to_string(n) + "x" + std::to_string(k) +
                                     " m " + std::to_string(m) + ": error " + std::to_string(err));
          }
          Case c;
          c.name = "matmul_" + f.name + "_" + std::to_string(n) + "x" + std::to_string(k) + "_m" +
                   std::to_string(m);
          c.shape = {{"format", f.name}, {"n", n}, {"k", k}, {"m", m}};
          c.timing = time_device(
              s, [&](int i) { matmul(x, w[static_cast<size_t>(i % copies)], {}, y, s); }, 3,
              m >= 512 ? 20 : 50);
          c.bytes = static_cast<double>(w[0].nbytes()) + 2.0 * static_cast<double>(m * (k + n));
          c.flops = 2.0 * static_cast<double>(m) * static_cast<double>(n) * static_cast<double>(k);
          if (f.format == WeightFormat::dense) cublas_us[mi] = c.timing.median_us;
          nlohmann::json j = emit(c, copy_gbps);
          if (f.format != WeightFormat::dense && cublas_us[mi] > 0) {
            std::printf("%s\n", nlohmann::json({{"name", c.name + "_vs_cublas_bf16"},
                                                {"speedup", cublas_us[mi] / c.timing.median_us},
                                                {"cublas_us", cublas_us[mi]}})
                                    .dump()
                                    .c_str());
          }
        }
      }
    }
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "matmul bench failed: %s\n", e.what());
    return 1;
  }
}
