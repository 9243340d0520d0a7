// The packed weight formats as the tensor-core paths read them: a row is a run of 32-code
// chunks; Fmt::load fetches one chunk (codes and what its scale needs) with wide loads, and
// Fmt::decode turns it into 16 pairs of unsigned codes plus scale and bias, so that every format
// reads w = scale * code + bias with an unsigned code (Q4_0: d, -8d; Q8_0: d, -128d on
// code + 128; K-quants: d*sc, -dmin*m; Q6_K: d*sc, -32*d*sc): exactly the reference value
// before rounding. Used by the packed GEMV (gemv.cu) and the dequantizing staging of the
// tensor-core path (dequantize.cu).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <string>

#include "backend/cuda/device/types.cuh"
#include "formats/ggml.h"
#include "mlxn/core/error.h"
#include "mlxn/ops/weights.h"

namespace mlxn::cuda::packed {

constexpr int kChunk = 32;  // codes per chunk

struct PackedWeight {
  const uint8_t* data;  // [N, row_bytes]: the packed weight rows, 16-byte aligned
  int64_t row_bytes;
  const void* scales;  // mlx_affine: [N, K / group] (scale_code)
  const void* biases;  // mlx_affine: [N, K / group]
  int scale_code;
  int chunks;  // K / 32
  // mlx_affine: log2(group_size / 32), groups being 32, 64 or 128 codes. A shift, not a
  // division: the group index is computed for every chunk, and an integer division costs the
  // GEMV's inner loop a few dozen instructions.
  int group_shift;
};

inline PackedWeight packed_weight(const Weight& w) {
  PackedWeight p{};
  p.data = static_cast<const uint8_t*>(w.data().data());
  p.row_bytes = w.data().dim(1) * w.data().element_size();
  p.scales = w.scales().defined() ? w.scales().data() : nullptr;
  p.biases = w.biases().defined() ? w.biases().data() : nullptr;
  p.scale_code = w.scales().defined() ? float_dtype_code(w.scales().dtype()) : 0;
  p.chunks = static_cast<int>(w.in_features() / kChunk);
  p.group_shift = 0;
  if (w.format() == WeightFormat::mlx_affine) {
    while ((kChunk << p.group_shift) < w.group_size()) ++p.group_shift;
  }
  return p;
}

// A decoded chunk: pair[i] = code i (bits 0-15) and code i + 16 (bits 16-31); codes i < 16 take
// (s_lo, b_lo), codes i + 16 take (s_hi, b_hi).
struct Chunk {
  uint32_t pair[16];
  float s_lo, b_lo, s_hi, b_hi;
};

__device__ __forceinline__ uint32_t prmt(uint32_t a, uint32_t b, uint32_t selector) {
  return __byte_perm(a, b, selector);
}

// Bytes (i, i + 16) of a 32-byte segment held as 8 words, each zero-extended into a 16-bit half.
__device__ __forceinline__ uint32_t byte_pair(const uint32_t (&q)[8], int i) {
  return prmt(q[i >> 2], q[4 + (i >> 2)], (i & 3) | ((4 + (i & 3)) << 8)) & 0x00ff00ffu;
}

__device__ __forceinline__ uint32_t load_u16(const uint8_t* p) {
  return *reinterpret_cast<const uint16_t*>(p);
}

// 4·Words bytes at a 2-byte aligned address as words, by aligned loads and funnel shifts. When
// the address is 2 mod 4 this also reads the 2 bytes before it, which lie in the same block
// (every caller's range starts at least 2 bytes into its block).
template <int Words>
__device__ __forceinline__ void load_words_2aligned(const uint8_t* p, uint32_t (&out)[Words]) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  const auto* base = reinterpret_cast<const uint32_t*>(a & ~uintptr_t{3});
  const uint32_t shift = (a & 2u) ? 16u : 0u;
  uint32_t w[Words + 1];
#pragma unroll
  for (int j = 0; j < Words; ++j) w[j] = base[j];
  // Only the low half of the extra word is used: load just those 2 bytes.
  w[Words] = shift ? *reinterpret_cast<const uint16_t*>(base + Words) : 0u;
#pragma unroll
  for (int j = 0; j < Words; ++j) out[j] = __funnelshift_r(w[j], w[j + 1], shift);
}

