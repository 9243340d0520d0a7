// The dtype table (names, sizes, categories) and the host float conversions of float_types.h,
// checked against an independent oracle written here from the format definitions.
#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <limits>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "mlxn/core/dtype.h"
#include "mlxn/core/error.h"
#include "mlxn/core/float_types.h"
#include "support/support.h"

using namespace mlxn;
using mlxn::test::error_of;
using mlxn::test::throws_error;

namespace {

struct TableEntry {
  DType dtype;
  const char* name;
  int bits;
  DTypeKind kind;
};

const std::vector<TableEntry>& table() {
  static const std::vector<TableEntry> entries = {
#define MLXN_TEST_ENTRY(n, b, k) {DType::n, #n, b, k},
      MLXN_DTYPE_TABLE(MLXN_TEST_ENTRY)
#undef MLXN_TEST_ENTRY
  };
  return entries;
}

// ---------------------------------------------------------------------------------------------
// The oracle: narrow float formats described by their fields, decoded and rounded in double.

struct Format {
  const char* name;
  int exp_bits;
  int man_bits;
  int bias;
  bool ieee_specials;  // all-ones exponent = inf (mantissa 0) / NaN; else NaN only at S.1..1.1..1
  bool saturating;     // f32 -> format: |x| >= max finite (and inf) gives +-max finite
  uint32_t canonical_nan;
  uint32_t (*encode)(float);  // the library's conversions under test
  float (*decode)(uint32_t);

  int bits() const { return 1 + exp_bits + man_bits; }
  uint32_t sign_mask() const { return 1u << (exp_bits + man_bits); }
  uint32_t exp_all_ones() const { return (1u << exp_bits) - 1u; }
  uint32_t man_all_ones() const { return (1u << man_bits) - 1u; }
  // Largest finite positive code.
  uint32_t max_code() const {
    return ieee_specials ? (exp_all_ones() << man_bits) - 1u
                         : (exp_all_ones() << man_bits) | (man_all_ones() - 1u);
  }
  uint32_t inf_code() const { return exp_all_ones() << man_bits; }  // ieee_specials only
};

const Format kF16{"f16",
                  5,
                  10,
                  15,
                  true,
                  false,
                  0x7fff,
                  [](float f) -> uint32_t { return float_bits::f32_to_f16(f); },
                  [](uint32_t b) { return float_bits::f16_to_f32(static_cast<uint16_t>(b)); }};
const Format kBF16{"bf16",
                   8,
                   7,
                   127,
                   true,
                   false,
                   0x7fff,
                   [](float f) -> uint32_t { return float_bits::f32_to_bf16(f); },
                   [](uint32_t b) { return float_bits::bf16_to_f32(static_cast<uint16_t>(b)); }};
const Format kE4M3{"f8e4m3",
                   4,
                   3,
                   7,
                   false,
                   true,
                   0x7f,
                   [](float f) -> uint32_t { return float_bits::f32_to_f8e4m3(f); },
                   [](uint32_t b) { return float_bits::f8e4m3_to_f32(static_cast<uint8_t>(b)); }};
const Format kE5M2{"f8e5m2",
                   5,
                   2,
                   15,
                   true,
                   true,
                   0x7f,
                   [](float f) -> uint32_t { return float_bits::f32_to_f8e5m2(f); },
                   [](uint32_t b) { return float_bits::f8e5m2_to_f32(static_cast<uint8_t>(b)); }};

const Format* const kFormats[] = {&kF16, &kBF16, &kE4M3, &kE5M2};

// 2^e in double, by repeated doubling/halving (independent of ldexp and of float bit layouts).
double pow2(int e) {
  double r = 1.0;
  for (; e > 0; --e) r *= 2.0;
  for (; e < 0; ++e) r *= 0.5;
  return r;
}

// The value a code stands for, from the format definition.
double oracle_decode(const Format& f, uint32_t code) {
  const bool negative = (code & f.sign_mask()) != 0;
  const uint32_t e = (code >> f.man_bits) & f.exp_all_ones();
  const uint32_t m = code & f.man_all_ones();
  double magnitude;
  if (f.ieee_specials && e == f.exp_all_ones()) {
    if (m != 0) return std::numeric_limits<double>::quiet_NaN();
    magnitude = std::numeric_limits<double>::infinity();
  } else if (!f.ieee_specials && e == f.exp_all_ones() && m == f.man_all_ones()) {
    return std::numeric_limits<double>::quiet_NaN();
  } else if (e == 0) {
    magnitude = static_cast<double>(m) * pow2(1 - f.bias - f.man_bits);  // subnormal
  } else {
    magnitude = static_cast<double>((1u << f.man_bits) + m) *
                pow2(static_cast<int>(e) - f.bias - f.man_bits);
  }
  return negative ? -magnitude : magnitude;
}

// Non-negative finite values of the format, indexed by code (code 0 .. max_code()).
struct Oracle {
  const Format& format;
  std::vector<double> values;
  double overflow_threshold;  // f16/bf16: max + half an ulp (rounds to inf from here on)

