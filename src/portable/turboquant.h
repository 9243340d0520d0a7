// TurboQuant pieces shared by the CPU reference and the CUDA kernels, bit for bit: the sign
// stream, the power-of-two prescale, and the layout constants that fix the order of every
// floating-point reduction (docs/turboquant.md, "Arithmetic order").
#pragma once

#include "portable/host_device.h"

namespace mlxn::tq {

// Coordinates are processed in groups of 16 consecutive ones (one GPU lane each): partial sums
// run sequentially (fma) inside a group, then groups combine pairwise, partner = g xor m for
// m = G/2, ..., 1 (G = D / 16 groups).
inline constexpr int kGroup = 16;

// s_j = -1 when bit (j mod 64) of word floor(j / 64) of the splitmix64 stream seeded with
// kSignSeed is set, else +1. The same stream for every D, K, V, Q, layer and head.
inline constexpr uint64_t kSignSeed = 0x54757262'6F517561ull;  // "TurboQua"

MLXN_HD uint64_t sign_word(uint64_t k) {
  uint64_t z = kSignSeed + (k + 1) * 0x9E3779B97F4A7C15ull;  // splitmix64, output k
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

MLXN_HD bool sign_is_negative(int j) {
  return (sign_word(static_cast<uint64_t>(j) >> 6) >> (j & 63)) & 1u;
}

// Sign bits of coordinates [first, first + 16) (first a multiple of 16), bit e for first + e:
// one sign word per GPU lane instead of one per coordinate.
MLXN_HD uint32_t sign_bits16(int first) {
  return static_cast<uint32_t>(sign_word(static_cast<uint64_t>(first) >> 6) >> (first & 63)) &
         0xffffu;
}

// floor(log2(a)) for finite a > 0, subnormals included.
MLXN_HD int exponent_of(float a) {
  const uint32_t bits = portable::float_to_bits(a);
  const int field = static_cast<int>((bits >> 23) & 0xffu);
  if (field != 0) return field - 127;
  const uint32_t mantissa = bits & 0x7fffffu;
#if defined(__CUDA_ARCH__)
  const int top = 31 - __clz(mantissa);
#else
  const int top = 31 - __builtin_clz(mantissa);
#endif
  return top - 149;
}

// 2^e as a float for |e| <= 126.
MLXN_HD float pow2(int e) { return portable::bits_to_float(static_cast<uint32_t>(e + 127) << 23); }

// x * 2^e in two exact-power steps (each factor a normal float), so any float can be brought
// to [1, 2) and back; identical on host and device.
MLXN_HD float scale_pow2(float x, int e) {
  const int half = e / 2;
  return portable::mul_rn(portable::mul_rn(x, pow2(half)), pow2(e - half));
}

// 1/sqrt(D) and sqrt(D) rounded to f32, for D in {64, 128, 256, 512}.
MLXN_HD float inv_sqrt_dim(int d) {
  return d == 64 ? 0.125f : d == 128 ? 0.0883883476f : d == 256 ? 0.0625f : 0.0441941738f;
}
MLXN_HD float sqrt_dim(int d) {
  return d == 64 ? 8.0f : d == 128 ? 11.3137085f : d == 256 ? 16.0f : 22.6274170f;
}

// |alpha| above the fp16 range saturates (the spec's rule); NaN cannot occur here.
MLXN_HD float clamp_to_half_range(float a) {
  return a > 65504.0f ? 65504.0f : (a < -65504.0f ? -65504.0f : a);
}

}  // namespace mlxn::tq
