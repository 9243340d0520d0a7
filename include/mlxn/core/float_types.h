// Host representations of the narrow float dtypes and their conversions to and from f32.
// Rounding is to nearest, ties to even, exactly as the GPU's cvt.rn instructions do, so a value
// converted on the host and on the device has the same bits. Chosen conventions (the GPU's):
//  - f32 -> f16/bf16: overflow goes to +-inf; any NaN becomes the canonical NaN 0x7fff.
//  - f32 -> fp8 (e4m3, e5m2): saturating: +-inf and finite overflow become +-max finite
//    (448, 57344); NaN becomes 0x7f. This is what a scaled fp8 KV cache wants.
//  - widening to f32 is exact; NaN payloads are not guaranteed to survive.
#pragma once

#include <bit>
#include <cmath>
#include <cstdint>

namespace mlxn {

namespace float_bits {

inline uint16_t f32_to_f16(float f) {
  const uint32_t x = std::bit_cast<uint32_t>(f);
  const uint32_t sign = (x >> 16) & 0x8000u;
  const uint32_t ax = x & 0x7fffffffu;
  if (ax > 0x7f800000u) return 0x7fffu;
  if (ax >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // >= 65520 rounds to inf
  if (ax < 0x38800000u) {                                               // f16 subnormal or zero
    if (ax <= 0x33000000u) return static_cast<uint16_t>(sign);          // <= 2^-25 ties to 0
    const uint32_t e = ax >> 23;
    const uint32_t m = (ax & 0x7fffffu) | 0x800000u;
    const uint32_t shift = 126u - e;  // units of 2^-24
    uint32_t q = m >> shift;
    const uint32_t rem = m & ((1u << shift) - 1u);
    const uint32_t half = 1u << (shift - 1u);
    if (rem > half || (rem == half && (q & 1u))) ++q;
    return static_cast<uint16_t>(sign | q);
  }
  uint32_t h = (((ax >> 23) - 112u) << 10) | ((ax & 0x7fffffu) >> 13);
  const uint32_t rem = ax & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) ++h;  // a carry moves into the exponent
  return static_cast<uint16_t>(sign | h);
}

inline float f16_to_f32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t e = (h >> 10) & 0x1fu;
  const uint32_t m = h & 0x3ffu;
  if (e == 0) {
    const float magnitude = std::ldexp(static_cast<float>(m), -24);
    return std::bit_cast<float>(sign | std::bit_cast<uint32_t>(magnitude));
  }
  if (e == 31) return std::bit_cast<float>(sign | 0x7f800000u | (m << 13));
  return std::bit_cast<float>(sign | ((e + 112u) << 23) | (m << 13));
}

inline uint16_t f32_to_bf16(float f) {
  const uint32_t x = std::bit_cast<uint32_t>(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return 0x7fffu;
  return static_cast<uint16_t>((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}

inline float bf16_to_f32(uint16_t b) {
  return std::bit_cast<float>(static_cast<uint32_t>(b) << 16);
}

// Shared by both fp8 formats: kMan mantissa bits, kBias exponent bias, kMaxCode the largest
// finite code, kMax its value.
template <int kMan, int kBias, uint8_t kMaxCode>
inline uint8_t f32_to_fp8(float f, float max_value) {
  const uint32_t x = std::bit_cast<uint32_t>(f);
  const uint8_t sign = static_cast<uint8_t>((x >> 24) & 0x80u);
  if ((x & 0x7fffffffu) > 0x7f800000u) return 0x7fu;
  const float a = std::fabs(f);
  if (a >= max_value) return static_cast<uint8_t>(sign | kMaxCode);
  constexpr int kMinExp = 1 - kBias;
  int e = static_cast<int>((std::bit_cast<uint32_t>(a) >> 23) & 0xffu) - 127;
  if (e < kMinExp) e = kMinExp;
  // a / 2^(e - kMan) is exact (power-of-two scaling); rint rounds half to even.
  const float n = std::rint(std::ldexp(a, kMan - e));
  auto units = static_cast<uint32_t>(n);
  if (units == 0) return sign;
  uint32_t code;
  if (e == kMinExp && units < (1u << kMan)) {
    code = units;  // subnormal
  } else {
    if (units == (2u << kMan)) {
      units = 1u << kMan;
      ++e;
    }
    code = (static_cast<uint32_t>(e + kBias) << kMan) | (units - (1u << kMan));
  }
  if (code > kMaxCode) code = kMaxCode;
  return static_cast<uint8_t>(sign | code);
}

inline uint8_t f32_to_f8e4m3(float f) { return f32_to_fp8<3, 7, 0x7e>(f, 448.0f); }
inline uint8_t f32_to_f8e5m2(float f) { return f32_to_fp8<2, 15, 0x7b>(f, 57344.0f); }

inline float f8e4m3_to_f32(uint8_t b) {
  const float sign = (b & 0x80u) ? -1.0f : 1.0f;
  if ((b & 0x7fu) == 0x7fu) return std::nanf("");
  const int e = (b >> 3) & 0xf;
  const int m = b & 0x7;
  if (e == 0) return sign * std::ldexp(static_cast<float>(m), -9);
  return sign * std::ldexp(static_cast<float>(8 + m), e - 10);
}

inline float f8e5m2_to_f32(uint8_t b) {
  const float sign = (b & 0x80u) ? -1.0f : 1.0f;
  const int e = (b >> 2) & 0x1f;
  const int m = b & 0x3;
  if (e == 31) return m == 0 ? sign * INFINITY : std::nanf("");
  if (e == 0) return sign * std::ldexp(static_cast<float>(m), -16);
  return sign * std::ldexp(static_cast<float>(4 + m), e - 17);
}

}  // namespace float_bits

// Storage-only host types: they hold bits and convert through float.
#define MLXN_HOST_FLOAT_TYPE(Name, Storage, encode, decode)                           \
  struct Name {                                                                       \
    Storage bits = 0;                                                                 \
    Name() = default;                                                                 \
    explicit Name(float f) : bits(float_bits::encode(f)) {}                           \
    static Name from_bits(Storage b) {                                                \
      Name v;                                                                         \
      v.bits = b;                                                                     \
      return v;                                                                       \
    }                                                                                 \
    operator float() const { return float_bits::decode(bits); } /* NOLINT implicit */ \
  }

MLXN_HOST_FLOAT_TYPE(Half, uint16_t, f32_to_f16, f16_to_f32);
MLXN_HOST_FLOAT_TYPE(BFloat16, uint16_t, f32_to_bf16, bf16_to_f32);
MLXN_HOST_FLOAT_TYPE(Fp8E4M3, uint8_t, f32_to_f8e4m3, f8e4m3_to_f32);
MLXN_HOST_FLOAT_TYPE(Fp8E5M2, uint8_t, f32_to_f8e5m2, f8e5m2_to_f32);
#undef MLXN_HOST_FLOAT_TYPE

}  // namespace mlxn
