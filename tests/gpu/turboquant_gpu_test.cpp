// TurboQuant on the GPU against the CPU reference: codes byte for byte, scales and decoded
// values bit for bit, on random and adversarial inputs, for every head_dim and bit width.
#include <gtest/gtest.h>

#include <cmath>
#include <numeric>
#include <random>

#include "support/support.h"
#include "turboquant/codebook.h"
#include "turboquant/encode_job.h"
#include "turboquant/reference.h"

using namespace mlxn;

namespace {

const int kDims[] = {64, 128, 256, 512};
const int kBits[] = {2, 3, 4, 5, 6, 8};

// Inputs [tokens, heads, dim]: random normals with adversarial vectors mixed in.
std::vector<float> adversarial_inputs(int64_t tokens, int heads, int dim, int bits, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal;
  std::vector<float> x(static_cast<size_t>(tokens * heads * dim));
  for (float& v : x) v = normal(rng);
  const tq::Codebook& book = tq::codebook(bits);
  const int64_t vectors = tokens * heads;
  for (int64_t i = 0; i < vectors; ++i) {
    float* v = x.data() + i * dim;
    switch (i % 9) {
      case 1:
        std::fill(v, v + dim, 0.0f);
        break;  // zero vector
      case 2:
        std::fill(v, v + dim, 0.0f);
        v[i % dim] = 2.5f;
        break;  // one-hot
      case 3:
        for (int j = 0; j < dim; ++j) v[j] *= 1e30f;
        break;  // huge
      case 4:
        for (int j = 0; j < dim; ++j) v[j] *= 1e-41f;
        break;  // subnormal
      case 5:
        for (int j = 0; j < dim; ++j) v[j] *= 3e6f;
        break;   // fp16 scale overflows
      case 6: {  // rotated coordinates sitting on (or an ulp from) decision boundaries
        std::vector<float> y(static_cast<size_t>(dim));
        for (int j = 0; j < dim; ++j) {
          float b = book.boundaries[static_cast<size_t>(j) % book.boundaries.size()];
          if (j % 3 == 1) b = std::nextafter(b, INFINITY);
          y[static_cast<size_t>(j)] = b;
        }
        tq::reference::inverse_rotate(y.data(), v, dim);
        break;
      }
      case 7:
        for (int j = 0; j < dim; j += 2) v[j] = -v[j + 1];
        break;  // exact cancellations
      default:
        break;
    }
  }
  return x;
}

// Both CUDA encoders must equal the reference; the automatic choice picks by batch size, so the
// tests force each in turn (the bulk encoder takes head_dim 64 and 128 only).
const std::pair<tq::Encoder, const char*> kEncoders[] = {{tq::Encoder::lane_groups, "lane groups"},
                                                         {tq::Encoder::rows, "rows"}};

}  // namespace

