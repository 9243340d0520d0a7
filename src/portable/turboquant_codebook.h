// Codebook values from the shipped magnitudes (tq_codebooks.h; host arrays there, device
// __constant__ copies in the CUDA backend), one rule for host and device:
// centroid c of a b-bit book is -m[h-1-c] for c < h, else m[c-h] (h = 2^(b-1), m ascending);
// boundary k is the midpoint (C[k] + C[k+1]) * 0.5 rounded in f32.
#pragma once

#include "portable/host_device.h"
#include "portable/tq_codebooks.h"

namespace mlxn::tq {

MLXN_HD float centroid(const float* magnitudes, int bits, int c) {
  const int half = 1 << (bits - 1);
  return c < half ? -magnitudes[half - 1 - c] : magnitudes[c - half];
}

MLXN_HD float boundary(const float* magnitudes, int bits, int k) {
  return portable::mul_rn(
      portable::add_rn(centroid(magnitudes, bits, k), centroid(magnitudes, bits, k + 1)), 0.5f);
}

}  // namespace mlxn::tq
