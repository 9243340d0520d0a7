// What the CPU and CUDA samplers must compute identically: the order-preserving key of a logit,
// the fixed-point unit of probability mass, and the uniform variate behind each token's Gumbel
// noise.
#pragma once

#include "portable/counter_rng.h"
#include "portable/host_device.h"

namespace mlxn::portable {

// Larger float -> larger key; -0 and +0 adjacent; -inf lowest of the non-NaN values.
MLXN_HD uint32_t order_key(float z) {
  const uint32_t u = float_to_bits(z);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

// Probability mass in units of 2^-40: a vocabulary's total stays far below 2^64, and sums of
// integers do not depend on the order of addition.
inline constexpr float kMassScale = 0x1p40f;

// Uniform in (0, 1) with 24 random bits for token `index` of a row with `seed` at `step`.
MLXN_HD float sampling_uniform(uint64_t seed, uint64_t step, uint32_t index) {
  const Philox4 r = philox4x32_10((step << 32) | index, seed);
  return mul_rn(add_rn(static_cast<float>(r.w[0] >> 8), 0.5f), 0x1p-24f);
}

}  // namespace mlxn::portable
