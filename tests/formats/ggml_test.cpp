// GGML blocks: layouts, decoding of hand-built blocks against values worked out from the format
// description, the reference quantizers' codes on hand rows, and quantization error bounds.
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstddef>
#include <cstring>
#include <random>
#include <vector>

#include "formats/ggml.h"
#include "mlxn/core/float_types.h"
#include "mlxn/io/ggml_type.h"
#include "support/support.h"

using namespace mlxn;
using namespace mlxn::formats;
using mlxn::test::throws_error;

namespace {

template <class Block>
std::vector<float> decode(const Block& b) {
  std::vector<float> out(
      sizeof(Block) == sizeof(BlockQ4_0) || sizeof(Block) == sizeof(BlockQ8_0) ? kQK : kQKK,
      std::nanf(""));
  dequantize_block(b, out.data());
  return out;
}

uint32_t bits_of(float f) { return std::bit_cast<uint32_t>(f); }

std::vector<float> gaussian(int64_t n, uint64_t seed, float sigma = 1.0f) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> d(0.0f, sigma);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = d(rng);
  return v;
}

// The six-bit scales and mins used by the K-quant blocks below, with their packing worked out
// by hand: bytes 0-3 = sc[0..3] | (sc[4..7] >> 4) << 6, bytes 4-7 = m[0..3] | (m[4..7] >> 4) << 6,
// bytes 8-11 = (sc[4..7] & 15) | (m[4..7] & 15) << 4.
const uint8_t kSc[8] = {1, 2, 3, 4, 33, 45, 62, 63};
const uint8_t kMin[8] = {5, 6, 7, 8, 17, 34, 51, 60};
const uint8_t kPackedScales[12] = {0x81, 0x82, 0xC3, 0xC4, 0x45, 0x86,
                                   0xC7, 0xC8, 0x11, 0x2D, 0x3E, 0xCF};

template <class Block>
void fill_k_header(Block& b, uint16_t d, uint16_t dmin) {
  b.d = d;
  b.dmin = dmin;
  std::memcpy(b.scales, kPackedScales, sizeof kPackedScales);
  // Byte i of qs: low nibble i % 16, high nibble 15 - i % 16.
  for (int i = 0; i < kQKK / 2; ++i) {
    b.qs[i] = static_cast<uint8_t>((i % 16) | ((15 - i % 16) << 4));
  }
}

}  // namespace

TEST(GgmlBlocks, LayoutsMatchGgml) {
  EXPECT_EQ(sizeof(BlockQ4_0), 18u);
  EXPECT_EQ(sizeof(BlockQ8_0), 34u);
  EXPECT_EQ(sizeof(BlockQ4_K), 144u);
  EXPECT_EQ(sizeof(BlockQ5_K), 176u);
  EXPECT_EQ(sizeof(BlockQ6_K), 210u);
  EXPECT_EQ(alignof(BlockQ4_0), 2u);
  EXPECT_EQ(alignof(BlockQ6_K), 2u);
  EXPECT_EQ(offsetof(BlockQ4_0, qs), 2u);
  EXPECT_EQ(offsetof(BlockQ8_0, qs), 2u);
  EXPECT_EQ(offsetof(BlockQ4_K, dmin), 2u);
  EXPECT_EQ(offsetof(BlockQ4_K, scales), 4u);
  EXPECT_EQ(offsetof(BlockQ4_K, qs), 16u);
  EXPECT_EQ(offsetof(BlockQ5_K, scales), 4u);
  EXPECT_EQ(offsetof(BlockQ5_K, qh), 16u);
  EXPECT_EQ(offsetof(BlockQ5_K, qs), 48u);
  EXPECT_EQ(offsetof(BlockQ6_K, qh), 128u);
  EXPECT_EQ(offsetof(BlockQ6_K, scales), 192u);
  EXPECT_EQ(offsetof(BlockQ6_K, d), 208u);
}

