// MLX affine quantization layout (mx.quantize, mode "affine"), shared by host and device code.
// A row of K codes of `bits` bits is a little-endian bit stream: code k occupies bits
// [k·bits, (k+1)·bits) of the row's bytes (for bits 2, 4, 8 this is "32/bits codes per u32,
// code j at bits [j·bits, ...)"; for 3, 5, 6 it is MLX's 8 codes per 3 / 5 bytes and 4 codes per
// 3 bytes). Groups of group_size consecutive codes share a scale and a bias: w = scale·q + bias.
#pragma once

#include <cstdint>

#include "portable/host_device.h"

namespace mlxn::formats {

MLXN_HD constexpr bool mlx_affine_bits_supported(int bits) {
  return bits == 2 || bits == 3 || bits == 4 || bits == 5 || bits == 6 || bits == 8;
}
MLXN_HD constexpr bool mlx_affine_group_supported(int group_size) {
  return group_size == 32 || group_size == 64 || group_size == 128;
}

// Code k of a row. A code of at most 8 bits spans at most two bytes; the second byte is read
// only when the code reaches into it, so the last code never reads past the row.
MLXN_HD uint32_t mlx_affine_code(const uint8_t* row, int64_t k, int bits) {
  const int64_t bit = k * bits;
  const int64_t byte = bit >> 3;
  const int shift = static_cast<int>(bit & 7);
  uint32_t window = row[byte];
  if (shift + bits > 8) window |= static_cast<uint32_t>(row[byte + 1]) << 8;
  return (window >> shift) & ((1u << bits) - 1u);
}

// The one dequantization formula, f32 with a single rounding (CPU and GPU agree bit for bit).
MLXN_HD float mlx_affine_value(uint32_t code, float scale, float bias) {
  return portable::fma_rn(scale, static_cast<float>(code), bias);
}

}  // namespace mlxn::formats