TEST(GpuTurboQuant, EncodeAndDequantizeMatchTheReferenceExactly) {
  MLXN_REQUIRE_CUDA();
  const test::CpuGpu p;
  const int heads = 3, page = 16;
  const int64_t tokens = 45;
  // Positions scattered over a permuted page table.
  std::vector<int32_t> pos(static_cast<size_t>(tokens));
  for (int64_t i = 0; i < tokens; ++i)
    pos[static_cast<size_t>(i)] = static_cast<int32_t>((i * 37) % 64);
  const std::vector<int32_t> pages = {3, 0, 2, 1};
  for (int dim : kDims) {
    for (int kbits : kBits) {
      const int vbits = kBits[(kbits + 3) % 6];
      for (DType dtype : {DType::f32, DType::bf16, DType::f16}) {
        const auto kvals = adversarial_inputs(tokens, heads, dim, kbits, 100 + dim + kbits);
        const auto vvals = adversarial_inputs(tokens, heads, dim, vbits, 200 + dim + kbits);
        Buffer kf = Buffer::from_host(std::span<const float>(kvals), {tokens, heads, dim},
                                      DType::f32, p.cpu);
        Buffer vf = Buffer::from_host(std::span<const float>(vvals), {tokens, heads, dim},
                                      DType::f32, p.cpu);
        Buffer kh = Buffer::empty({tokens, heads, dim}, dtype, p.cpu);
        Buffer vh = Buffer::empty({tokens, heads, dim}, dtype, p.cpu);
        cast(kf, kh, p.cpu);
        cast(vf, vh, p.cpu);
        Buffer kg = p.to_gpu(kh), vg = p.to_gpu(vh);
        TqCache hk = TqCache::allocate(4, heads, page, dim, kbits, p.cpu);
        TqCache hv = TqCache::allocate(4, heads, page, dim, vbits, p.cpu);
        TqCache gk = TqCache::allocate(4, heads, page, dim, kbits, p.gpu);
        TqCache gv = TqCache::allocate(4, heads, page, dim, vbits, p.gpu);
        // The same poison in both caches: slots no position names must stay untouched.
        for (const TqCache* c : {&hk, &hv}) {
          test::poison(c->payload, p.cpu);
          fill(c->scales, 1.5, p.cpu);
        }
        tq_encode_kv(kh, vh, test::CpuGpu::i32(pos, p.cpu), test::CpuGpu::i32(pages, p.cpu), hk, hv,
                     p.cpu);
        const std::string cpu_error = test::error_of([&] { p.cpu.synchronize(); });
        for (const auto& [encoder, encoder_name] : kEncoders) {
          const tq::ForceEncoder force(encoder);
          for (const TqCache* c : {&gk, &gv}) {
            test::poison(c->payload, p.gpu);
            fill(c->scales, 1.5, p.gpu);  // the same f16 bits on both backends
          }
          tq_encode_kv(kg, vg, test::CpuGpu::i32(pos, p.gpu), test::CpuGpu::i32(pages, p.gpu), gk,
                       gv, p.gpu);
          // f16 turns the huge vectors into Inf: both backends must report it (the first report
          // may name a different vector; the stored zeros are compared below).
          const std::string gpu_error = test::error_of([&] { p.gpu.synchronize(); });
          ASSERT_EQ(cpu_error == "no error", gpu_error == "no error")
              << cpu_error << " | " << gpu_error;
          const std::string what = "D=" + std::to_string(dim) + " K tq" + std::to_string(kbits) +
                                   " V tq" + std::to_string(vbits) + " " +
                                   std::string(dtype_name(dtype)) + ", " + encoder_name;
          ASSERT_TRUE(test::same_bits(gk.payload, hk.payload, p.gpu, p.cpu)) << what;
          ASSERT_TRUE(test::same_bits(gk.scales, hk.scales, p.gpu, p.cpu)) << what;
          ASSERT_TRUE(test::same_bits(gv.payload, hv.payload, p.gpu, p.cpu)) << what;
          ASSERT_TRUE(test::same_bits(gv.scales, hv.scales, p.gpu, p.cpu)) << what;
        }
        const std::string what = "D=" + std::to_string(dim) + " K tq" + std::to_string(kbits) +
                                 " V tq" + std::to_string(vbits) + " " +
                                 std::string(dtype_name(dtype));
        for (TqDomain domain : {TqDomain::rotated, TqDomain::original}) {
          for (DType out : {DType::f32, DType::bf16}) {
            Buffer ho = Buffer::empty({60, heads, dim}, out, p.cpu);
            Buffer go = Buffer::empty({60, heads, dim}, out, p.gpu);
            test::poison(go, p.gpu);
            tq_dequantize(hk, test::CpuGpu::i32(pages, p.cpu), 3, ho, domain, p.cpu);
            tq_dequantize(gk, test::CpuGpu::i32(pages, p.gpu), 3, go, domain, p.gpu);
            ASSERT_TRUE(test::same_bits(go, ho, p.gpu, p.cpu)) << what << " dequantize";
          }
        }
      }
    }
  }
}