TEST(GgmlBlocks, TypeTable) {
  const struct {
    uint32_t id;
    const char* name;
    int elements, bytes;
  } expected[] = {{0, "F32", 1, 4},       {1, "F16", 1, 2},       {2, "Q4_0", 32, 18},
                  {8, "Q8_0", 32, 34},    {12, "Q4_K", 256, 144}, {13, "Q5_K", 256, 176},
                  {14, "Q6_K", 256, 210}, {24, "I8", 1, 1},       {28, "F64", 1, 8},
                  {30, "BF16", 1, 2},     {39, "MXFP4", 32, 17}};
  for (const auto& e : expected) {
    const GgmlTypeInfo* info = ggml_type_info(e.id);
    ASSERT_NE(info, nullptr) << e.id;
    EXPECT_STREQ(info->name, e.name);
    EXPECT_EQ(info->block_elements, e.elements) << e.name;
    EXPECT_EQ(info->block_bytes, e.bytes) << e.name;
  }
  for (uint32_t removed : {4u, 5u, 31u, 32u, 33u, 36u, 37u, 38u, 1000u}) {
    EXPECT_EQ(ggml_type_info(removed), nullptr) << removed;
  }
  EXPECT_TRUE(ggml_type_is_blocked(GgmlType::q6_k));
  EXPECT_FALSE(ggml_type_is_blocked(GgmlType::bf16));

  WeightFormat format{};
  for (GgmlType t :
       {GgmlType::q4_0, GgmlType::q8_0, GgmlType::q4_k, GgmlType::q5_k, GgmlType::q6_k}) {
    ASSERT_TRUE(block_weight_format(t, &format)) << ggml_type_name(t);
    EXPECT_EQ(ggml_type_of(format), t);
  }
  EXPECT_FALSE(block_weight_format(GgmlType::q5_0, &format));
  EXPECT_FALSE(block_weight_format(GgmlType::f16, &format));
  EXPECT_TRUE(throws_error([] { ggml_type_of(WeightFormat::dense); }, "[ggml]"));
}

TEST(GgmlBlocks, F16DecodeIsExactForEveryPattern) {
  EXPECT_EQ(bits_of(f16_bits_to_float(0x0000)), 0x00000000u);
  EXPECT_EQ(bits_of(f16_bits_to_float(0x8000)), 0x80000000u);  // -0 keeps its sign
  EXPECT_EQ(f16_bits_to_float(0x3c00), 1.0f);
  EXPECT_EQ(f16_bits_to_float(0xc000), -2.0f);
  EXPECT_EQ(f16_bits_to_float(0x7bff), 65504.0f);
  EXPECT_EQ(f16_bits_to_float(0x0400), 0x1p-14f);  // smallest normal
  EXPECT_EQ(f16_bits_to_float(0x0001), 0x1p-24f);  // smallest subnormal
  EXPECT_EQ(f16_bits_to_float(0x8001), -0x1p-24f);
  EXPECT_EQ(f16_bits_to_float(0x03ff), 1023.0f * 0x1p-24f);  // largest subnormal
  EXPECT_EQ(f16_bits_to_float(0x7c00), INFINITY);
  EXPECT_EQ(f16_bits_to_float(0xfc00), -INFINITY);
  EXPECT_TRUE(std::isnan(f16_bits_to_float(0x7e00)));
  EXPECT_TRUE(std::isnan(f16_bits_to_float(0xfd01)));
  for (uint32_t h = 0; h < 0x10000u; ++h) {
    const float got = f16_bits_to_float(static_cast<uint16_t>(h));
    const float want = float_bits::f16_to_f32(static_cast<uint16_t>(h));
    if (std::isnan(want)) {
      ASSERT_TRUE(std::isnan(got)) << h;
    } else {
      ASSERT_EQ(bits_of(got), bits_of(want)) << h;
    }
  }
}

TEST(GgmlBlocks, ScaleMinUnpackAllEightPositions) {
  for (int j = 0; j < 8; ++j) {
    const ScaleMin sm = get_scale_min_k4(j, kPackedScales);
    EXPECT_EQ(sm.scale, kSc[j]) << "sub-block " << j;
    EXPECT_EQ(sm.min, kMin[j]) << "sub-block " << j;
  }
  uint8_t packed[12] = {};
  for (int j = 0; j < 8; ++j) set_scale_min_k4(j, kSc[j], kMin[j], packed);
  for (int i = 0; i < 12; ++i) EXPECT_EQ(packed[i], kPackedScales[i]) << "byte " << i;
  // Each position holds all of 0..63 independently of its neighbours.
  for (int j = 0; j < 8; ++j) {
    for (int v = 0; v < 64; ++v) {
      uint8_t bytes[12];
      std::memcpy(bytes, kPackedScales, 12);
      set_scale_min_k4(j, static_cast<uint8_t>(v), static_cast<uint8_t>(63 - v), bytes);
      for (int i = 0; i < 8; ++i) {
        const ScaleMin sm = get_scale_min_k4(i, bytes);
        EXPECT_EQ(sm.scale, i == j ? v : kSc[i]);
        EXPECT_EQ(sm.min, i == j ? 63 - v : kMin[i]);
      }
    }
  }
}

