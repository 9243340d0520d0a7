// fill, fill_random, copy and cast on the CPU reference, against exact math.
#include <gtest/gtest.h>

#include <cmath>
#include <numeric>

#include "support/support.h"

using namespace mlxn;
using mlxn::test::cpu_stream;
using mlxn::test::error_of;
using mlxn::test::throws_error;

namespace {

const DType kFloatTypes[] = {DType::f32, DType::f16, DType::bf16, DType::f8e4m3, DType::f8e5m2};

}  // namespace

TEST(Fill, EveryFloatDtypeGetsTheRoundedValue) {
  for (DType d : kFloatTypes) {
    Buffer b = Buffer::empty({3, 37}, d, cpu_stream());
    test::poison(b, cpu_stream());
    fill(b, 0.1, cpu_stream());
    const double expected = test::round_to(0.1, d);
    for (double v : test::to_f64(b, cpu_stream())) ASSERT_EQ(v, expected) << dtype_name(d);
  }
}

TEST(Fill, IntegerDtypesAndRangeChecks) {
  Buffer b = Buffer::empty({5}, DType::i8, cpu_stream());
  fill(b, -128, cpu_stream());
  EXPECT_EQ(b.to_host<int8_t>(cpu_stream()), std::vector<int8_t>(5, -128));
  Buffer big = Buffer::empty({2}, DType::i64, cpu_stream());
  fill(big, -9007199254740992.0, cpu_stream());
  EXPECT_EQ(big.to_host<int64_t>(cpu_stream())[1], -9007199254740992LL);
  EXPECT_EQ(error_of([&] { fill(b, 128, cpu_stream()); }),
            "[fill] value 128.000000 is not representable in i8");
  EXPECT_THROW(fill(b, 1.5, cpu_stream()), Error);
  EXPECT_THROW(fill(Buffer::empty({1}, DType::u8, cpu_stream()), -1, cpu_stream()), Error);
  EXPECT_THROW(
      fill(Buffer::empty({1}, DType::i64, cpu_stream()), 9223372036854775808.0, cpu_stream()),
      Error);
  EXPECT_THROW(fill(b, std::nan(""), cpu_stream()), Error);
}

TEST(Fill, StridedViewWritesOnlyItsElements) {
  Buffer b = Buffer::empty({6, 8}, DType::f32, cpu_stream());
  fill(b, 0.0, cpu_stream());
  fill(b.slice(0, 1, 6, 2).slice(1, 3, 8, 3), 9.0, cpu_stream());  // rows 1,3,5 x cols 3,6
  const auto v = test::to_f64(b, cpu_stream());
  for (int r = 0; r < 6; ++r)
    for (int c = 0; c < 8; ++c)
      EXPECT_EQ(v[r * 8 + c], (r % 2 == 1 && (c == 3 || c == 6)) ? 9.0 : 0.0) << r << "," << c;
}

TEST(Fill, IndirectValueIsReadWhenTheOpRuns) {
  Buffer b = Buffer::empty({4}, DType::bf16, cpu_stream());
  Buffer value = Buffer::empty({1}, DType::f32, cpu_stream());
  fill(value, 2.5, cpu_stream());
  fill(b, ScalarArg::from_buffer(value), cpu_stream());
  EXPECT_EQ(test::to_f64(b, cpu_stream())[3], 2.5);
  EXPECT_THROW(
      fill(b, ScalarArg::from_buffer(Buffer::empty({2}, DType::f32, cpu_stream())), cpu_stream()),
      Error);
  EXPECT_THROW(fill(Buffer::empty({1}, DType::i32, cpu_stream()), ScalarArg::from_buffer(value),
                    cpu_stream()),
               Error);
}

TEST(FillRandom, NormalMomentsMatch) {
  const int64_t n = 1 << 20;
  Buffer b = Buffer::empty({n}, DType::f32, cpu_stream());
  fill_random(b, {Distribution::normal, 42, 1.5f, 2.0f}, cpu_stream());
  const auto v = test::to_f64(b, cpu_stream());
  double mean = 0, m2 = 0, m4 = 0;
  for (double x : v) mean += x;
  mean /= n;
  for (double x : v) {
    const double d = (x - mean) / 2.0;
    m2 += d * d;
    m4 += d * d * d * d;
  }
  m2 /= n;
  m4 /= n;
  // Standard errors at n = 2^20: mean 2/1024, variance ~0.0014, kurtosis ~0.005.
  EXPECT_NEAR(mean, 1.5, 0.01);
  EXPECT_NEAR(m2, 1.0, 0.01);
  EXPECT_NEAR(m4 / (m2 * m2), 3.0, 0.05);
  int64_t beyond_3_sigma = 0;
  for (double x : v) beyond_3_sigma += std::fabs(x - 1.5) > 6.0;
  EXPECT_NEAR(static_cast<double>(beyond_3_sigma) / n, 0.0027, 0.0005);
}