// Words [0, 4·N) of `out` from N 16-byte loads at a 16-byte aligned address.
template <int N, int Words>
__device__ __forceinline__ void load_uint4_words(const uint8_t* p, uint32_t (&out)[Words]) {
  static_assert(4 * N <= Words);
#pragma unroll
  for (int j = 0; j < N; ++j) {
    const uint4 v = reinterpret_cast<const uint4*>(p)[j];
    out[4 * j] = v.x, out[4 * j + 1] = v.y, out[4 * j + 2] = v.z, out[4 * j + 3] = v.w;
  }
}

// ---- formats: load(raw, params, row, chunk) then decode(raw, chunk) ---------------------------

template <int Bits>
struct MlxAffine {
  static constexpr bool kWide = Bits == 8;  // codes >= 128: the f32 route for bf16
  struct Raw {
    uint32_t w[Bits];
    float s, b;
  };
  static __device__ __forceinline__ void load(Raw& r, const PackedWeight& p, int row, int ch) {
    const uint8_t* src = p.data + row * p.row_bytes + static_cast<int64_t>(ch) * 4 * Bits;
    if constexpr (Bits == 4 || Bits == 8) {
      load_uint4_words<Bits / 4>(src, r.w);
    } else if constexpr (Bits == 2) {
      const uint2 v = *reinterpret_cast<const uint2*>(src);
      r.w[0] = v.x, r.w[1] = v.y;
    } else {
#pragma unroll
      for (int j = 0; j < Bits; ++j) r.w[j] = reinterpret_cast<const uint32_t*>(src)[j];
    }
    const int64_t g =
        static_cast<int64_t>(row) * (p.chunks >> p.group_shift) + (ch >> p.group_shift);
    r.s = load_float_coded(p.scales, p.scale_code, g);
    r.b = load_float_coded(p.biases, p.scale_code, g);
  }
  static __device__ __forceinline__ uint32_t code(const Raw& r, int j) {
    constexpr uint32_t kMask = (1u << Bits) - 1u;
    const int bit = j * Bits, word = bit >> 5, shift = bit & 31;
    if (shift + Bits <= 32) return (r.w[word] >> shift) & kMask;
    return __funnelshift_r(r.w[word], r.w[word + 1], shift) & kMask;
  }
  static __device__ __forceinline__ void decode(const Raw& r, Chunk& c) {
    if constexpr (Bits == 4) {
#pragma unroll
      // Word h holds codes 8h .. 8h + 7 and word h + 2 their partners 8h + 16 .. 8h + 23.
      for (int h = 0; h < 2; ++h) {
        const uint32_t lo = prmt(r.w[h], r.w[h + 2], 0x5410);
        const uint32_t hi = prmt(r.w[h], r.w[h + 2], 0x7632);
#pragma unroll
        for (int n = 0; n < 4; ++n) {
          c.pair[8 * h + n] = (lo >> (4 * n)) & 0x000f000fu;
          c.pair[8 * h + 4 + n] = (hi >> (4 * n)) & 0x000f000fu;
        }
      }
    } else if constexpr (Bits == 2) {
      const uint32_t lo = prmt(r.w[0], r.w[1], 0x5410);
      const uint32_t hi = prmt(r.w[0], r.w[1], 0x7632);
#pragma unroll
      for (int n = 0; n < 8; ++n) {
        c.pair[n] = (lo >> (2 * n)) & 0x00030003u;
        c.pair[8 + n] = (hi >> (2 * n)) & 0x00030003u;
      }
    } else if constexpr (Bits == 8) {
#pragma unroll
      for (int i = 0; i < 16; ++i) c.pair[i] = byte_pair(r.w, i);
    } else {
#pragma unroll
      for (int i = 0; i < 16; ++i) c.pair[i] = code(r, i) | (code(r, i + 16) << 16);
    }
    c.s_lo = c.s_hi = r.s;
    c.b_lo = c.b_hi = r.b;
  }
};