TEST(GgmlBlocks, Q4_0HandBlock) {
  BlockQ4_0 b{};
  b.d = 0x3800;  // 0.5
  for (int j = 0; j < 16; ++j) b.qs[j] = static_cast<uint8_t>(j | ((15 - j) << 4));
  const std::vector<float> y = decode(b);
  // Element j < 16: low nibble j -> (j - 8) / 2; element 16 + j: high nibble 15 - j.
  EXPECT_EQ(y[0], -4.0f);
  EXPECT_EQ(y[1], -3.5f);
  EXPECT_EQ(y[8], 0.0f);
  EXPECT_EQ(y[15], 3.5f);
  EXPECT_EQ(y[16], 3.5f);
  EXPECT_EQ(y[17], 3.0f);
  EXPECT_EQ(y[31], -4.0f);
  for (int j = 0; j < 16; ++j) {
    EXPECT_EQ(y[j], 0.5f * static_cast<float>(j - 8));
    EXPECT_EQ(y[16 + j], 0.5f * static_cast<float>(7 - j));
  }
  // A negative scale flips every value.
  b.d = 0xc000;  // -2
  b.qs[0] = 0x1f;
  const std::vector<float> z = decode(b);
  EXPECT_EQ(z[0], -14.0f);  // (15 - 8) * -2
  EXPECT_EQ(z[16], 14.0f);  // (1 - 8) * -2
}

TEST(GgmlBlocks, Q8_0HandBlockWithSubnormalScale) {
  BlockQ8_0 b{};
  b.d = 0x3400;  // 0.25
  const int8_t q[5] = {-128, -1, 0, 1, 127};
  std::memcpy(b.qs, q, 5);
  std::vector<float> y = decode(b);
  EXPECT_EQ(y[0], -32.0f);
  EXPECT_EQ(y[1], -0.25f);
  EXPECT_EQ(y[2], 0.0f);
  EXPECT_EQ(y[3], 0.25f);
  EXPECT_EQ(y[4], 31.75f);
  b.d = 0x0001;  // 2^-24, the smallest f16 subnormal
  b.qs[0] = 3;
  y = decode(b);
  EXPECT_EQ(y[0], 1.788139343261719e-07f);  // 3 * 2^-24
  b.d = 0x8200;                             // -(512 * 2^-24) = -2^-15
  b.qs[0] = -7;
  y = decode(b);
  EXPECT_EQ(y[0], 0.000213623046875f);  // -7 * -2^-15
}