TEST(FillRandom, UniformCoversTheHalfOpenRange) {
  const int64_t n = 1 << 20;
  Buffer b = Buffer::empty({n}, DType::f32, cpu_stream());
  fill_random(b, {Distribution::uniform, 3, -2.0f, 6.0f}, cpu_stream());
  const auto v = test::to_f64(b, cpu_stream());
  double mean = 0;
  std::vector<int64_t> bins(8, 0);
  for (double x : v) {
    ASSERT_GE(x, -2.0);
    ASSERT_LT(x, 6.0);
    mean += x;
    ++bins[static_cast<size_t>(x + 2.0)];
  }
  EXPECT_NEAR(mean / n, 2.0, 0.01);
  for (int64_t count : bins) EXPECT_NEAR(static_cast<double>(count) / n, 0.125, 0.002);
}

TEST(FillRandom, DependsOnlyOnSeedAndLogicalIndex) {
  Buffer a = Buffer::empty({7, 9}, DType::f32, cpu_stream());
  Buffer b = Buffer::empty({9, 7}, DType::f32, cpu_stream());
  Buffer c = Buffer::empty({7, 9}, DType::f32, cpu_stream());
  const RandomSpec spec{Distribution::normal, 11, 0.0f, 1.0f};
  fill_random(a, spec, cpu_stream());
  fill_random(b.transpose(0, 1), spec, cpu_stream());  // same logical shape, other layout
  fill_random(c, {Distribution::normal, 12, 0.0f, 1.0f}, cpu_stream());
  EXPECT_TRUE(test::same_bits(b.transpose(0, 1), a, cpu_stream(), cpu_stream()));
  EXPECT_FALSE(test::same_bits(c, a, cpu_stream(), cpu_stream()));
  Buffer a2 = Buffer::empty({7, 9}, DType::f32, cpu_stream());
  fill_random(a2, spec, cpu_stream());
  EXPECT_TRUE(test::same_bits(a2, a, cpu_stream(), cpu_stream()));
}

TEST(FillRandom, NarrowDtypesStoreTheRoundedF32Draw) {
  Buffer wide = Buffer::empty({1000}, DType::f32, cpu_stream());
  const RandomSpec spec{Distribution::normal, 9, 0.0f, 3.0f};
  fill_random(wide, spec, cpu_stream());
  const auto w = test::to_f64(wide, cpu_stream());
  for (DType d : kFloatTypes) {
    Buffer narrow = Buffer::empty({1000}, d, cpu_stream());
    fill_random(narrow, spec, cpu_stream());
    const auto n = test::to_f64(narrow, cpu_stream());
    for (size_t i = 0; i < n.size(); ++i)
      ASSERT_EQ(n[i], test::round_to(w[i], d)) << dtype_name(d) << " " << i;
  }
}

TEST(FillRandom, BadParametersAreErrors) {
  Buffer b = Buffer::empty({4}, DType::f32, cpu_stream());
  EXPECT_THROW(fill_random(b, {Distribution::uniform, 0, 1.0f, 1.0f}, cpu_stream()), Error);
  EXPECT_THROW(fill_random(b, {Distribution::normal, 0, 0.0f, -1.0f}, cpu_stream()), Error);
  EXPECT_THROW(fill_random(b, {Distribution::normal, 0, NAN, 1.0f}, cpu_stream()), Error);
  EXPECT_THROW(fill_random(Buffer::empty({4}, DType::i32, cpu_stream()), {}, cpu_stream()), Error);
}

TEST(Copy, StridedAndBroadcastSources) {
  for (int64_t rows : {1, 31, 33}) {
    Buffer src = test::random_buffer({rows, 40}, DType::bf16, 7, cpu_stream());
    Buffer dst = Buffer::empty({40, rows}, DType::bf16, cpu_stream());
    test::poison(dst, cpu_stream());
    copy(src.transpose(0, 1), dst, cpu_stream());
    const auto s = test::to_f64(src, cpu_stream());
    const auto d = test::to_f64(dst, cpu_stream());
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < 40; ++c) ASSERT_EQ(d[c * rows + r], s[r * 40 + c]);
  }
  Buffer row = test::random_buffer({1, 5}, DType::f32, 8, cpu_stream());
  Buffer tiled = Buffer::empty({3, 5}, DType::f32, cpu_stream());
  copy(row.broadcast_to({3, 5}), tiled, cpu_stream());
  const auto r = test::to_f64(row, cpu_stream());
  const auto t = test::to_f64(tiled, cpu_stream());
  for (int i = 0; i < 15; ++i) EXPECT_EQ(t[i], r[i % 5]);
}

