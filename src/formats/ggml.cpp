#include "formats/ggml.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

#include "mlxn/core/error.h"
#include "mlxn/core/float_types.h"
#include "mlxn/ops/weights.h"

namespace mlxn::formats {

namespace {

struct BlockShape {
  int64_t elements;
  int64_t bytes;
};

BlockShape block_shape(WeightFormat format, const char* what) {
  switch (format) {
    case WeightFormat::q4_0:
      return {kQK, sizeof(BlockQ4_0)};
    case WeightFormat::q8_0:
      return {kQK, sizeof(BlockQ8_0)};
    case WeightFormat::q4_k:
      return {kQKK, sizeof(BlockQ4_K)};
    case WeightFormat::q5_k:
      return {kQKK, sizeof(BlockQ5_K)};
    case WeightFormat::q6_k:
      return {kQKK, sizeof(BlockQ6_K)};
    case WeightFormat::dense:
    case WeightFormat::mlx_affine:
      break;
  }
  throw Error("ggml", std::string(what) + ": weight format " +
                          std::to_string(static_cast<int>(format)) +
                          " is not a GGML block format (supported: q4_0, q8_0, q4_k, q5_k, q6_k)");
}

void check_length(WeightFormat format, int64_t k, const BlockShape& shape, const char* what) {
  if (k < 0 || k % shape.elements != 0) {
    throw Error("ggml", std::string(what) + ": " + std::to_string(k) + " values of " +
                            ggml_type_name(ggml_type_of(format)) + " are not a multiple of " +
                            std::to_string(shape.elements));
  }
}

// Blocks may sit at any even (or odd) address: copy each into an aligned local.
template <class Block>
void dequantize_blocks(const uint8_t* blocks, int64_t count, float* out, int64_t elements) {
  for (int64_t i = 0; i < count; ++i) {
    Block b;
    std::memcpy(&b, blocks + i * static_cast<int64_t>(sizeof(Block)), sizeof(Block));
    dequantize_block(b, out + i * elements);
  }
}

// C's float -> int8_t conversion of the reference quantizers (truncation toward zero), made
// total: the reference is undefined outside the int8 range and for NaN, which only non-finite
// inputs reach.
int truncate_to_int8(float v) {
  if (!(v == v)) return 0;
  if (v >= 127.0f) return 127;
  if (v <= -128.0f) return -128;
  return static_cast<int>(v);
}

void quantize_q8_0(const float* x, int64_t blocks, uint8_t* out) {
  for (int64_t i = 0; i < blocks; ++i) {
    const float* xb = x + i * kQK;
    float amax = 0.0f;
    for (int j = 0; j < kQK; ++j) {
      const float a = std::fabs(xb[j]);
      amax = amax > a ? amax : a;  // the reference's MAX(), NaN handling included
    }
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    BlockQ8_0 b{};
    b.d = float_bits::f32_to_f16(d);
    for (int j = 0; j < kQK; ++j) {
      b.qs[j] = static_cast<int8_t>(truncate_to_int8(std::round(xb[j] * id)));
    }
    std::memcpy(out + i * static_cast<int64_t>(sizeof b), &b, sizeof b);
  }
}

void quantize_q4_0(const float* x, int64_t blocks, uint8_t* out) {
  for (int64_t i = 0; i < blocks; ++i) {
    const float* xb = x + i * kQK;
    float amax = 0.0f;
    float max = 0.0f;
    for (int j = 0; j < kQK; ++j) {
      if (amax < std::fabs(xb[j])) {
        amax = std::fabs(xb[j]);
        max = xb[j];
      }
    }
    const float d = max / -8.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    BlockQ4_0 b{};
    b.d = float_bits::f32_to_f16(d);
    for (int j = 0; j < kQK / 2; ++j) {
      const int lo = std::min(15, truncate_to_int8(xb[j] * id + 8.5f));
      const int hi = std::min(15, truncate_to_int8(xb[j + kQK / 2] * id + 8.5f));
      b.qs[j] = static_cast<uint8_t>((lo & 0x0f) | ((hi & 0x0f) << 4));
    }
    std::memcpy(out + i * static_cast<int64_t>(sizeof b), &b, sizeof b);
  }
}

// ---- the simple K-quant encoders ----

// The smallest f16 (bits) whose value times `levels` is at least `need` (need >= 0, finite).
// Rounding the super-scale up keeps every sub-block scale representable with <= levels steps.
uint16_t f16_covering(float need, float levels, const char* format) {
  uint16_t bits = float_bits::f32_to_f16(need / levels);
  while (float_bits::f16_to_f32(bits) * levels < need) ++bits;  // positive: next f16 up
  if (!std::isfinite(float_bits::f16_to_f32(bits))) {
    throw Error("ggml", std::string(format) + ": values too large for an f16 super-block scale (" +
                            std::to_string(need) + ")");
  }
  return bits;
}

// ceil(v / unit) clamped to [0, limit]; 0 when unit is 0.
int steps_up(float v, float unit, int limit) {
  if (!(unit > 0.0f) || !(v > 0.0f)) return 0;
  const float q = std::ceil(v / unit);
  return q >= static_cast<float>(limit) ? limit : static_cast<int>(q);
}

int round_clamp(float v, int lo, int hi) {
  const float r = std::nearbyint(v);
  if (!(r >= static_cast<float>(lo))) return lo;
  if (r >= static_cast<float>(hi)) return hi;
  return static_cast<int>(r);
}

void require_finite(const float* x, int64_t k, const char* format) {
  for (int64_t i = 0; i < k; ++i) {
    if (!std::isfinite(x[i])) {
      throw Error("ggml", std::string(format) + ": non-finite value " + std::to_string(x[i]) +
                              " at index " + std::to_string(i));
    }
  }
}

// Q4_K / Q5_K: per sub-block of 32, the range [lo, hi] with lo = min(0, min x) is covered by
// [-m, -m + n * s] where m = dmin * lm >= -lo (lm rounded up) and s = d * ls >= (hi + m) / n
// (ls rounded up), n = 2^bits - 1. Codes round to nearest, so |error| <= s / 2 (plus f32
// rounding of the comparisons).
struct AsymmetricSubBlocks {
  uint16_t d = 0, dmin = 0;
  uint8_t ls[8] = {}, lm[8] = {};
  float step[8] = {}, offset[8] = {};
};

AsymmetricSubBlocks fit_asymmetric(const float* x, int levels, const char* format) {
  float lo[8], hi[8];
  float max_min = 0.0f;
  for (int s = 0; s < 8; ++s) {
    lo[s] = 0.0f;
    hi[s] = x[32 * s];
    for (int l = 0; l < 32; ++l) {
      lo[s] = std::min(lo[s], x[32 * s + l]);
      hi[s] = std::max(hi[s], x[32 * s + l]);
    }
    max_min = std::max(max_min, -lo[s]);
  }
  AsymmetricSubBlocks fit;
  fit.dmin = f16_covering(max_min, 63.0f, format);
  const float dmin = float_bits::f16_to_f32(fit.dmin);
  float need[8];
  float max_need = 0.0f;
  for (int s = 0; s < 8; ++s) {
    fit.lm[s] = static_cast<uint8_t>(steps_up(-lo[s], dmin, 63));
    fit.offset[s] = dmin * static_cast<float>(fit.lm[s]);
    need[s] = std::max(0.0f, (hi[s] + fit.offset[s]) / static_cast<float>(levels));
    max_need = std::max(max_need, need[s]);
  }
  fit.d = f16_covering(max_need, 63.0f, format);
  const float d = float_bits::f16_to_f32(fit.d);
  for (int s = 0; s < 8; ++s) {
    fit.ls[s] = static_cast<uint8_t>(steps_up(need[s], d, 63));
    fit.step[s] = d * static_cast<float>(fit.ls[s]);
  }
  return fit;
}

int asymmetric_code(float x, float step, float offset, int levels) {
  if (step == 0.0f) return 0;
  return round_clamp((x + offset) / step, 0, levels);
}

// Q4_K and Q5_K share the sub-block fit and the low-nibble layout; Q5_K adds a fifth bit per
// code in qh (bit 2c + high_half of qh[l] for element 64c + 32·high_half + l).
template <class Block, bool Fifth>
void quantize_k45(const float* x, int64_t blocks, uint8_t* out, const char* name) {
  constexpr int kLevels = Fifth ? 31 : 15;
  for (int64_t i = 0; i < blocks; ++i) {
    const float* xb = x + i * kQKK;
    const AsymmetricSubBlocks fit = fit_asymmetric(xb, kLevels, name);
    Block b{};
    b.d = fit.d;
    b.dmin = fit.dmin;
    for (int s = 0; s < 8; ++s) set_scale_min_k4(s, fit.ls[s], fit.lm[s], b.scales);
    for (int e = 0; e < kQKK; ++e) {
      const int q = asymmetric_code(xb[e], fit.step[e / 32], fit.offset[e / 32], kLevels);
      const int chunk = e >> 6, l = e & 31, high_half = (e >> 5) & 1;
      uint8_t& byte = b.qs[32 * chunk + l];
      byte = static_cast<uint8_t>(high_half ? (byte | ((q & 15) << 4)) : (byte | (q & 15)));
      if constexpr (Fifth) {
        b.qh[l] = static_cast<uint8_t>(b.qh[l] | ((q >> 4) << (2 * chunk + high_half)));
      }
    }
    std::memcpy(out + i * static_cast<int64_t>(sizeof b), &b, sizeof b);
  }
}

// Q6_K: per sub-block of 16, the symmetric range [-amax, amax] is covered by codes -31..31
// of step s = d * sc >= amax / 31 (sc rounded up, positive); code -32 goes unused.
void quantize_q6_k(const float* x, int64_t blocks, uint8_t* out) {
  for (int64_t i = 0; i < blocks; ++i) {
    const float* xb = x + i * kQKK;
    float need[16];
    float max_need = 0.0f;
    for (int s = 0; s < 16; ++s) {
      float amax = 0.0f;
      for (int l = 0; l < 16; ++l) amax = std::max(amax, std::fabs(xb[16 * s + l]));
      need[s] = amax / 31.0f;
      max_need = std::max(max_need, need[s]);
    }
    BlockQ6_K b{};
    b.d = f16_covering(max_need, 127.0f, "q6_k");
    const float d = float_bits::f16_to_f32(b.d);
    float step[16];
    for (int s = 0; s < 16; ++s) {
      const int sc = steps_up(need[s], d, 127);
      b.scales[s] = static_cast<int8_t>(sc);
      step[s] = d * static_cast<float>(sc);
    }
    for (int e = 0; e < kQKK; ++e) {
      const float st = step[e >> 4];
      const int q = (st == 0.0f ? 0 : round_clamp(xb[e] / st, -32, 31)) + 32;
      const int half = e >> 7, t = (e >> 5) & 3, l = e & 31;
      uint8_t& low = b.ql[64 * half + 32 * (t & 1) + l];
      low = static_cast<uint8_t>((t & 2) ? (low | ((q & 15) << 4)) : (low | (q & 15)));
      uint8_t& high = b.qh[32 * half + l];
      high = static_cast<uint8_t>(high | ((q >> 4) << (2 * t)));
    }
    std::memcpy(out + i * static_cast<int64_t>(sizeof b), &b, sizeof b);
  }
}

}  // namespace

GgmlType ggml_type_of(WeightFormat format) {
  switch (format) {
    case WeightFormat::q4_0:
      return GgmlType::q4_0;
    case WeightFormat::q8_0:
      return GgmlType::q8_0;
    case WeightFormat::q4_k:
      return GgmlType::q4_k;
    case WeightFormat::q5_k:
      return GgmlType::q5_k;
    case WeightFormat::q6_k:
      return GgmlType::q6_k;
    case WeightFormat::dense:
    case WeightFormat::mlx_affine:
      break;
  }
  throw Error("ggml", "weight format " + std::to_string(static_cast<int>(format)) +
                          " has no GGML block type (dense and mlx_affine weights have none)");
}

bool block_weight_format(GgmlType type, WeightFormat* format) {
  switch (type) {
    case GgmlType::q4_0:
      *format = WeightFormat::q4_0;
      return true;
    case GgmlType::q8_0:
      *format = WeightFormat::q8_0;
      return true;
    case GgmlType::q4_k:
      *format = WeightFormat::q4_k;
      return true;
    case GgmlType::q5_k:
      *format = WeightFormat::q5_k;
      return true;
    case GgmlType::q6_k:
      *format = WeightFormat::q6_k;
      return true;
    default:
      return false;
  }
}

void dequantize_row(WeightFormat format, const uint8_t* blocks, int64_t k, float* out) {
  const BlockShape shape = block_shape(format, "dequantize_row");
  check_length(format, k, shape, "dequantize_row");
  const int64_t count = k / shape.elements;
  switch (format) {
    case WeightFormat::q4_0:
      return dequantize_blocks<BlockQ4_0>(blocks, count, out, shape.elements);
    case WeightFormat::q8_0:
      return dequantize_blocks<BlockQ8_0>(blocks, count, out, shape.elements);
    case WeightFormat::q4_k:
      return dequantize_blocks<BlockQ4_K>(blocks, count, out, shape.elements);
    case WeightFormat::q5_k:
      return dequantize_blocks<BlockQ5_K>(blocks, count, out, shape.elements);
    case WeightFormat::q6_k:
      return dequantize_blocks<BlockQ6_K>(blocks, count, out, shape.elements);
    default:
      return;  // block_shape has thrown
  }
}

void quantize_row(WeightFormat format, const float* x, int64_t k, uint8_t* blocks) {
  const BlockShape shape = block_shape(format, "quantize_row");
  check_length(format, k, shape, "quantize_row");
  const int64_t count = k / shape.elements;
  switch (format) {
    case WeightFormat::q4_0:
      return quantize_q4_0(x, count, blocks);
    case WeightFormat::q8_0:
      return quantize_q8_0(x, count, blocks);
    case WeightFormat::q4_k:
      require_finite(x, k, "q4_k");
      return quantize_k45<BlockQ4_K, false>(x, count, blocks, "q4_k");
    case WeightFormat::q5_k:
      require_finite(x, k, "q5_k");
      return quantize_k45<BlockQ5_K, true>(x, count, blocks, "q5_k");
    case WeightFormat::q6_k:
      require_finite(x, k, "q6_k");
      return quantize_q6_k(x, count, blocks);
    default:
      return;
  }
}

}  // namespace mlxn::formats