TEST(GgmlBlocks, Q4_KHandBlock) {
  BlockQ4_K b{};
  fill_k_header(b, 0x3c00, 0x3800);  // d = 1, dmin = 0.5
  const std::vector<float> y = decode(b);
  // y = sc[s] * q - 0.5 * m[s], s = e / 32; element 64c + l (l < 32) takes the low nibble of
  // qs[32c + l] (= l % 16), element 64c + 32 + l the high nibble (= 15 - l % 16).
  EXPECT_EQ(y[0], -2.5f);     // s0: 1*0 - 2.5
  EXPECT_EQ(y[1], -1.5f);     // s0: 1*1 - 2.5
  EXPECT_EQ(y[32], 27.0f);    // s1: 2*15 - 3
  EXPECT_EQ(y[63], -3.0f);    // s1: 2*0 - 3
  EXPECT_EQ(y[64], -3.5f);    // s2: 3*0 - 3.5
  EXPECT_EQ(y[79], 41.5f);    // s2: 3*15 - 3.5
  EXPECT_EQ(y[96], 56.0f);    // s3: 4*15 - 4
  EXPECT_EQ(y[128], -8.5f);   // s4: 33*0 - 8.5
  EXPECT_EQ(y[143], 486.5f);  // s4: 33*15 - 8.5
  EXPECT_EQ(y[165], 433.0f);  // s5: 45*10 - 17
  EXPECT_EQ(y[199], 408.5f);  // s6: 62*7 - 25.5
  EXPECT_EQ(y[240], 915.0f);  // s7: 63*15 - 30
  EXPECT_EQ(y[255], -30.0f);  // s7: 63*0 - 30
  for (int e = 0; e < kQKK; ++e) {
    const int s = e / 32, l = e % 32;
    const int q = (e % 64) < 32 ? l % 16 : 15 - l % 16;
    EXPECT_EQ(y[e], static_cast<float>(kSc[s] * q - 0.5 * kMin[s])) << e;
  }

  // Negative d and a subnormal dmin: the one rounding is that of the final subtraction.
  fill_k_header(b, 0xb800, 0x0001);  // d = -0.5, dmin = 2^-24
  const std::vector<float> z = decode(b);
  EXPECT_EQ(z[240], -472.5f);                  // -0.5*63*15 - 60*2^-24 rounds back to -472.5
  EXPECT_EQ(z[0], -2.98023223876953125e-07f);  // -0 - 5*2^-24, exact
  for (int e = 0; e < kQKK; ++e) {
    const int s = e / 32, l = e % 32;
    const int q = (e % 64) < 32 ? l % 16 : 15 - l % 16;
    const double exact = -0.5 * kSc[s] * q - std::ldexp(kMin[s], -24);
    EXPECT_EQ(z[e], static_cast<float>(exact)) << e;
  }
}

TEST(GgmlBlocks, Q5_KHandBlockHighBits) {
  BlockQ5_K b{};
  fill_k_header(b, 0x3400, 0x3c00);  // d = 0.25, dmin = 1
  // Bit k of qh[l] is the fifth bit of element 32k + l.
  for (int k = 0; k < 8; ++k) b.qh[k] = static_cast<uint8_t>(1u << k);
  b.qh[8] = 0xff;
  const std::vector<float> y = decode(b);
  EXPECT_EQ(y[0], -1.0f);      // s0: q = 0 + 16 -> 0.25*1*16 - 5
  EXPECT_EQ(y[1], -4.75f);     // s0: q = 1      -> 0.25 - 5
  EXPECT_EQ(y[33], 9.0f);      // s1: q = 14 + 16 -> 0.5*30 - 6
  EXPECT_EQ(y[66], 6.5f);      // s2: q = 2 + 16 -> 0.75*18 - 7
  EXPECT_EQ(y[99], 20.0f);     // s3: q = 12 + 16 -> 1*28 - 8
  EXPECT_EQ(y[132], 148.0f);   // s4: q = 4 + 16 -> 8.25*20 - 17
  EXPECT_EQ(y[165], 258.5f);   // s5: q = 10 + 16 -> 11.25*26 - 34
  EXPECT_EQ(y[198], 290.0f);   // s6: q = 6 + 16 -> 15.5*22 - 51
  EXPECT_EQ(y[231], 318.0f);   // s7: q = 8 + 16 -> 15.75*24 - 60
  EXPECT_EQ(y[232], 302.25f);  // s7: q = 7 + 16 (qh[8] = 0xff) -> 15.75*23 - 60
  for (int e = 0; e < kQKK; ++e) {
    const int s = e / 32, l = e % 32;
    const int low = (e % 64) < 32 ? l % 16 : 15 - l % 16;
    const int high = (l < 8 && s == l) || l == 8 ? 16 : 0;
    EXPECT_EQ(y[e], static_cast<float>(0.25 * kSc[s] * (low + high) - kMin[s])) << e;
  }
}

