// TurboQuant on the CPU: the reference codec against independent math, the cache ops' addressing
// and bad input, and the quality targets of the design contract.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "support/support.h"
#include "turboquant/codebook.h"
#include "turboquant/quality.h"
#include "turboquant/reference.h"

using namespace mlxn;
using mlxn::test::cpu_stream;
using mlxn::test::error_of;
using mlxn::test::throws_error;

namespace {

const int kDims[] = {64, 128, 256, 512};
const int kBits[] = {2, 3, 4, 5, 6, 8};

std::vector<float> gaussian(int64_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> d;
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = d(rng);
  return v;
}

// Sylvester Hadamard entry H[i][j] = (-1)^popcount(i & j).
double hadamard(int i, int j) {
  return __builtin_popcount(static_cast<unsigned>(i & j)) % 2 ? -1.0 : 1.0;
}

}  // namespace

TEST(TqReference, RotationIsTheDocumentedOrthogonalMatrix) {
  for (int dim : kDims) {
    const std::vector<float> x = gaussian(dim, 3);
    std::vector<float> y(static_cast<size_t>(dim)), back(static_cast<size_t>(dim));
    tq::reference::rotate(x.data(), y.data(), dim);
    for (int i = 0; i < dim; ++i) {
      double expect = 0;  // (1/sqrt D) H S x in double
      for (int j = 0; j < dim; ++j)
        expect += hadamard(i, j) * (tq::sign_is_negative(j) ? -1.0 : 1.0) * x[j];
      expect /= std::sqrt(static_cast<double>(dim));
      ASSERT_NEAR(y[i], expect, 1e-5) << "dim " << dim << " row " << i;
    }
    tq::reference::inverse_rotate(y.data(), back.data(), dim);
    for (int j = 0; j < dim; ++j) ASSERT_NEAR(back[j], x[j], 1e-5);
  }
}

TEST(TqReference, SignStreamIsBalancedAndFixed) {
  int negative = 0;
  for (int j = 0; j < 512; ++j) negative += tq::sign_is_negative(j);
  EXPECT_NEAR(negative, 256, 40);
  // splitmix64's first output for the documented seed, computed independently (Python:
  // z = seed + 0x9E3779B97F4A7C15, then the two xor-shift-multiply rounds and z ^ z >> 31).
  EXPECT_EQ(tq::sign_word(0), 0x42DDF98DC2647FD4ull);
  EXPECT_EQ(tq::sign_is_negative(2), ((0x42DDF98DC2647FD4ull >> 2) & 1) == 1);
}

TEST(TqReference, QuantizeTiesGoToTheLowerCode) {
  for (int bits : kBits) {
    const tq::Codebook& book = tq::codebook(bits);
    for (size_t k = 0; k < book.boundaries.size(); ++k) {
      const float b = book.boundaries[k];
      ASSERT_EQ(tq::reference::quantize(b, bits), static_cast<int>(k)) << bits;
      ASSERT_EQ(tq::reference::quantize(std::nextafter(b, INFINITY), bits),
                static_cast<int>(k) + 1);
      // The boundary is the midpoint: both neighbours are equally near it.
      ASSERT_NEAR(b - book.centroids[k], book.centroids[k + 1] - b, 1e-6f);
    }
    EXPECT_EQ(tq::reference::quantize(-INFINITY, bits), 0);
    EXPECT_EQ(tq::reference::quantize(INFINITY, bits), (1 << bits) - 1);
  }
}

