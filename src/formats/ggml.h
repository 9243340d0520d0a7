// GGML quantized blocks: the byte layouts GGUF files store, and the decoding of one block into
// floats, shared by the CPU reference, the CUDA kernels and the GGUF loader.
//
// Checked against ggml's own sources (ggml-org/llama.cpp): ggml/src/ggml-common.h (block
// structs, QK_K, K_SCALE_SIZE), ggml/src/ggml-quants.c (dequantize_row_q4_0 / q8_0 / q4_K /
// q5_K / q6_K, get_scale_min_k4, quantize_row_q4_0_ref / q8_0_ref), gguf-py/gguf/constants.py
// (type ids and sizes, see mlxn/io/ggml_type.h) and ggml/docs/gguf.md.
//
// Every field is little-endian; f16 fields are held as raw bits (uint16_t). All structs have
// alignment 2 or 1, so a block may sit at any even offset: rows of Q4_0 (18 bytes) and Q8_0
// (34 bytes) blocks are only 2-byte aligned.
//
// Rounding: every product in these decoders is exact in f32 (an f16 significand has 11 bits;
// scale times code adds at most 12 more: Q6_K's 8-bit scale and 6-bit code), so the only
// rounding is the final subtraction of the min in Q4_K / Q5_K. The results therefore do not
// depend on the order of the multiplications or on whether a*b - c is fused: CPU and GPU
// decode to the same bits.
#pragma once

#include <cstdint>
#include <type_traits>

#include "mlxn/io/ggml_type.h"
#include "portable/host_device.h"

namespace mlxn {
// Defined in mlxn/ops/weights.h; named here so that the host helpers below can take it without
// this header (which device code includes) pulling in the ops layer.
enum class WeightFormat : uint8_t;
}  // namespace mlxn

namespace mlxn::formats {

inline constexpr int kQK = 32;           // elements per Q4_0 / Q8_0 block
inline constexpr int kQKK = 256;         // elements per K-quant super-block
inline constexpr int kKScaleBytes = 12;  // packed 6-bit scales and mins of Q4_K / Q5_K

// value = d * (q - 8); qs[j] holds element j (low nibble) and element j + 16 (high nibble).
struct BlockQ4_0 {
  uint16_t d;
  uint8_t qs[kQK / 2];
};

// value = d * q.
struct BlockQ8_0 {
  uint16_t d;
  int8_t qs[kQK];
};

// 8 sub-blocks of 32: value = d * sc[s] * q - dmin * m[s], q 4 bits, sc and m 6 bits packed in
// `scales` (get_scale_min_k4). Bytes qs[32c .. 32c + 32) hold elements 64c + l (low nibble)
// and 64c + 32 + l (high nibble).
struct BlockQ4_K {
  uint16_t d;
  uint16_t dmin;
  uint8_t scales[kKScaleBytes];
  uint8_t qs[kQKK / 2];
};

// As Q4_K with a fifth bit per code: element 64c + l takes bit 2c of qh[l], element
// 64c + 32 + l bit 2c + 1.
struct BlockQ5_K {
  uint16_t d;
  uint16_t dmin;
  uint8_t scales[kKScaleBytes];
  uint8_t qh[kQKK / 8];
  uint8_t qs[kQKK / 2];
};

// 16 sub-blocks of 16: value = d * scales[e / 16] * (q - 32), q 6 bits, scales signed 8 bits.
// For half h (elements 128h ..) and l < 32, the four elements 128h + 32t + l (t = 0..3) take
// their low 4 bits from ql[64h + l] (t = 0: low, t = 2: high nibble) and ql[64h + 32 + l]
// (t = 1: low, t = 3: high), and their top 2 bits from bits 2t of qh[32h + l].
struct BlockQ6_K {
  uint8_t ql[kQKK / 2];
  uint8_t qh[kQKK / 4];
  int8_t scales[kQKK / 16];
  uint16_t d;
};

static_assert(sizeof(BlockQ4_0) == 18 && alignof(BlockQ4_0) == 2);
static_assert(sizeof(BlockQ8_0) == 34 && alignof(BlockQ8_0) == 2);
static_assert(sizeof(BlockQ4_K) == 144 && alignof(BlockQ4_K) == 2);
static_assert(sizeof(BlockQ5_K) == 176 && alignof(BlockQ5_K) == 2);
static_assert(sizeof(BlockQ6_K) == 210 && alignof(BlockQ6_K) == 2);
static_assert(std::is_trivially_copyable_v<BlockQ4_0> && std::is_standard_layout_v<BlockQ4_0>);
static_assert(std::is_trivially_copyable_v<BlockQ8_0> && std::is_standard_layout_v<BlockQ8_0>);
static_assert(std::is_trivially_copyable_v<BlockQ4_K> && std::is_standard_layout_v<BlockQ4_K>);
static_assert(std::is_trivially_copyable_v<BlockQ5_K> && std::is_standard_layout_v<BlockQ5_K>);
static_assert(std::is_trivially_copyable_v<BlockQ6_K> && std::is_standard_layout_v<BlockQ6_K>);

// The block geometry agrees with the GGUF type table (one source of truth per fact, checked).
static_assert(ggml_type_info(GgmlType::q4_0)->block_bytes == sizeof(BlockQ4_0));
static_assert(ggml_type_info(GgmlType::q8_0)->block_bytes == sizeof(BlockQ8_0));
static_assert(ggml_type_info(GgmlType::q4_k)->block_bytes == sizeof(BlockQ4_K));
static_assert(ggml_type_info(GgmlType::q5_k)->block_bytes == sizeof(BlockQ5_K));
static_assert(ggml_type_info(GgmlType::q6_k)->block_bytes == sizeof(BlockQ6_K));
static_assert(ggml_type_info(GgmlType::q4_0)->block_elements == kQK);
static_assert(ggml_type_info(GgmlType::q8_0)->block_elements == kQK);
static_assert(ggml_type_info(GgmlType::q4_k)->block_elements == kQKK);
static_assert(ggml_type_info(GgmlType::q5_k)->block_elements == kQKK);
static_assert(ggml_type_info(GgmlType::q6_k)->block_elements == kQKK);

// f16 bits -> f32, exact for every input: normals and subnormals are represented exactly,
// +-0 and +-inf keep their sign, NaN stays NaN (payload shifted into the f32 mantissa).
MLXN_HD float f16_bits_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exponent = (h >> 10) & 0x1fu;
  const uint32_t mantissa = h & 0x3ffu;
  if (exponent == 0x1fu) return portable::bits_to_float(sign | 0x7f800000u | (mantissa << 13));
  if (exponent != 0) {
    return portable::bits_to_float(sign | ((exponent + 112u) << 23) | (mantissa << 13));
  }
  // Subnormal or zero: mantissa * 2^-24; both factors and the product are exact f32 values.
  const float magnitude = portable::mul_rn(static_cast<float>(mantissa), 0x1p-24f);
  return portable::bits_to_float(sign | portable::float_to_bits(magnitude));
}