TEST(GgmlBlocks, Q6_KHandBlockSignedScalesAndHighBits) {
  BlockQ6_K b{};
  b.d = 0x3800;  // 0.5
  const int8_t sc[16] = {1, -1, 2, -2, 127, -128, 3, -3, 10, -10, 64, -64, 5, -5, 100, -100};
  std::memcpy(b.scales, sc, 16);
  b.ql[0] = 0x5A;        // element 0 low 4 bits 10, element 64 low 4 bits 5
  b.ql[32] = 0x3C;       // element 32: 12, element 96: 3
  b.qh[0] = 0xE4;        // top 2 bits: element 0: 0, 32: 1, 64: 2, 96: 3
  b.ql[64 + 17] = 0xF1;  // second half, l = 17: element 145: 1, element 209: 15
  b.qh[32 + 17] = 0xFF;  // elements 145, 177, 209, 241: top bits 3
  const std::vector<float> y = decode(b);
  EXPECT_EQ(y[0], -11.0f);     // 0.5 * 1 * (10 - 32)
  EXPECT_EQ(y[32], -4.0f);     // 0.5 * 2 * (28 - 32)
  EXPECT_EQ(y[64], 317.5f);    // 0.5 * 127 * (37 - 32)
  EXPECT_EQ(y[96], 28.5f);     // 0.5 * 3 * (51 - 32)
  EXPECT_EQ(y[145], -85.0f);   // 0.5 * -10 * (49 - 32)
  EXPECT_EQ(y[177], -512.0f);  // 0.5 * -64 * (48 - 32)
  EXPECT_EQ(y[209], -77.5f);   // 0.5 * -5 * (63 - 32)
  EXPECT_EQ(y[241], -800.0f);  // 0.5 * -100 * (48 - 32)
  EXPECT_EQ(y[80], 2048.0f);   // 0.5 * -128 * (0 - 32)
  EXPECT_EQ(y[16], 16.0f);     // 0.5 * -1 * (0 - 32)
  for (int e = 0; e < kQKK; ++e) {
    int code = 0;
    if (e == 0) code = 10;
    if (e == 32) code = 12 | 16;
    if (e == 64) code = 5 | 32;
    if (e == 96) code = 3 | 48;
    if (e == 145) code = 1 | 48;
    if (e == 177) code = 48;
    if (e == 209) code = 15 | 48;
    if (e == 241) code = 48;
    EXPECT_EQ(y[e], static_cast<float>(0.5 * sc[e / 16] * (code - 32))) << e;
  }
}

TEST(GgmlBlocks, DequantizeRowMatchesBlocksAtAnyAlignment) {
  const std::vector<float> x = gaussian(3 * kQKK, 11);
  for (WeightFormat f : {WeightFormat::q4_0, WeightFormat::q8_0, WeightFormat::q4_k,
                         WeightFormat::q5_k, WeightFormat::q6_k}) {
    const GgmlTypeInfo* info = ggml_type_info(ggml_type_of(f));
    const int64_t blocks = 3 * kQKK / info->block_elements;
    std::vector<uint8_t> storage(static_cast<size_t>(blocks * info->block_bytes + 1));
    uint8_t* odd = storage.data() + 1;  // rows of 18- and 34-byte blocks are not even 4-aligned
    quantize_row(f, x.data(), 3 * kQKK, odd);
    std::vector<float> row(3 * kQKK), one(static_cast<size_t>(info->block_elements));
    dequantize_row(f, odd, 3 * kQKK, row.data());
    for (int64_t i = 0; i < blocks; ++i) {
      dequantize_row(f, odd + i * info->block_bytes, info->block_elements, one.data());
      for (int e = 0; e < info->block_elements; ++e) {
        ASSERT_EQ(bits_of(row[static_cast<size_t>(i * info->block_elements + e)]),
                  bits_of(one[static_cast<size_t>(e)]));
      }
    }
  }
  std::vector<float> out(64);
  std::vector<uint8_t> bytes(64);
  EXPECT_TRUE(
      throws_error([&] { dequantize_row(WeightFormat::q4_k, bytes.data(), 32, out.data()); },
                   "[ggml]", {"not a multiple of 256"}));
  EXPECT_TRUE(
      throws_error([&] { quantize_row(WeightFormat::mlx_affine, out.data(), 32, bytes.data()); },
                   "[ggml]", {"not a GGML block format"}));
}

// ---- quantizers: ggml's reference codes on hand rows ----