TEST(TqReference, CodesAreTheNearestCentroidsOfTheNormalisedRotation) {
  for (int dim : kDims) {
    for (int bits : kBits) {
      const std::vector<float> x = gaussian(dim, 10 + bits);
      std::vector<uint8_t> payload(static_cast<size_t>(tq::payload_bytes(dim, bits)));
      uint16_t scale = 0;
      ASSERT_TRUE(tq::reference::encode(x.data(), dim, bits, payload.data(), &scale));
      // Independent double-precision path: y = R x, u = y sqrt(D)/|y|, nearest centroid.
      std::vector<double> y(static_cast<size_t>(dim), 0.0);
      double norm2 = 0;
      for (int i = 0; i < dim; ++i) {
        for (int j = 0; j < dim; ++j)
          y[i] += hadamard(i, j) * (tq::sign_is_negative(j) ? -1.0 : 1.0) * x[j];
        y[i] /= std::sqrt(static_cast<double>(dim));
        norm2 += y[i] * y[i];
      }
      const tq::Codebook& book = tq::codebook(bits);
      double num = 0, den = 0;
      for (int j = 0; j < dim; ++j) {
        const double u = y[j] * std::sqrt(static_cast<double>(dim) / norm2);
        const int c = tq::reference::code_at(payload.data(), bits, j);
        const double chosen = std::fabs(u - book.centroids[c]);
        for (float other : book.centroids)
          ASSERT_LE(chosen, std::fabs(u - other) + 1e-5) << dim << " " << bits << " j=" << j;
        num += y[j] * book.centroids[c];
        den += static_cast<double>(book.centroids[c]) * book.centroids[c];
      }
      // The scale is the least-squares fit, stored as fp16.
      EXPECT_NEAR(float_bits::f16_to_f32(scale), num / den, std::fabs(num / den) * 1e-3)
          << dim << " " << bits;
    }
  }
}

TEST(TqReference, AdversarialInputs) {
  const int dim = 128, bits = 4;
  std::vector<uint8_t> payload(64);
  uint16_t scale = 123;
  std::vector<float> x(dim, 0.0f), out(dim);
  // Zero vector: zero codes, zero scale, decodes to zeros.
  ASSERT_TRUE(tq::reference::encode(x.data(), dim, bits, payload.data(), &scale));
  EXPECT_EQ(scale, 0);
  for (uint8_t b : payload) EXPECT_EQ(b, 0);
  // NaN: refused, stored as zeros.
  x[5] = NAN;
  payload.assign(64, 0xff);
  EXPECT_FALSE(tq::reference::encode(x.data(), dim, bits, payload.data(), &scale));
  EXPECT_EQ(scale, 0);
  for (uint8_t b : payload) EXPECT_EQ(b, 0);
  // Huge, tiny and one-hot inputs keep the relative error of ordinary ones.
  const std::vector<float> g = gaussian(dim, 99);
  for (float magnitude : {1e-40f, 1e-20f, 1.0f, 1e20f, 3e36f}) {
    for (int j = 0; j < dim; ++j) x[j] = g[j] * magnitude;
    ASSERT_TRUE(tq::reference::encode(x.data(), dim, bits, payload.data(), &scale));
    tq::reference::decode_original(payload.data(), scale, dim, bits, out.data());
    if (magnitude * 10 > 65504.0f || magnitude < 1e-9f)
      continue;  // the fp16 scale saturates or underflows
    double err = 0, norm = 0;
    for (int j = 0; j < dim; ++j) {
      err += (static_cast<double>(out[j]) - x[j]) * (static_cast<double>(out[j]) - x[j]);
      norm += static_cast<double>(x[j]) * x[j];
    }
    EXPECT_LT(err / norm, 0.02) << magnitude;
  }
  // The fp16 scale saturates at 65504 instead of becoming inf.
  for (int j = 0; j < dim; ++j) x[j] = g[j] * 1e8f;
  ASSERT_TRUE(tq::reference::encode(x.data(), dim, bits, payload.data(), &scale));
  EXPECT_EQ(scale, 0x7bff);
  std::fill(x.begin(), x.end(), 0.0f);
  x[17] = -3.0f;
  ASSERT_TRUE(tq::reference::encode(x.data(), dim, bits, payload.data(), &scale));
  tq::reference::decode_original(payload.data(), scale, dim, bits, out.data());
  EXPECT_NEAR(out[17], -3.0f, 0.3f);
}