TEST(Copy, IntegerDtypesAreCopiedExactly) {
  std::vector<int64_t> values(100);
  std::iota(values.begin(), values.end(), int64_t{1} << 40);
  Buffer src =
      Buffer::from_host(std::span<const int64_t>(values), {10, 10}, DType::i64, cpu_stream());
  Buffer dst = Buffer::empty({10, 10}, DType::i64, cpu_stream());
  copy(src.transpose(0, 1), dst, cpu_stream());
  const auto got = dst.to_host<int64_t>(cpu_stream());
  for (int i = 0; i < 10; ++i)
    for (int j = 0; j < 10; ++j) EXPECT_EQ(got[i * 10 + j], values[j * 10 + i]);
}

TEST(Copy, BadInput) {
  Buffer a = Buffer::empty({4}, DType::f32, cpu_stream());
  EXPECT_EQ(error_of([&] { copy(a, Buffer::empty({4}, DType::f16, cpu_stream()), cpu_stream()); }),
            "[copy] dtype mismatch: src f32[4] on cpu, dst f16[4] on cpu (use cast to convert)");
  EXPECT_EQ(error_of([&] { copy(a, Buffer::empty({5}, DType::f32, cpu_stream()), cpu_stream()); }),
            "[copy] src [4] and dst [5] differ in shape");
  EXPECT_THROW(copy(Buffer(), a, cpu_stream()), Error);
}

TEST(Cast, EveryPairMatchesRoundingTheExactValue) {
  for (DType from : kFloatTypes) {
    Buffer src = Buffer::empty({33, 31}, from, cpu_stream());
    fill_random(src, {Distribution::normal, 21, 0.0f, 100.0f}, cpu_stream());
    const auto s = test::to_f64(src, cpu_stream());
    for (DType to : kFloatTypes) {
      Buffer dst = Buffer::empty({31, 33}, to, cpu_stream());
      test::poison(dst, cpu_stream());
      cast(src.transpose(0, 1), dst, cpu_stream());
      const auto d = test::to_f64(dst, cpu_stream());
      for (int r = 0; r < 33; ++r)
        for (int c = 0; c < 31; ++c)
          ASSERT_EQ(d[c * 33 + r], test::round_to(s[r * 31 + c], to))
              << dtype_name(from) << "->" << dtype_name(to) << " at " << r << "," << c;
    }
  }
}

TEST(Cast, SpecialValues) {
  const std::vector<float> specials = {INFINITY, -INFINITY, NAN,      1e30f, -1e-30f,
                                       0.0f,     -0.0f,     65520.0f, 500.0f};
  Buffer src = Buffer::from_host(std::span<const float>(specials), {9}, DType::f32, cpu_stream());
  Buffer h = Buffer::empty({9}, DType::f16, cpu_stream());
  Buffer e4 = Buffer::empty({9}, DType::f8e4m3, cpu_stream());
  cast(src, h, cpu_stream());
  cast(src, e4, cpu_stream());
  const auto hb = h.to_host<uint16_t>(cpu_stream());
  EXPECT_EQ(hb[0], 0x7c00);
  EXPECT_EQ(hb[1], 0xfc00);
  EXPECT_EQ(hb[2], 0x7fff);
  EXPECT_EQ(hb[3], 0x7c00);
  EXPECT_EQ(hb[4], 0x8000);
  EXPECT_EQ(hb[6], 0x8000);
  EXPECT_EQ(hb[7], 0x7c00);
  const auto eb = e4.to_host<uint8_t>(cpu_stream());
  EXPECT_EQ(eb[0], 0x7e);  // saturating
  EXPECT_EQ(eb[1], 0xfe);
  EXPECT_EQ(eb[2], 0x7f);
  EXPECT_EQ(eb[8], 0x7e);
}

TEST(Cast, BadInput) {
  Buffer a = Buffer::empty({4}, DType::f32, cpu_stream());
  EXPECT_EQ(error_of([&] { cast(a, Buffer::empty({4}, DType::i32, cpu_stream()), cpu_stream()); }),
            "[cast] destination dtype i32 unsupported (supported: f32, f16, bf16, f8e4m3, f8e5m2)");
  EXPECT_THROW(cast(a, Buffer::empty({2, 2}, DType::f16, cpu_stream()), cpu_stream()), Error);
}