TEST(GgmlQuantize, Q8_0ReferenceCodes) {
  // x = j - 16: amax 16, d = 16/127 = 0.12598425 in f32 (f16 0x3008), 1/d = 7.9375 exactly, so
  // x * (1/d) = 7.9375 x is exact and roundf rounds its halves away from zero (-63.5 -> -64).
  std::vector<float> x(32);
  for (int j = 0; j < 32; ++j) x[j] = static_cast<float>(j - 16);
  BlockQ8_0 b{};
  quantize_row(WeightFormat::q8_0, x.data(), 32, reinterpret_cast<uint8_t*>(&b));
  EXPECT_EQ(b.d, 0x3008);
  const int8_t expected[32] = {-127, -119, -111, -103, -95, -87, -79, -71, -64, -56, -48,
                               -40,  -32,  -24,  -16,  -8,  0,   8,   16,  24,  32,  40,
                               48,   56,   64,   71,   79,  87,  95,  103, 111, 119};
  for (int j = 0; j < 32; ++j) EXPECT_EQ(b.qs[j], expected[j]) << j;

  // amax 127: d = 1, codes are roundf(x): halves go away from zero (rint would give 2, -2, 0).
  std::fill(x.begin(), x.end(), 0.0f);
  x[0] = 127.0f;
  x[1] = 2.5f;
  x[2] = -2.5f;
  x[3] = 0.5f;
  x[4] = 1.5f;
  x[5] = -126.5f;
  quantize_row(WeightFormat::q8_0, x.data(), 32, reinterpret_cast<uint8_t*>(&b));
  EXPECT_EQ(b.d, 0x3c00);
  const int8_t expected2[6] = {127, 3, -3, 1, 2, -127};
  for (int j = 0; j < 6; ++j) EXPECT_EQ(b.qs[j], expected2[j]) << j;
  for (int j = 6; j < 32; ++j) EXPECT_EQ(b.qs[j], 0) << j;

  // A zero row: d = 0 and every code 0.
  std::fill(x.begin(), x.end(), 0.0f);
  quantize_row(WeightFormat::q8_0, x.data(), 32, reinterpret_cast<uint8_t*>(&b));
  EXPECT_EQ(b.d, 0);
  for (int j = 0; j < 32; ++j) EXPECT_EQ(b.qs[j], 0);
}

TEST(GgmlQuantize, Q4_0ReferenceCodes) {
  // The first element of largest magnitude, -8, sets d = -8 / -8 = 1; codes are
  // min(15, trunc(x + 8.5)): truncation, not rounding (7.99 -> 7, 8.99 -> 8).
  std::vector<float> x(32, 0.0f);
  x[0] = -8.0f;
  x[1] = 8.0f;  // same magnitude, later: does not set d; 16.5 -> 16 -> clamped to 15
  x[2] = 7.0f;
  x[3] = 0.5f;
  x[4] = -0.5f;
  x[5] = -0.51f;
  x[6] = 0.49f;
  x[7] = 3.2f;
  x[16] = 1.0f;
  x[17] = -3.0f;
  BlockQ4_0 b{};
  quantize_row(WeightFormat::q4_0, x.data(), 32, reinterpret_cast<uint8_t*>(&b));
  EXPECT_EQ(b.d, 0x3c00);
  // codes: e0 0, e1 15, e2 15, e3 9, e4 8, e5 7, e6 8, e7 11, e16 9, e17 5, others 8.
  const uint8_t expected[16] = {0x90, 0x5F, 0x8F, 0x89, 0x88, 0x87, 0x88, 0x8B,
                                0x88, 0x88, 0x88, 0x88, 0x88, 0x88, 0x88, 0x88};
  for (int j = 0; j < 16; ++j) EXPECT_EQ(b.qs[j], expected[j]) << j;

  // A positive extreme gives a negative d: max 4 -> d = -0.5, 1/d = -2.
  std::fill(x.begin(), x.end(), 0.0f);
  x[3] = 4.0f;    // 4 * -2 + 8.5 = 0.5 -> 0
  x[4] = -4.0f;   // 16.5 -> 15
  x[5] = 1.0f;    // 6.5 -> 6
  x[20] = -1.0f;  // 10.5 -> 10, the high nibble of qs[4]
  quantize_row(WeightFormat::q4_0, x.data(), 32, reinterpret_cast<uint8_t*>(&b));
  EXPECT_EQ(b.d, 0xb800);
  const uint8_t expected2[16] = {0x88, 0x88, 0x88, 0x80, 0xAF, 0x86, 0x88, 0x88,
                                 0x88, 0x88, 0x88, 0x88, 0x88, 0x88, 0x88, 0x88};
  for (int j = 0; j < 16; ++j) EXPECT_EQ(b.qs[j], expected2[j]) << j;

  // Of two elements of equal magnitude the first sets d: -4 before 4 gives d = 0.5.
  std::fill(x.begin(), x.end(), 0.0f);
  x[1] = -4.0f;  // -8 + 8.5 -> 0
  x[2] = 4.0f;   // 16.5 -> 15
  quantize_row(WeightFormat::q4_0, x.data(), 32, reinterpret_cast<uint8_t*>(&b));
  EXPECT_EQ(b.d, 0x3800);
  EXPECT_EQ(b.qs[1], 0x80);
  EXPECT_EQ(b.qs[2], 0x8F);

  // A zero row: d = 0 / -8 = -0 (stored as f16 0x8000, as the reference does), every code 8.
  std::fill(x.begin(), x.end(), 0.0f);
  quantize_row(WeightFormat::q4_0, x.data(), 32, reinterpret_cast<uint8_t*>(&b));
  EXPECT_EQ(b.d, 0x8000);
  for (int j = 0; j < 16; ++j) EXPECT_EQ(b.qs[j], 0x88);
}