  explicit Oracle(const Format& f) : format(f) {
    for (uint32_t c = 0; c <= f.max_code(); ++c) values.push_back(oracle_decode(f, c));
    const double max = values.back();
    overflow_threshold = max + (max - values[values.size() - 2]) / 2.0;
  }

  double max() const { return values.back(); }

  // Round to nearest, ties to the code with an even mantissa LSB (the code's LSB); overflow per
  // the format's convention. `x` must not be NaN.
  uint32_t encode(float x) const {
    const uint32_t sign = std::signbit(x) ? format.sign_mask() : 0u;
    const double a = std::fabs(static_cast<double>(x));
    if (format.saturating) {
      if (a >= max()) return sign | format.max_code();
    } else if (a >= overflow_threshold) {
      return sign | format.inf_code();
    }
    const auto it = std::lower_bound(values.begin(), values.end(), a);
    if (it == values.end()) return sign | format.max_code();  // (max, max + half ulp)
    const auto hi = static_cast<uint32_t>(it - values.begin());
    if (*it == a) return sign | hi;
    const uint32_t lo = hi - 1;                          // a > values[0] == 0, so hi >= 1
    const double mid = (values[lo] + values[hi]) / 2.0;  // exact: both are narrow values
    if (a < mid) return sign | lo;
    if (a > mid) return sign | hi;
    return sign | ((lo & 1u) == 0 ? lo : hi);
  }
};

std::string hex(uint64_t v) {
  std::ostringstream os;
  os << "0x" << std::hex << v;
  return os.str();
}

// Checks the library's f32 -> format conversion of every value in `inputs` against the oracle;
// reports the first few mismatches and the total.
void check_encode(const Oracle& oracle, const std::vector<float>& inputs, const char* what) {
  const Format& f = oracle.format;
  int64_t mismatches = 0;
  for (float x : inputs) {
    const uint32_t got = f.encode(x);
    bool ok;
    uint32_t want;
    if (std::isnan(x)) {
      want = f.canonical_nan;
      ok = got == want && std::isnan(oracle_decode(f, got));
    } else {
      want = oracle.encode(x);
      ok = got == want;
    }
    if (!ok && ++mismatches <= 8) {
      ADD_FAILURE() << f.name << " (" << what << "): f32 " << hex(std::bit_cast<uint32_t>(x))
                    << " = " << std::hexfloat << x << std::defaultfloat << " (" << x
                    << ") converted to " << hex(got) << " (" << oracle_decode(f, got)
                    << "), expected " << hex(want) << " (" << oracle_decode(f, want) << ")";
    }
  }
  EXPECT_EQ(mismatches, 0) << f.name << " (" << what << "): mismatches among " << inputs.size()
                           << " inputs";
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// The dtype table.

TEST(Dtype, ParseRoundTrip) {
  ASSERT_EQ(static_cast<int>(table().size()), kDTypeCount);
  std::set<std::string_view> names;
  for (const TableEntry& e : table()) {
    EXPECT_EQ(dtype_name(e.dtype), e.name);
    EXPECT_EQ(parse_dtype(e.name), e.dtype) << e.name;
    EXPECT_EQ(parse_dtype(dtype_name(e.dtype)), e.dtype) << e.name;
    EXPECT_EQ(dtype_bits(e.dtype), e.bits) << e.name;
    EXPECT_EQ(dtype_kind(e.dtype), e.kind) << e.name;
    names.insert(dtype_name(e.dtype));
  }
  EXPECT_EQ(static_cast<int>(names.size()), kDTypeCount) << "dtype names are not unique";
}

TEST(Dtype, ParseUnknownNameThrowsListingValidNames) {
  std::vector<std::string_view> all_names;
  for (const TableEntry& e : table()) all_names.push_back(e.name);
  for (std::string_view bad : {"f12", "", "float32", "f32 ", "bf"}) {
    std::string message;
    try {
      parse_dtype(bad);
      ADD_FAILURE() << "parse_dtype(\"" << bad << "\") did not throw";
      continue;
    } catch (const Error& e) {
      message = e.what();
      EXPECT_EQ(e.op(), "dtype");
    }
    EXPECT_TRUE(message.starts_with("[dtype]")) << message;
    for (std::string_view name : all_names) {
      EXPECT_NE(message.find(name), std::string::npos)
          << "message \"" << message << "\" does not list " << name;
    }
  }
  EXPECT_TRUE(throws_error([] { parse_dtype("f12"); }, "[dtype]", {"f12", "f32", "i64"}));
  EXPECT_THROW(parse_dtype("f12"), Error);
}

TEST(Dtype, SizesAndKinds) {
  EXPECT_EQ(dtype_size(DType::f32), 4);
  EXPECT_EQ(dtype_size(DType::f16), 2);
  EXPECT_EQ(dtype_size(DType::bf16), 2);
  EXPECT_EQ(dtype_size(DType::f8e4m3), 1);
  EXPECT_EQ(dtype_size(DType::f8e5m2), 1);
  EXPECT_EQ(dtype_size(DType::i8), 1);
  EXPECT_EQ(dtype_size(DType::u8), 1);
  EXPECT_EQ(dtype_size(DType::i32), 4);
  EXPECT_EQ(dtype_size(DType::u32), 4);
  EXPECT_EQ(dtype_size(DType::i64), 8);

  for (DType d : {DType::f32, DType::f16, DType::bf16, DType::f8e4m3, DType::f8e5m2}) {
    EXPECT_TRUE(is_floating(d)) << dtype_name(d);
  }
  for (DType d : {DType::i8, DType::u8, DType::i32, DType::u32, DType::i64}) {
    EXPECT_FALSE(is_floating(d)) << dtype_name(d);
  }
  EXPECT_EQ(dtype_kind(DType::i8), DTypeKind::signed_int);
  EXPECT_EQ(dtype_kind(DType::i32), DTypeKind::signed_int);
  EXPECT_EQ(dtype_kind(DType::i64), DTypeKind::signed_int);
  EXPECT_EQ(dtype_kind(DType::u8), DTypeKind::unsigned_int);
  EXPECT_EQ(dtype_kind(DType::u32), DTypeKind::unsigned_int);
  static_assert(dtype_size(DType::bf16) == 2 && is_floating(DType::f8e5m2));

  // The host storage types have the dtype's width.
  EXPECT_EQ(static_cast<int64_t>(sizeof(Half)), dtype_size(DType::f16));
  EXPECT_EQ(static_cast<int64_t>(sizeof(BFloat16)), dtype_size(DType::bf16));
  EXPECT_EQ(static_cast<int64_t>(sizeof(Fp8E4M3)), dtype_size(DType::f8e4m3));
  EXPECT_EQ(static_cast<int64_t>(sizeof(Fp8E5M2)), dtype_size(DType::f8e5m2));
}

// ---------------------------------------------------------------------------------------------
// Conversions against the oracle.

TEST(FloatBits, OracleSelfCheck) {
  // The oracle's own tables: sorted, with the documented extremes.
  for (const Format* f : kFormats) {
    const Oracle oracle(*f);
    EXPECT_TRUE(std::is_sorted(oracle.values.begin(), oracle.values.end())) << f->name;
    EXPECT_TRUE(std::adjacent_find(oracle.values.begin(), oracle.values.end()) ==
                oracle.values.end())
        << f->name << ": duplicate values";
  }
  EXPECT_EQ(Oracle(kF16).max(), 65504.0);
  EXPECT_EQ(Oracle(kF16).overflow_threshold, 65520.0);
  EXPECT_EQ(Oracle(kBF16).max(), 0x1.fep127);
  EXPECT_EQ(Oracle(kE4M3).max(), 448.0);
  EXPECT_EQ(Oracle(kE5M2).max(), 57344.0);
  EXPECT_EQ(oracle_decode(kF16, 0x0001), 0x1p-24);
  EXPECT_EQ(oracle_decode(kBF16, 0x0001), 0x1p-133);
  EXPECT_EQ(oracle_decode(kE4M3, 0x01), 0x1p-9);
  EXPECT_EQ(oracle_decode(kE5M2, 0x01), 0x1p-16);
  EXPECT_EQ(oracle_decode(kE4M3, 0x38), 1.0);
  EXPECT_EQ(oracle_decode(kE5M2, 0x3c), 1.0);
  EXPECT_TRUE(std::isinf(oracle_decode(kE5M2, 0x7c)));
  EXPECT_TRUE(std::isnan(oracle_decode(kE4M3, 0xff)));
  EXPECT_EQ(oracle_decode(kE4M3, 0x78), 256.0);  // e4m3 has no inf: S.1111.000 is finite
}

TEST(FloatBits, DecodeEveryCode) {
  for (const Format* f : kFormats) {
    const uint32_t count = 1u << f->bits();
    int64_t mismatches = 0, nan_codes = 0;
    for (uint32_t code = 0; code < count; ++code) {
      const double want = oracle_decode(*f, code);
      const float got = f->decode(code);
      bool ok;
      if (std::isnan(want)) {
        ++nan_codes;
        ok = std::isnan(got);
      } else {
        // Exact, including the sign of zero.
        ok = std::bit_cast<uint32_t>(got) == std::bit_cast<uint32_t>(static_cast<float>(want)) &&
             static_cast<double>(got) == want;
      }
      if (!ok && ++mismatches <= 8) {
        ADD_FAILURE() << f->name << " code " << hex(code) << " decoded to " << got << ", expected "
                      << want;
      }
    }
    EXPECT_EQ(mismatches, 0) << f->name;
    // NaN codes per format: f16 2*1023, bf16 2*127, e4m3 2 (S.1111.111), e5m2 2*3.
    const int64_t expected_nans = f->ieee_specials ? 2 * f->man_all_ones() : 2;
    EXPECT_EQ(nan_codes, expected_nans) << f->name;
  }
}

TEST(FloatBits, EncodeMidpointsAndNeighbours) {
  for (const Format* f : kFormats) {
    const Oracle oracle(*f);
    std::vector<double> points;
    for (size_t i = 0; i < oracle.values.size(); ++i) {
      points.push_back(oracle.values[i]);
      if (i + 1 < oracle.values.size()) {
        points.push_back((oracle.values[i] + oracle.values[i + 1]) / 2.0);
      }
    }
    // Beyond the top: the overflow threshold (f16/bf16) and the saturation region (fp8).
    const double top_ulp = oracle.max() - oracle.values[oracle.values.size() - 2];
    points.push_back(oracle.max() + top_ulp / 2.0);
    points.push_back(oracle.max() + top_ulp);
    points.push_back(oracle.max() * 4.0);
    std::vector<float> inputs;
    for (double p : points) {
      if (p > std::numeric_limits<float>::max()) continue;  // bf16's range is f32's
      const auto x = static_cast<float>(p);
      ASSERT_EQ(static_cast<double>(x), p) << f->name << ": midpoint not exact in f32";
      for (float v : {x, std::nextafter(x, INFINITY), std::nextafter(x, 0.0f)}) {
        inputs.push_back(v);
        inputs.push_back(-v);
      }
    }
    inputs.push_back(INFINITY);
    inputs.push_back(-INFINITY);
    inputs.push_back(std::numeric_limits<float>::max());
    inputs.push_back(-std::numeric_limits<float>::max());
    inputs.push_back(std::numeric_limits<float>::denorm_min());
    inputs.push_back(-std::numeric_limits<float>::denorm_min());
    for (uint32_t nan : {0x7fc00000u, 0xffc00000u, 0x7f800001u, 0x7fffffffu, 0xff812345u}) {
      inputs.push_back(std::bit_cast<float>(nan));
    }
    check_encode(oracle, inputs, "midpoints");
  }
}

TEST(FloatBits, EncodeRandomBitPatterns) {
  std::mt19937 rng(20240611u);
  std::vector<float> inputs(2'000'000);
  for (float& x : inputs) x = std::bit_cast<float>(static_cast<uint32_t>(rng()));
  for (const Format* f : kFormats) {
    check_encode(Oracle(*f), inputs, "random bits");
  }
}

TEST(FloatBits, EncodeRandomLogUniform) {
  // Magnitudes uniform in log2 from below the smallest subnormal to above the largest finite.
  std::mt19937 rng(7u);
  for (const Format* f : kFormats) {
    const Oracle oracle(*f);
    const double lo = std::log2(oracle.values[1]) - 2.0;
    const double hi = std::log2(oracle.max()) + 1.0;
    std::uniform_real_distribution<double> exponent(lo, hi);
    std::vector<float> inputs(250'000);
    for (float& x : inputs) {
      const auto magnitude = static_cast<float>(std::exp2(exponent(rng)));
      x = (rng() & 1u) ? -magnitude : magnitude;
    }
    check_encode(oracle, inputs, "log-uniform");
  }
}

TEST(FloatBits, NanGivesCanonicalCode) {
  for (const Format* f : kFormats) {
    for (uint32_t nan : {0x7fc00000u, 0xffc00000u, 0x7f800001u, 0xffffffffu}) {
      const uint32_t code = f->encode(std::bit_cast<float>(nan));
      EXPECT_EQ(code, f->canonical_nan) << f->name << " from " << hex(nan);
      EXPECT_TRUE(std::isnan(oracle_decode(*f, code))) << f->name;
      EXPECT_TRUE(std::isnan(f->decode(code))) << f->name;
    }
  }
}

TEST(FloatBits, TinyValuesKeepTheSignOfZero) {
  for (const Format* f : kFormats) {
    const Oracle oracle(*f);
    const auto quarter = static_cast<float>(oracle.values[1] / 4.0);
    for (float x : {0.0f, quarter, std::numeric_limits<float>::denorm_min()}) {
      EXPECT_EQ(f->encode(x), 0u) << f->name << " " << x;
      EXPECT_EQ(f->encode(-x), f->sign_mask()) << f->name << " " << -x;
      EXPECT_TRUE(std::signbit(f->decode(f->encode(-x)))) << f->name;
      EXPECT_FALSE(std::signbit(f->decode(f->encode(x)))) << f->name;
    }
  }
}

TEST(FloatBits, SpotValues) {
  EXPECT_EQ(float_bits::f32_to_bf16(1.0f), 0x3f80);
  EXPECT_EQ(float_bits::f32_to_f16(1.0f), 0x3c00);
  EXPECT_EQ(float_bits::f32_to_f16(65504.0f), 0x7bff);
  EXPECT_EQ(float_bits::f32_to_f16(65520.0f), 0x7c00);
  EXPECT_EQ(float_bits::f32_to_f16(-65520.0f), 0xfc00);
  EXPECT_EQ(float_bits::f32_to_f16(65519.996f), 0x7bff);
  EXPECT_EQ(float_bits::f32_to_f8e4m3(448.0f), 0x7e);
  EXPECT_EQ(float_bits::f32_to_f8e4m3(1e6f), 0x7e);
  EXPECT_EQ(float_bits::f32_to_f8e4m3(-INFINITY), 0xfe);
  EXPECT_EQ(float_bits::f32_to_f8e4m3(INFINITY), 0x7e);
  EXPECT_EQ(float_bits::f32_to_f8e5m2(INFINITY), 0x7b);
  EXPECT_EQ(float_bits::f32_to_f8e5m2(-INFINITY), 0xfb);
  EXPECT_EQ(float_bits::f32_to_f8e5m2(57344.0f), 0x7b);
  EXPECT_EQ(float_bits::f32_to_f16(0x1p-24f), 0x0001);
  EXPECT_EQ(float_bits::f32_to_f16(0x1p-25f), 0x0000);
  EXPECT_EQ(float_bits::f32_to_f16(-0x1p-25f), 0x8000);
  EXPECT_EQ(float_bits::f32_to_f16(1.5f * 0x1p-25f), 0x0001);
  EXPECT_EQ(float_bits::f32_to_f16(3.0f * 0x1p-25f), 0x0002);  // 1.5 ulp: tie to even (2)
  EXPECT_EQ(float_bits::f32_to_f16(0x1p-14f), 0x0400);         // smallest normal

  EXPECT_EQ(float_bits::f16_to_f32(0x3c00), 1.0f);
  EXPECT_EQ(float_bits::f16_to_f32(0x0001), 0x1p-24f);
  EXPECT_EQ(float_bits::bf16_to_f32(0x3f80), 1.0f);
  EXPECT_EQ(float_bits::f8e4m3_to_f32(0x7e), 448.0f);
  EXPECT_EQ(float_bits::f8e5m2_to_f32(0x7b), 57344.0f);
  EXPECT_TRUE(std::isinf(float_bits::f8e5m2_to_f32(0xfc)));
  EXPECT_LT(float_bits::f8e5m2_to_f32(0xfc), 0.0f);

  // The host types carry the same bits.
  EXPECT_EQ(Half(65504.0f).bits, 0x7bff);
  EXPECT_EQ(BFloat16(1.0f).bits, 0x3f80);
  EXPECT_EQ(Fp8E4M3(1e6f).bits, 0x7e);
  EXPECT_EQ(Fp8E5M2(INFINITY).bits, 0x7b);
  EXPECT_EQ(static_cast<float>(Half::from_bits(0x3555)), float_bits::f16_to_f32(0x3555));
  EXPECT_EQ(static_cast<float>(BFloat16::from_bits(0xbf80)), -1.0f);
  EXPECT_EQ(static_cast<float>(Fp8E4M3::from_bits(0x01)), 0x1p-9f);
  EXPECT_EQ(static_cast<float>(Fp8E5M2::from_bits(0x3c)), 1.0f);
  EXPECT_EQ(Half::from_bits(0x1234).bits, 0x1234);
}
