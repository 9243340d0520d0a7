// Counter-based random numbers, identical on host and device: element i of a seeded fill gets
// the same value whatever the backend, launch shape or memory layout.
//
// Bits: Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC'11) with
// counter (i mod 2^32, i / 2^32, 0, 0) and key (seed mod 2^32, seed / 2^32).
// Uniform: word 0 -> (w >> 8) * 2^-24 in [0, 1), then low + (high - low) * u as one fma.
// Normal: Box-Muller on words 0 and 1, with log and cos written here from +, *, fma and sqrt
// only (no libm), so that host and device agree to the bit. Accuracy ~1e-7 relative.
#pragma once

#include "portable/host_device.h"

namespace mlxn::portable {

struct Philox4 {
  uint32_t w[4];
};

MLXN_HD Philox4 philox4x32_10(uint64_t counter, uint64_t seed) {
  uint32_t c0 = static_cast<uint32_t>(counter), c1 = static_cast<uint32_t>(counter >> 32);
  uint32_t c2 = 0, c3 = 0;
  uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
  for (int round = 0; round < 10; ++round) {
    const uint64_t p0 = static_cast<uint64_t>(0xD2511F53u) * c0;
    const uint64_t p1 = static_cast<uint64_t>(0xCD9E8D57u) * c2;
    const uint32_t hi0 = static_cast<uint32_t>(p0 >> 32), lo0 = static_cast<uint32_t>(p0);
    const uint32_t hi1 = static_cast<uint32_t>(p1 >> 32), lo1 = static_cast<uint32_t>(p1);
    c0 = hi1 ^ c1 ^ k0;
    c1 = lo1;
    c2 = hi0 ^ c3 ^ k1;
    c3 = lo0;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  return Philox4{{c0, c1, c2, c3}};
}

// [0, 1) with 24 random bits: exact in f32.
MLXN_HD float unit_interval(uint32_t w) { return mul_rn(static_cast<float>(w >> 8), 0x1p-24f); }

// Natural log for x in (0, 1]: x = m * 2^e with m in [sqrt(1/2), sqrt(2)), log m = 2 atanh(s),
// s = (m - 1) / (m + 1), |s| < 0.1716, odd series through s^13.
MLXN_HD float log_unit(float x) {
  uint32_t bits = float_to_bits(x);
  int e = static_cast<int>((bits >> 23) & 0xffu) - 127;
  bits = (bits & 0x007fffffu) | 0x3f800000u;  // m in [1, 2)
  float m = bits_to_float(bits);
  if (m > 1.41421356f) {
    m = mul_rn(m, 0.5f);
    e += 1;
  }
  const float s = div_rn(add_rn(m, -1.0f), add_rn(m, 1.0f));
  const float s2 = mul_rn(s, s);
  float poly = 1.0f / 13.0f;
  poly = fma_rn(poly, s2, 1.0f / 11.0f);
  poly = fma_rn(poly, s2, 1.0f / 9.0f);
  poly = fma_rn(poly, s2, 1.0f / 7.0f);
  poly = fma_rn(poly, s2, 1.0f / 5.0f);
  poly = fma_rn(poly, s2, 1.0f / 3.0f);
  poly = fma_rn(poly, s2, 1.0f);
  const float log_m = mul_rn(mul_rn(2.0f, s), poly);
  return fma_rn(static_cast<float>(e), 0.693147180559945f, log_m);
}

// sin and cos of x in [0, pi/2] by Taylor series through x^13 / x^12 (error < 1e-9).
MLXN_HD float sin_quarter(float x) {
  const float x2 = mul_rn(x, x);
  float p = 1.0f / 6227020800.0f;
  p = fma_rn(p, x2, -1.0f / 39916800.0f);
  p = fma_rn(p, x2, 1.0f / 362880.0f);
  p = fma_rn(p, x2, -1.0f / 5040.0f);
  p = fma_rn(p, x2, 1.0f / 120.0f);
  p = fma_rn(p, x2, -1.0f / 6.0f);
  return fma_rn(mul_rn(p, x2), x, x);
}

MLXN_HD float cos_quarter(float x) {
  const float x2 = mul_rn(x, x);
  float p = 1.0f / 479001600.0f;
  p = fma_rn(p, x2, -1.0f / 3628800.0f);
  p = fma_rn(p, x2, 1.0f / 40320.0f);
  p = fma_rn(p, x2, -1.0f / 720.0f);
  p = fma_rn(p, x2, 1.0f / 24.0f);
  p = fma_rn(p, x2, -0.5f);
  return fma_rn(p, x2, 1.0f);
}

// cos(2 pi t) for t = k * 2^-24 in [0, 1): the quadrant and its fraction are exact.
MLXN_HD float cos_two_pi(float t) {
  const float four_t = mul_rn(t, 4.0f);
  const int quadrant = static_cast<int>(four_t);
  const float x = mul_rn(add_rn(four_t, -static_cast<float>(quadrant)), 1.57079632679489662f);
  switch (quadrant) {
    case 0:
      return cos_quarter(x);
    case 1:
      return -sin_quarter(x);
    case 2:
      return -cos_quarter(x);
    default:
      return sin_quarter(x);
  }
}

MLXN_HD float random_uniform(uint64_t index, uint64_t seed, float low, float range) {
  const Philox4 r = philox4x32_10(index, seed);
  return fma_rn(range, unit_interval(r.w[0]), low);
}

MLXN_HD float random_normal(uint64_t index, uint64_t seed, float mean, float stddev) {
  const Philox4 r = philox4x32_10(index, seed);
  const float u1 = mul_rn(static_cast<float>((r.w[0] >> 8) + 1u), 0x1p-24f);  // (0, 1]
  const float u2 = unit_interval(r.w[1]);
  const float radius = sqrt_rn(mul_rn(-2.0f, log_unit(u1)));
  return fma_rn(stddev, mul_rn(radius, cos_two_pi(u2)), mean);
}

}  // namespace mlxn::portable