TEST(TqReference, UnsupportedDimOrBitsIsAnError) {
  std::vector<float> x(96, 1.0f);
  std::vector<uint8_t> payload(96);
  uint16_t scale;
  EXPECT_EQ(error_of([&] { tq::reference::encode(x.data(), 96, 4, payload.data(), &scale); }),
            "[turboquant] TurboQuant head_dim 96 unsupported (supported: 64, 128, 256, 512)");
  EXPECT_EQ(error_of([&] { tq::reference::encode(x.data(), 64, 7, payload.data(), &scale); }),
            "[turboquant] TurboQuant bits 7 unsupported (supported: 2, 3, 4, 5, 6, 8)");
}

// The design contract's "v1 must reach" column, every b and D, Gaussian and heavy-tailed sets;
// biased <= 3x. One test per bit width so ctest can run them in parallel.
class TqQualityTargets : public ::testing::TestWithParam<int> {};

TEST_P(TqQualityTargets, MeetTheContract) {
  const int bits = GetParam();
  const double target = bits == 2   ? 0.1187
                        : bits == 3 ? 0.0349
                        : bits == 4 ? 0.00960
                        : bits == 5 ? 0.00253
                        : bits == 6 ? 0.00065
                                    : 0.000063;
  for (int dim : kDims) {
    for (tq::VectorSet set : {tq::VectorSet::gaussian, tq::VectorSet::heavy_tailed}) {
      const tq::Quality q = tq::measure_quality({bits, dim, set, 10000, 5, true});
      EXPECT_LE(q.relative_mse, target) << "D=" << dim << " " << tq::vector_set_name(set);
    }
    const tq::Quality biased =
        tq::measure_quality({bits, dim, tq::VectorSet::biased, 10000, 5, true});
    EXPECT_LE(biased.relative_mse, 3 * target) << "biased D=" << dim;
  }
}

INSTANTIATE_TEST_SUITE_P(EveryBitWidth, TqQualityTargets, ::testing::ValuesIn(kBits));

TEST(TqQuality, WithoutSignsTheBiasedSetFails) {
  for (int bits : kBits) {
    for (int dim : kDims) {
      const tq::Quality signed_q =
          tq::measure_quality({bits, dim, tq::VectorSet::biased, 2000, 5, true});
      const tq::Quality plain =
          tq::measure_quality({bits, dim, tq::VectorSet::biased, 2000, 5, false});
      EXPECT_GT(plain.relative_mse, 3 * tq::lloyd_max_mse(bits)) << "b=" << bits << " D=" << dim;
      EXPECT_GT(plain.relative_mse, 2 * signed_q.relative_mse) << "b=" << bits << " D=" << dim;
    }
  }
}

TEST(TqQuality, AttentionOutputErrorTracksTheValueError) {
  // With a few dominant keys the output is close to an average of their values, so its relative
  // error is near the per-vector reconstruction error sqrt(MSE) and shrinks with the bits.
  double previous = 1.0;
  for (int bits : kBits) {
    const double err = tq::attention_output_error(bits, 128, 4096);
    EXPECT_LT(err, previous) << bits;
    EXPECT_LT(err, 1.5 * std::sqrt(tq::lloyd_max_mse(bits))) << bits;
    previous = err;
  }
}

// --- the cache ops on the CPU backend ------------------------------------------------------