struct Q4_0 {
  static constexpr bool kWide = false;
  struct Raw {
    uint32_t q[4];
    uint32_t d;
  };
  static __device__ __forceinline__ void load(Raw& r, const PackedWeight& p, int row, int ch) {
    const uint8_t* b = p.data + row * p.row_bytes + static_cast<int64_t>(ch) * 18;
    r.d = load_u16(b);
    load_words_2aligned<4>(b + 2, r.q);  // reads d before and the next block's d after
  }
  static __device__ __forceinline__ void decode(const Raw& r, Chunk& c) {
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const uint32_t lo = r.q[j] & 0x0f0f0f0fu, hi = (r.q[j] >> 4) & 0x0f0f0f0fu;
#pragma unroll
      for (int n = 0; n < 4; ++n)
        c.pair[4 * j + n] = prmt(lo, hi, n | ((4 + n) << 8)) & 0x00ff00ffu;
    }
    const float d = formats::f16_bits_to_float(static_cast<uint16_t>(r.d));
    c.s_lo = c.s_hi = d;
    c.b_lo = c.b_hi = -8.0f * d;
  }
};

struct Q8_0 {
  static constexpr bool kWide = true;
  struct Raw {
    uint32_t q[8];
    uint32_t d;
  };
  static __device__ __forceinline__ void load(Raw& r, const PackedWeight& p, int row, int ch) {
    const uint8_t* b = p.data + row * p.row_bytes + static_cast<int64_t>(ch) * 34;
    r.d = load_u16(b);
    load_words_2aligned<8>(b + 2, r.q);
  }
  static __device__ __forceinline__ void decode(const Raw& r, Chunk& c) {
    // Signed codes as code + 128: w = d·(q + 128) − 128·d, the bias exact.
#pragma unroll
    for (int i = 0; i < 16; ++i) c.pair[i] = byte_pair(r.q, i) ^ 0x00800080u;
    const float d = formats::f16_bits_to_float(static_cast<uint16_t>(r.d));
    c.s_lo = c.s_hi = d;
    c.b_lo = c.b_hi = -128.0f * d;
  }
};

// Q4_K / Q5_K: chunk = sub-block s of super-block ch / 8 (32 codes, one scale and min).
template <bool Fifth>
struct QK45 {
  static constexpr bool kWide = false;
  static constexpr int kBlockBytes = Fifth ? 176 : 144;
  static constexpr int kQsOffset = Fifth ? 48 : 16;
  struct Raw {
    uint32_t q[8];
    uint32_t h[Fifth ? 8 : 1];  // Q5_K: qh bytes 0..31
    uint32_t dd;                // d | dmin << 16
    uint32_t sc[3];
    int sub;
  };
  static __device__ __forceinline__ void load(Raw& r, const PackedWeight& p, int row, int ch) {
    const uint8_t* b = p.data + row * p.row_bytes + static_cast<int64_t>(ch >> 3) * kBlockBytes;
    r.sub = ch & 7;
    load_uint4_words<2>(b + kQsOffset + 32 * (r.sub >> 1), r.q);
    if constexpr (Fifth) load_uint4_words<2>(b + 16, r.h);
    const uint4 head = *reinterpret_cast<const uint4*>(b);
    r.dd = head.x;
    r.sc[0] = head.y, r.sc[1] = head.z, r.sc[2] = head.w;
  }
  static __device__ __forceinline__ void decode(const Raw& r, Chunk& c) {
    const int shift = 4 * (r.sub & 1);
#pragma unroll
    for (int i = 0; i < 16; ++i) {
      uint32_t v = (prmt(r.q[i >> 2], r.q[4 + (i >> 2)], (i & 3) | ((4 + (i & 3)) << 8)) >> shift) &
                   0x000f000fu;
      if constexpr (Fifth) {
        const uint32_t hb = (byte_pair(r.h, i) >> r.sub) & 0x00010001u;
        v |= hb << 4;
      }
      c.pair[i] = v;
    }
    uint8_t scales[12];
#pragma unroll
    for (int j = 0; j < 3; ++j) {
      scales[4 * j + 0] = static_cast<uint8_t>(r.sc[j]);
      scales[4 * j + 1] = static_cast<uint8_t>(r.sc[j] >> 8);
      scales[4 * j + 2] = static_cast<uint8_t>(r.sc[j] >> 16);
      scales[4 * j + 3] = static_cast<uint8_t>(r.sc[j] >> 24);
    }
    const formats::ScaleMin sm = formats::get_scale_min_k4(r.sub, scales);
    const float d = formats::f16_bits_to_float(static_cast<uint16_t>(r.dd));
    const float dmin = formats::f16_bits_to_float(static_cast<uint16_t>(r.dd >> 16));
    c.s_lo = c.s_hi = d * static_cast<float>(sm.scale);
    c.b_lo = c.b_hi = -(dmin * static_cast<float>(sm.min));
  }
};