TEST(GpuTurboQuant, NonFiniteVectorsAreStoredAsZerosAndReported) {
  MLXN_REQUIRE_CUDA();
  const test::CpuGpu p;
  for (const auto& [encoder, encoder_name] : kEncoders) {
    SCOPED_TRACE(encoder_name);
    const tq::ForceEncoder force(encoder);
    TqCache c = TqCache::allocate(1, 2, 16, 128, 4, p.gpu);
    Buffer x = Buffer::empty({4, 2, 128}, DType::bf16, p.gpu);
    fill_random(x, {Distribution::normal, 3, 0, 1}, p.gpu);
    fill(x.select(0, 2).select(0, 1).slice(0, 77, 78), NAN, p.gpu);
    tq_encode(x, test::CpuGpu::i32({0, 1, 2, 3}, p.gpu), test::CpuGpu::i32({0}, p.gpu), c, p.gpu,
              "layer 4 K");
    try {
      p.gpu.synchronize();
      FAIL() << "the NaN was not reported";
    } catch (const Error& e) {
      EXPECT_STREQ(e.what(), "[tq_encode] non-finite value nan at index 5 of layer 4 K on cuda:0");
    }
    const auto scales = c.scales.to_host<uint16_t>(p.gpu);
    EXPECT_EQ(scales[1 * 16 + 2], 0);  // head 1, position 2: zeros
    EXPECT_NE(scales[0 * 16 + 2], 0);  // head 0 of the same token is fine
    const auto payload = c.payload.to_host<uint8_t>(p.gpu);
    for (int b = 0; b < 64; ++b) EXPECT_EQ(payload[(1 * 16 + 2) * 64 + b], 0);
  }
}

TEST(GpuTurboQuant, OutOfRangePositionsWriteNothing) {
  MLXN_REQUIRE_CUDA();
  const test::CpuGpu p;
  for (const auto& [encoder, encoder_name] : kEncoders) {
    SCOPED_TRACE(encoder_name);
    const tq::ForceEncoder force(encoder);
    TqCache c = TqCache::allocate(2, 1, 16, 64, 4, p.gpu);
    Buffer x = Buffer::empty({3, 1, 64}, DType::f32, p.gpu);
    fill_random(x, {Distribution::normal, 4, 0, 1}, p.gpu);
    tq_encode(x, test::CpuGpu::i32({3, 32, -4}, p.gpu), test::CpuGpu::i32({1, 0}, p.gpu), c, p.gpu,
              "layer 0");
    EXPECT_THROW(p.gpu.synchronize(), Error);
    const auto scales = c.scales.to_host<uint16_t>(p.gpu);
    int written = 0;
    for (uint16_t s : scales) written += s != 0;
    EXPECT_EQ(written, 1);
    EXPECT_NE(scales[16 + 3], 0);
    // A page-table entry outside the cache is refused the same way.
    tq_encode(x.slice(0, 0, 1), test::CpuGpu::i32({3}, p.gpu), test::CpuGpu::i32({9}, p.gpu), c,
              p.gpu, "layer 0");
    EXPECT_THROW(p.gpu.synchronize(), Error);
    Buffer out = Buffer::empty({16, 1, 64}, DType::f32, p.gpu);
    tq_dequantize(c, test::CpuGpu::i32({9}, p.gpu), 0, out, TqDomain::rotated, p.gpu);
    EXPECT_THROW(p.gpu.synchronize(), Error);
  }
}

TEST(GpuTurboQuant, RotateMatchesTheReference) {
  MLXN_REQUIRE_CUDA();
  const test::CpuGpu p;
  for (int dim : kDims) {
    for (DType in : {DType::f32, DType::bf16, DType::f16}) {
      for (DType out : {DType::f32, DType::bf16}) {
        Buffer hx = test::random_buffer({7, 5, dim}, in, 9, p.cpu);
        Buffer gx = p.to_gpu(hx);
        for (bool inverse : {false, true}) {
          Buffer ho = Buffer::empty({7, 5, dim}, out, p.cpu),
                 go = Buffer::empty({7, 5, dim}, out, p.gpu);
          tq_rotate(hx, ho, inverse, p.cpu);
          tq_rotate(gx, go, inverse, p.gpu);
          ASSERT_TRUE(test::same_bits(go, ho, p.gpu, p.cpu)) << dim << " " << inverse;
        }
      }
    }
  }
}