// ---- quantization error bounds ----

namespace {

struct Case {
  const char* name;
  std::vector<float> x;
};

std::vector<Case> rows(int64_t n) {
  std::vector<Case> cases;
  cases.push_back({"gaussian", gaussian(n, 1)});
  cases.push_back({"gaussian small", gaussian(n, 2, 1e-3f)});
  cases.push_back({"gaussian large", gaussian(n, 3, 300.0f)});
  cases.push_back({"zero", std::vector<float>(static_cast<size_t>(n), 0.0f)});
  cases.push_back({"constant positive", std::vector<float>(static_cast<size_t>(n), 0.7f)});
  cases.push_back({"constant negative", std::vector<float>(static_cast<size_t>(n), -1.3f)});
  std::vector<float> mixed = gaussian(n, 4, 1e-4f);
  for (int64_t i = 0; i < n; i += 97) mixed[static_cast<size_t>(i)] = 50.0f;  // outliers
  cases.push_back({"outliers", mixed});
  std::vector<float> ramp(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) ramp[static_cast<size_t>(i)] = static_cast<float>(i % 37) - 9.0f;
  cases.push_back({"ramp", ramp});
  return cases;
}

std::vector<float> round_trip(WeightFormat f, const std::vector<float>& x,
                              std::vector<uint8_t>* bytes) {
  const GgmlTypeInfo* info = ggml_type_info(ggml_type_of(f));
  const auto n = static_cast<int64_t>(x.size());
  bytes->assign(static_cast<size_t>(n / info->block_elements * info->block_bytes), 0);
  quantize_row(f, x.data(), n, bytes->data());
  std::vector<float> y(x.size());
  dequantize_row(f, bytes->data(), n, y.data());
  return y;
}

}  // namespace

TEST(GgmlQuantize, Q8_0AndQ4_0ErrorBounds) {
  for (const Case& c : rows(8 * kQK)) {
    std::vector<uint8_t> bytes;
    // q8_0: |x - q d16| <= d/2 (rounding) + 127 |d - d16|, where storing d in f16 costs 2^-11
    // relative, or 2^-25 absolute once d is an f16 subnormal.
    std::vector<float> y = round_trip(WeightFormat::q8_0, c.x, &bytes);
    for (int i = 0; i < 8; ++i) {
      float amax = 0.0f;
      for (int j = 0; j < kQK; ++j) amax = std::max(amax, std::fabs(c.x[i * kQK + j]));
      const double d = amax / 127.0;
      for (int j = 0; j < kQK; ++j) {
        const size_t e = static_cast<size_t>(i * kQK + j);
        const double f16_error = std::max(d * 0x1p-11, 0x1p-25);
        ASSERT_LE(std::fabs(c.x[e] - y[e]), d * (0.5 + 1e-4) + 127 * f16_error)
            << c.name << " q8_0 element " << e;
      }
    }
    // q4_0: codes floor(x/d + 8.5) round half up, except the opposite extreme (x/d = 8), clamped
    // to 15: error |d|; plus 8 |d - d16| from the stored scale (as for q8_0).
    y = round_trip(WeightFormat::q4_0, c.x, &bytes);
    for (int i = 0; i < 8; ++i) {
      float amax = 0.0f, max = 0.0f;
      for (int j = 0; j < kQK; ++j) {
        const float v = c.x[i * kQK + j];
        if (amax < std::fabs(v)) {
          amax = std::fabs(v);
          max = v;
        }
      }
      const double d = max / -8.0;
      for (int j = 0; j < kQK; ++j) {
        const size_t e = static_cast<size_t>(i * kQK + j);
        const bool clamped = d != 0 && c.x[e] / d > 7.5;
        const double f16_error = std::max(std::fabs(d) * 0x1p-11, 0x1p-25);
        const double bound = std::fabs(d) * ((clamped ? 1.0 : 0.5) + 1e-4) + 8 * f16_error;
        ASSERT_LE(std::fabs(c.x[e] - y[e]), bound) << c.name << " q4_0 element " << e;
      }
    }
  }
}

