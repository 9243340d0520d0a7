// Code under src/portable/ is compiled by both the host compiler and nvcc and must produce the
// same bits on both. Floating-point expressions here use the explicit helpers below (one
// rounding each, never contracted into an FMA behind our back), and fma() where a fused
// multiply-add is meant: std::fma and the GPU's fma are both correctly rounded.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define MLXN_HD __host__ __device__ __forceinline__
#else
#define MLXN_HD inline
#include <cmath>
#endif

namespace mlxn::portable {

MLXN_HD float add_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}

MLXN_HD float mul_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}

MLXN_HD float div_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fdiv_rn(a, b);
#else
  return a / b;
#endif
}

MLXN_HD float fma_rn(float a, float b, float c) {
#if defined(__CUDA_ARCH__)
  return __fmaf_rn(a, b, c);
#else
  return std::fma(a, b, c);
#endif
}

MLXN_HD float sqrt_rn(float a) {
#if defined(__CUDA_ARCH__)
  return __fsqrt_rn(a);
#else
  return std::sqrt(a);
#endif
}

MLXN_HD float bits_to_float(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float f;
  __builtin_memcpy(&f, &u, sizeof f);
  return f;
#endif
}

MLXN_HD uint32_t float_to_bits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  uint32_t u;
  __builtin_memcpy(&u, &f, sizeof u);
  return u;
#endif
}

}  // namespace mlxn::portable