// Q6_K: chunk j of super-block ch / 8 covers elements 128h + 32t + l (h = j / 4, t = j % 4);
// its first 16 codes take scale 8h + 2t, the others 8h + 2t + 1.
struct Q6K {
  static constexpr bool kWide = false;
  struct Raw {
    uint32_t ql[8];
    uint32_t qh[8];
    uint32_t sc;  // the two int8 scales
    uint32_t d;
    int t;
  };
  static __device__ __forceinline__ void load(Raw& r, const PackedWeight& p, int row, int ch) {
    const uint8_t* b = p.data + row * p.row_bytes + static_cast<int64_t>(ch >> 3) * 210;
    const int j = ch & 7, h = j >> 2;
    r.t = j & 3;
    load_words_2aligned<8>(b + 64 * h + 32 * (r.t & 1), r.ql);
    load_words_2aligned<8>(b + 128 + 32 * h, r.qh);
    r.sc = load_u16(b + 192 + 8 * h + 2 * r.t);
    r.d = load_u16(b + 208);
  }
  static __device__ __forceinline__ void decode(const Raw& r, Chunk& c) {
    const int low_shift = 4 * (r.t >> 1), high_shift = 2 * r.t;
#pragma unroll
    for (int i = 0; i < 16; ++i) {
      const uint32_t lo = (byte_pair(r.ql, i) >> low_shift) & 0x000f000fu;
      const uint32_t hi = (byte_pair(r.qh, i) >> high_shift) & 0x00030003u;
      c.pair[i] = lo | (hi << 4);
    }
    const float d = formats::f16_bits_to_float(static_cast<uint16_t>(r.d));
    c.s_lo = d * static_cast<float>(static_cast<int8_t>(r.sc & 0xffu));
    c.s_hi = d * static_cast<float>(static_cast<int8_t>(r.sc >> 8));
    c.b_lo = -32.0f * c.s_lo;
    c.b_hi = -32.0f * c.s_hi;
  }
};

// Calls f(Fmt{}) with the format type of a packed weight (every format but dense).
template <class F>
decltype(auto) with_format(const Weight& w, F&& f) {
  switch (w.format()) {
    case WeightFormat::mlx_affine:
      switch (w.bits()) {
        case 2:
          return f(MlxAffine<2>{});
        case 3:
          return f(MlxAffine<3>{});
        case 4:
          return f(MlxAffine<4>{});
        case 5:
          return f(MlxAffine<5>{});
        case 6:
          return f(MlxAffine<6>{});
        default:
          return f(MlxAffine<8>{});
      }
    case WeightFormat::q4_0:
      return f(Q4_0{});
    case WeightFormat::q8_0:
      return f(Q8_0{});
    case WeightFormat::q4_k:
      return f(QK45<false>{});
    case WeightFormat::q5_k:
      return f(QK45<true>{});
    case WeightFormat::q6_k:
      return f(Q6K{});
    default:
      throw Error("matmul", std::string("no packed decoding for ") +
                                std::string(weight_format_name(w.format())));
  }
}

}  // namespace mlxn::cuda::packed