// Sub-block j (0..7) of a Q4_K / Q5_K super-block: its 6-bit scale and min. Bytes 0-3 hold the
// scales of sub-blocks 0-3 in their low 6 bits, bytes 4-7 their mins; sub-blocks 4-7 keep
// their low 4 bits in bytes 8-11 (scale low nibble, min high nibble) and their top 2 bits in
// the top bits of bytes 0-3 (scale) and 4-7 (min).
struct ScaleMin {
  uint8_t scale;
  uint8_t min;
};

MLXN_HD ScaleMin get_scale_min_k4(int j, const uint8_t* scales) {
  if (j < 4) {
    return {static_cast<uint8_t>(scales[j] & 63u), static_cast<uint8_t>(scales[j + 4] & 63u)};
  }
  const uint8_t scale = static_cast<uint8_t>((scales[j + 4] & 0x0fu) | ((scales[j - 4] >> 6) << 4));
  const uint8_t min = static_cast<uint8_t>((scales[j + 4] >> 4) | ((scales[j] >> 6) << 4));
  return {scale, min};
}

// The inverse: stores scale and min (each < 64) of sub-block j into `scales`, leaving the
// other sub-blocks' bits as they are. Start from zeroed bytes.
MLXN_HD void set_scale_min_k4(int j, uint8_t scale, uint8_t min, uint8_t* scales) {
  if (j < 4) {
    scales[j] = static_cast<uint8_t>((scales[j] & 0xc0u) | (scale & 63u));
    scales[j + 4] = static_cast<uint8_t>((scales[j + 4] & 0xc0u) | (min & 63u));
    return;
  }
  scales[j + 4] = static_cast<uint8_t>((scale & 0x0fu) | ((min & 0x0fu) << 4));
  scales[j - 4] = static_cast<uint8_t>((scales[j - 4] & 63u) | (((scale >> 4) & 3u) << 6));
  scales[j] = static_cast<uint8_t>((scales[j] & 63u) | (((min >> 4) & 3u) << 6));
}

// Codes of element e of a block, as stored (before any offset is subtracted).
MLXN_HD int q4_0_code(const BlockQ4_0& b, int e) {
  return e < kQK / 2 ? (b.qs[e] & 0x0f) : (b.qs[e - kQK / 2] >> 4);
}
MLXN_HD int q4_k_code(const BlockQ4_K& b, int e) {  // 0..15
  const int chunk = e >> 6, l = e & 31;
  const uint8_t byte = b.qs[32 * chunk + l];
  return (e & 32) ? (byte >> 4) : (byte & 0x0f);
}
MLXN_HD int q5_k_code(const BlockQ5_K& b, int e) {  // 0..31
  const int chunk = e >> 6, l = e & 31, high_half = (e >> 5) & 1;
  const uint8_t byte = b.qs[32 * chunk + l];
  const int low = high_half ? (byte >> 4) : (byte & 0x0f);
  return low | (((b.qh[l] >> (2 * chunk + high_half)) & 1) << 4);
}
MLXN_HD int q6_k_code(const BlockQ6_K& b, int e) {  // 0..63
  const int half = e >> 7, t = (e >> 5) & 3, l = e & 31;
  const uint8_t byte = b.ql[64 * half + 32 * (t & 1) + l];
  const int low = (t & 2) ? (byte >> 4) : (byte & 0x0f);
  return low | (((b.qh[32 * half + l] >> (2 * t)) & 3) << 4);
}