TEST(TqOps, EncodeWritesTheReferenceIntoPageSlots) {
  const int heads = 2, dim = 64, page = 16;
  TqCache k = TqCache::allocate(4, heads, page, dim, 4, cpu_stream());
  TqCache v = TqCache::allocate(4, heads, page, dim, 3, cpu_stream());
  Buffer kx = test::random_buffer({3, heads, dim}, DType::bf16, 1, cpu_stream());
  Buffer vx = test::random_buffer({3, heads, dim}, DType::bf16, 2, cpu_stream());
  const std::vector<int32_t> pos = {0, 17, 40}, pages = {2, 0, 3};
  Buffer positions =
      Buffer::from_host(std::span<const int32_t>(pos), {3}, DType::i32, cpu_stream());
  Buffer table = Buffer::from_host(std::span<const int32_t>(pages), {3}, DType::i32, cpu_stream());
  tq_encode_kv(kx, vx, positions, table, k, v, cpu_stream(), "layer 0");
  cpu_stream().synchronize();
  const auto kv = test::to_f64(kx, cpu_stream());
  const auto payload = k.payload.to_host<uint8_t>(cpu_stream());
  const auto scales = k.scales.to_host<uint16_t>(cpu_stream());
  for (int t = 0; t < 3; ++t) {
    const int64_t p = pos[t], pg = pages[p / page];
    for (int h = 0; h < heads; ++h) {
      std::vector<float> x(dim);
      for (int j = 0; j < dim; ++j) x[j] = static_cast<float>(kv[(t * heads + h) * dim + j]);
      std::vector<uint8_t> expect(32);
      uint16_t scale;
      tq::reference::encode(x.data(), dim, 4, expect.data(), &scale);
      const int64_t slot = (pg * heads + h) * page + p % page;
      EXPECT_EQ(scales[slot], scale);
      for (int b = 0; b < 32; ++b) ASSERT_EQ(payload[slot * 32 + b], expect[b]) << t << " " << h;
    }
  }
  // Untouched slots stay zero.
  EXPECT_EQ(scales[(1 * heads + 0) * page + 0], 0);
  // Dequantize the sequence's first 41 positions and compare with the reference decode.
  Buffer out = Buffer::empty({41, heads, dim}, DType::f32, cpu_stream());
  test::poison(out, cpu_stream());
  tq_dequantize(k, table, 0, out, TqDomain::original, cpu_stream());
  const auto o = test::to_f64(out, cpu_stream());
  for (int t = 0; t < 3; ++t) {
    for (int h = 0; h < heads; ++h) {
      const int64_t p = pos[t], slot = (pages[p / page] * heads + h) * page + p % page;
      std::vector<float> x(dim);
      tq::reference::decode_original(payload.data() + slot * 32, scales[slot], dim, 4, x.data());
      for (int j = 0; j < dim; ++j) ASSERT_EQ(o[(p * heads + h) * dim + j], x[j]);
    }
  }
  EXPECT_EQ(o[(1 * heads) * dim], 0.0);  // position 1 was never written: zeros
}

TEST(TqOps, BadPositionsAndNonFiniteInputAreReportedNotWritten) {
  const int heads = 1, dim = 64, page = 16;
  TqCache c = TqCache::allocate(2, heads, page, dim, 4, cpu_stream());
  Buffer x = test::random_buffer({3, heads, dim}, DType::f32, 3, cpu_stream());
  const std::vector<int32_t> pos = {5, 40, -1}, pages = {1, 0};
  Buffer positions =
      Buffer::from_host(std::span<const int32_t>(pos), {3}, DType::i32, cpu_stream());
  Buffer table = Buffer::from_host(std::span<const int32_t>(pages), {2}, DType::i32, cpu_stream());
  tq_encode(x, positions, table, c, cpu_stream(), "layer 9 K");
  const std::string m = error_of([&] { cpu_stream().synchronize(); });
  EXPECT_EQ(m,
            "[tq_encode] index 40 out of range at position 1 of positions/page_table of layer 9 K "
            "on cpu (2 reports, first shown)");
  EXPECT_NE(c.scales.to_host<uint16_t>(cpu_stream())[(1 * heads) * page + 5],
            0);  // the good token landed
  fill(x.slice(0, 0, 1).slice(2, 7, 8), NAN, cpu_stream());
  const std::vector<int32_t> good = {5, 6, 7};
  Buffer good_positions =
      Buffer::from_host(std::span<const int32_t>(good), {3}, DType::i32, cpu_stream());
  tq_encode(x, good_positions, table, c, cpu_stream(), "layer 9 K");
  EXPECT_EQ(error_of([&] { cpu_stream().synchronize(); }),
            "[tq_encode] non-finite value nan at index 0 of layer 9 K on cpu");
  EXPECT_EQ(c.scales.to_host<uint16_t>(cpu_stream())[page + 5], 0);  // stored as zeros
}