TEST(GpuTurboQuant, PrefillSizedBatchMatchesTheReference) {
  MLXN_REQUIRE_CUDA();
  const test::CpuGpu p;
  const int64_t tokens = 4096;
  const int heads = 8, dim = 128, page = 64;
  std::vector<int32_t> pos(static_cast<size_t>(tokens)), pages(static_cast<size_t>(tokens / page));
  std::iota(pos.begin(), pos.end(), 0);
  for (size_t i = 0; i < pages.size(); ++i) pages[i] = static_cast<int32_t>(pages.size() - 1 - i);
  Buffer hx = test::random_buffer({tokens, heads, dim}, DType::bf16, 12, p.cpu);
  Buffer gx = p.to_gpu(hx);
  TqCache hc = TqCache::allocate(tokens / page, heads, page, dim, 3, p.cpu);
  TqCache gc = TqCache::allocate(tokens / page, heads, page, dim, 3, p.gpu);
  tq_encode(hx, test::CpuGpu::i32(pos, p.cpu), test::CpuGpu::i32(pages, p.cpu), hc, p.cpu);
  for (const auto& [encoder, encoder_name] : kEncoders) {
    const tq::ForceEncoder force(encoder);
    test::poison(gc.payload, p.gpu);
    tq_encode(gx, test::CpuGpu::i32(pos, p.gpu), test::CpuGpu::i32(pages, p.gpu), gc, p.gpu);
    EXPECT_TRUE(test::same_bits(gc.payload, hc.payload, p.gpu, p.cpu)) << encoder_name;
    EXPECT_TRUE(test::same_bits(gc.scales, hc.scales, p.gpu, p.cpu)) << encoder_name;
  }
  // With no encoder forced, a batch this size (32K vectors, K and V) takes the bulk one on an
  // H200-sized machine; the result is the same either way.
  Buffer gy = Buffer::empty({tokens, heads, dim}, DType::bf16, p.gpu);
  copy(gx, gy, p.gpu);
  TqCache gk = TqCache::allocate(tokens / page, heads, page, dim, 3, p.gpu);
  TqCache gv = TqCache::allocate(tokens / page, heads, page, dim, 3, p.gpu);
  tq_encode_kv(gx, gy, test::CpuGpu::i32(pos, p.gpu), test::CpuGpu::i32(pages, p.gpu), gk, gv,
               p.gpu);
  EXPECT_TRUE(test::same_bits(gk.payload, hc.payload, p.gpu, p.cpu));
  EXPECT_TRUE(test::same_bits(gv.payload, hc.payload, p.gpu, p.cpu));
  EXPECT_TRUE(test::same_bits(gv.scales, hc.scales, p.gpu, p.cpu));
}

// K and V as views of a fused QKV projection output: a token stride larger than heads * dim.
TEST(GpuTurboQuant, StridedInputsMatchTheReference) {
  MLXN_REQUIRE_CUDA();
  const test::CpuGpu p;
  const int64_t tokens = 100;
  const int heads = 4, dim = 128, page = 16;
  Buffer hqkv = test::random_buffer({tokens, 3 * heads, dim}, DType::f16, 31, p.cpu);
  Buffer gqkv = p.to_gpu(hqkv);
  std::vector<int32_t> pos(static_cast<size_t>(tokens)), pages(7);
  for (int64_t i = 0; i < tokens; ++i) pos[static_cast<size_t>(i)] = static_cast<int32_t>(i + 5);
  for (size_t i = 0; i < pages.size(); ++i) pages[i] = static_cast<int32_t>((i * 3) % 7);
  TqCache hc = TqCache::allocate(7, heads, page, dim, 5, p.cpu);
  tq_encode(hqkv.slice(1, heads, 2 * heads), test::CpuGpu::i32(pos, p.cpu),
            test::CpuGpu::i32(pages, p.cpu), hc, p.cpu);
  for (const auto& [encoder, encoder_name] : kEncoders) {
    const tq::ForceEncoder force(encoder);
    TqCache gc = TqCache::allocate(7, heads, page, dim, 5, p.gpu);
    tq_encode(gqkv.slice(1, heads, 2 * heads), test::CpuGpu::i32(pos, p.gpu),
              test::CpuGpu::i32(pages, p.gpu), gc, p.gpu);
    EXPECT_TRUE(test::same_bits(gc.payload, hc.payload, p.gpu, p.cpu)) << encoder_name;
    EXPECT_TRUE(test::same_bits(gc.scales, hc.scales, p.gpu, p.cpu)) << encoder_name;
  }
}