// Values per block of each block type.
template <class Block>
inline constexpr int kBlockElements = kQKK;
template <>
inline constexpr int kBlockElements<BlockQ4_0> = kQK;
template <>
inline constexpr int kBlockElements<BlockQ8_0> = kQK;

// Element e of a block as f32, exactly as ggml's dequantize_row_* computes it. The one source of
// these formulas: the CPU reference, dequantize_block and the CUDA kernels all call it.
MLXN_HD float dequantize_element(const BlockQ4_0& b, int e) {
  return portable::mul_rn(static_cast<float>(q4_0_code(b, e) - 8), f16_bits_to_float(b.d));
}

MLXN_HD float dequantize_element(const BlockQ8_0& b, int e) {
  return portable::mul_rn(static_cast<float>(b.qs[e]), f16_bits_to_float(b.d));
}

// Q4_K / Q5_K: y = (d * sc) * q - (dmin * m), sc and m those of sub-block e / 32.
template <class Block>
MLXN_HD float dequantize_k45_element(const Block& b, int e, int code) {
  const ScaleMin sm = get_scale_min_k4(e / 32, b.scales);
  const float ds = portable::mul_rn(f16_bits_to_float(b.d), static_cast<float>(sm.scale));
  const float ms = portable::mul_rn(f16_bits_to_float(b.dmin), static_cast<float>(sm.min));
  return portable::add_rn(portable::mul_rn(ds, static_cast<float>(code)), -ms);
}

MLXN_HD float dequantize_element(const BlockQ4_K& b, int e) {
  return dequantize_k45_element(b, e, q4_k_code(b, e));
}

MLXN_HD float dequantize_element(const BlockQ5_K& b, int e) {
  return dequantize_k45_element(b, e, q5_k_code(b, e));
}

// y = (d * sc) * (q - 32), sc that of sub-block e / 16.
MLXN_HD float dequantize_element(const BlockQ6_K& b, int e) {
  const float ds = portable::mul_rn(f16_bits_to_float(b.d), static_cast<float>(b.scales[e >> 4]));
  return portable::mul_rn(ds, static_cast<float>(q6_k_code(b, e) - 32));
}

// Decoding one block into `out` (kQK or kQKK floats), exactly as ggml's dequantize_row_*.
template <class Block>
MLXN_HD void dequantize_block(const Block& b, float* out) {
  for (int e = 0; e < kBlockElements<Block>; ++e) out[e] = dequantize_element(b, e);
}

// ---- Host helpers (ggml.cpp) -----------------------------------------------------------------

// The GGUF type whose blocks hold `format` (q4_0 q8_0 q4_k q5_k q6_k); throws for the others.
GgmlType ggml_type_of(WeightFormat format);
// The block format of a GGUF tensor type: true and `*format` set for Q4_0 Q8_0 Q4_K Q5_K Q6_K,
// false for every other type (plain types included).
bool block_weight_format(GgmlType type, WeightFormat* format);

// k values (a multiple of the format's block size) from k / block_elements blocks at `blocks`
// (any alignment). Bit-identical to dequantize_block and to ggml's dequantize_row_*.
void dequantize_row(WeightFormat format, const uint8_t* blocks, int64_t k, float* out);

// Encodes k values (a multiple of the block size) into k / block_elements blocks at `blocks`.
//  q8_0, q4_0: ggml's reference quantizers (quantize_row_q8_0_ref / q4_0_ref), code for code:
//    q8_0: d = amax / 127, q = roundf(x / d) (half away from zero), computed as x * (1 / d);
//    q4_0: m = the first element of largest magnitude, d = m / -8 (so a zero block stores
//          d = -0), q = min(15, trunc(x * (1 / d) + 8.5)), the product and the sum rounded
//          separately (never fused).
//    The codes use the f32 d; the stored d is d rounded to f16 (nearest even).
//  q4_k, q5_k, q6_k: a direct min/max encoder, simpler than ggml's search-based reference: each
//    sub-block's range [min(0, lo), hi] (q6_k: [-amax, amax]) is covered by its effective scale
//    (scales rounded up, never down), codes round to nearest, so every finite input comes back
//    within half its sub-block's step. Non-finite inputs, or values so large that the f16
//    super-scale overflows, throw Error("[ggml] ...").
void quantize_row(WeightFormat format, const float* x, int64_t k, uint8_t* blocks);

}  // namespace mlxn::formats