TEST(TqOps, ShapeDtypeAndRangeErrors) {
  TqCache c = TqCache::allocate(2, 2, 16, 128, 4, cpu_stream());
  Buffer x = Buffer::empty({3, 2, 128}, DType::bf16, cpu_stream());
  Buffer pos = Buffer::empty({3}, DType::i32, cpu_stream());
  Buffer table = Buffer::empty({2}, DType::i32, cpu_stream());
  EXPECT_EQ(error_of([&] { TqCache::allocate(2, 2, 24, 128, 4, cpu_stream()); }),
            "[tq_cache] page_size 24 must be a power of two >= 16");
  EXPECT_EQ(error_of([&] { TqCache::allocate(2, 2, 16, 96, 4, cpu_stream()); }),
            "[tq_cache] TurboQuant head_dim 96 unsupported (supported: 64, 128, 256, 512)");
  EXPECT_EQ(error_of([&] {
              tq_encode(Buffer::empty({3, 2, 64}, DType::bf16, cpu_stream()), pos, table, c,
                        cpu_stream());
            }),
            "[tq_encode] input must be [tokens, 2, 128] for this cache, got bf16[3,2,64] on cpu");
  EXPECT_EQ(error_of([&] {
              tq_encode(x, Buffer::empty({2}, DType::i32, cpu_stream()), table, c, cpu_stream());
            }),
            "[tq_encode] 3 tokens but 2 positions");
  EXPECT_THROW(
      tq_encode(Buffer::empty({3, 2, 128}, DType::i32, cpu_stream()), pos, table, c, cpu_stream()),
      Error);
  EXPECT_THROW(tq_encode(x, Buffer::empty({3}, DType::i64, cpu_stream()), table, c, cpu_stream()),
               Error);
  Buffer wide = Buffer::empty({3, 2, 256}, DType::bf16, cpu_stream());
  EXPECT_THROW(tq_encode(wide.slice(2, 0, 128), pos, table, c, cpu_stream()),
               Error);  // rows not contiguous
  Buffer out = Buffer::empty({33, 2, 128}, DType::f32, cpu_stream());
  EXPECT_EQ(error_of([&] { tq_dequantize(c, table, 0, out, TqDomain::rotated, cpu_stream()); }),
            "[tq_dequantize] positions [0, 33) outside the sequence's 32 slots (2 pages of 16)");
  EXPECT_THROW(tq_dequantize(c, table, -1, out.slice(0, 0, 2), TqDomain::rotated, cpu_stream()),
               Error);
  EXPECT_THROW(tq_rotate(Buffer::empty({4, 96}, DType::f32, cpu_stream()),
                         Buffer::empty({4, 96}, DType::f32, cpu_stream()), false, cpu_stream()),
               Error);
}

TEST(TqOps, RotateOpMatchesTheReferenceAndInverts) {
  Buffer q = test::random_buffer({5, 3, 256}, DType::bf16, 4, cpu_stream());
  Buffer r = Buffer::empty({5, 3, 256}, DType::f32, cpu_stream());
  Buffer back = Buffer::empty({5, 3, 256}, DType::f32, cpu_stream());
  tq_rotate(q, r, false, cpu_stream());
  tq_rotate(r, back, true, cpu_stream());
  const auto qv = test::to_f64(q, cpu_stream()), rv = test::to_f64(r, cpu_stream()),
             bv = test::to_f64(back, cpu_stream());
  std::vector<float> x(256), y(256);
  for (int j = 0; j < 256; ++j) x[j] = static_cast<float>(qv[256 + j]);  // vector 1
  tq::reference::rotate(x.data(), y.data(), 256);
  for (int j = 0; j < 256; ++j) ASSERT_EQ(rv[256 + j], y[j]);
  for (size_t i = 0; i < qv.size(); ++i) ASSERT_NEAR(bv[i], qv[i], 1e-5);
}