TEST(GgmlQuantize, KQuantEncodersStayWithinHalfAStep) {
  for (const Case& c : rows(2 * kQKK)) {
    for (WeightFormat f : {WeightFormat::q4_k, WeightFormat::q5_k, WeightFormat::q6_k}) {
      std::vector<uint8_t> bytes;
      const std::vector<float> y = round_trip(f, c.x, &bytes);
      const GgmlTypeInfo* info = ggml_type_info(ggml_type_of(f));
      for (int blk = 0; blk < 2; ++blk) {
        const uint8_t* p = bytes.data() + blk * info->block_bytes;
        const float* xb = c.x.data() + blk * kQKK;
        // The step of each element's sub-block, read back from the block.
        float step[kQKK];
        float lo = 0.0f, hi = 0.0f, amax = 0.0f;
        for (int e = 0; e < kQKK; ++e) {
          lo = std::min(lo, xb[e]);
          hi = std::max(hi, xb[e]);
          amax = std::max(amax, std::fabs(xb[e]));
        }
        double levels = 0, range = 0;
        if (f == WeightFormat::q6_k) {
          BlockQ6_K b;
          std::memcpy(&b, p, sizeof b);
          for (int e = 0; e < kQKK; ++e) {
            step[e] = f16_bits_to_float(b.d) * static_cast<float>(b.scales[e / 16]);
          }
          levels = 31;
          range = amax;
        } else {
          BlockQ4_K b;  // Q5_K starts with the same d, dmin, scales
          std::memcpy(&b, p, sizeof b);
          for (int e = 0; e < kQKK; ++e) {
            step[e] = f16_bits_to_float(b.d) *
                      static_cast<float>(get_scale_min_k4(e / 32, b.scales).scale);
          }
          levels = f == WeightFormat::q4_k ? 15 : 31;
          range = hi - lo;
        }
        for (int e = 0; e < kQKK; ++e) {
          const double err = std::fabs(xb[e] - y[static_cast<size_t>(blk * kQKK + e)]);
          ASSERT_GE(step[e], 0.0f);
          ASSERT_LE(err, step[e] * 0.5 * (1 + 1e-5) + 1e-6 * std::fabs(xb[e]))
              << c.name << " " << ggml_type_name(ggml_type_of(f)) << " element " << e;
          // And the steps themselves are close to the ideal range / levels.
          ASSERT_LE(err, 0.52 * range / levels + 1e-6 * std::fabs(xb[e]))
              << c.name << " " << ggml_type_name(ggml_type_of(f)) << " element " << e;
        }
      }
    }
  }
}

TEST(GgmlQuantize, KQuantEncodersRefuseNonFiniteAndHugeInput) {
  std::vector<float> x(kQKK, 1.0f);
  std::vector<uint8_t> bytes(sizeof(BlockQ5_K));
  x[7] = NAN;
  EXPECT_TRUE(throws_error([&] { quantize_row(WeightFormat::q5_k, x.data(), kQKK, bytes.data()); },
                           "[ggml]", {"non-finite", "index 7"}));
  x[7] = 1e30f;
  EXPECT_TRUE(throws_error([&] { quantize_row(WeightFormat::q6_k, x.data(), kQKK, bytes.data()); },
                           "[ggml]", {"too large"}));
}
