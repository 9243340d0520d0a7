// The bandwidth path of matmul: M ≤ 16 rows of bf16 / f16 x against a weight in any packed
// format, reading each weight byte once.
//
// A warp owns 16 weight rows; per step each lane takes one 32-code chunk of two rows (row g and
// g + 8, g = lane / 4) and the four lanes of a quad cover 128 consecutive k. The chunk is decoded
// in registers into bf16 / f16 pairs and fed to mma.m16n8k16 as the A operand, x (rows as the N
// dimension, 8 per tile) as B. The k order inside an mma is free as long as A and B agree: pair
// i of a chunk holds codes (i, i + 16) — for Q4_0 exactly the low and high nibble of byte i — and
// x is paired the same way with one byte permute per pair.
//
// Decoding: codes below 128 (bf16) or 1024 (f16) become floats by the exponent trick (OR the
// code into the mantissa of 128.0 / 1024.0, subtract it back), then w = fma(q, scale, bias) on
// pairs: one rounding to x's dtype. 8-bit codes with bf16 x take the f32 route. Every format is
// written as scale·code + bias with an unsigned code (Q4_0: d, −8d; Q8_0: d, −128d on code+128;
// K-quants: d·sc, −dmin·m; Q6_K: d·sc, −32·d·sc), exactly the reference value before rounding.
//
// Split-K: when the rows alone give too few blocks, blockIdx.y splits the steps; partial sums go
// to an f32 workspace and the last block of each row tile adds them in split order (a fixed
// order: results do not depend on timing).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/device/occupancy.h"
#include "backend/cuda/matmul/matmul.h"
#include "backend/cuda/matmul/weight_view.cuh"
#include "mlxn/core/dispatch.h"

namespace mlxn::cuda {

namespace {

constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;
constexpr int kRowsPerBlock = kWarps * 16;
constexpr int kChunk = 32;    // codes per lane per row per step
constexpr int kMaxRows = 16;  // rows of x this path takes
constexpr int kMaxSplits = 32;

struct Params {
  const void* x;     // [M, K] T, rows 16-byte aligned
  const uint8_t* w;  // [N, row_bytes]: the packed weight rows
  int64_t row_bytes;
  const void* scales;  // mlx_affine: [N, K / group] (scale_code)
  const void* biases;  // mlx_affine: [N, K / group]
  const void* bias;    // [N] (bias_code) or null
  void* out;           // [M, N] (out_code)
  float* partials;     // [splits, M, N] when splits > 1
  unsigned* arrivals;  // [row tiles], zeroed, when splits > 1
  int scale_code, bias_code, out_code;
  int m, n, k;
  int chunks;        // K / 32
  int group_chunks;  // mlx_affine: group_size / 32
  int steps;         // ceil(chunks / 4)
  int splits;
};

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
  static __device__ __forceinline__ void load(Raw& r, const Params& p, int row, int ch) {
    const uint8_t* src = p.w + row * p.row_bytes + static_cast<int64_t>(ch) * 4 * Bits;
    if constexpr (Bits == 4 || Bits == 8) {
      load_uint4_words<Bits / 4>(src, r.w);
    } else if constexpr (Bits == 2) {
      const uint2 v = *reinterpret_cast<const uint2*>(src);
      r.w[0] = v.x, r.w[1] = v.y;
    } else {
#pragma unroll
      for (int j = 0; j < Bits; ++j) r.w[j] = reinterpret_cast<const uint32_t*>(src)[j];
    }
    const int64_t g = static_cast<int64_t>(row) * (p.chunks / p.group_chunks) + ch / p.group_chunks;
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
  static __device__ __forceinline__ void load(Raw& r, const Params& p, int row, int ch) {
    const uint8_t* b = p.w + row * p.row_bytes + static_cast<int64_t>(ch) * 18;
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
  static __device__ __forceinline__ void load(Raw& r, const Params& p, int row, int ch) {
    const uint8_t* b = p.w + row * p.row_bytes + static_cast<int64_t>(ch) * 34;
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
    uint32_t h[8];  // Q5_K: qh bytes 0..31
    uint32_t dd;    // d | dmin << 16
    uint32_t sc[3];
    int sub;
  };
  static __device__ __forceinline__ void load(Raw& r, const Params& p, int row, int ch) {
    const uint8_t* b = p.w + row * p.row_bytes + static_cast<int64_t>(ch >> 3) * kBlockBytes;
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
  static __device__ __forceinline__ void load(Raw& r, const Params& p, int row, int ch) {
    const uint8_t* b = p.w + row * p.row_bytes + static_cast<int64_t>(ch >> 3) * 210;
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

// ---- pairs of codes -> pairs of T, and the mma ------------------------------------------------

template <class T>
struct Pairs;

template <>
struct Pairs<__nv_bfloat16> {
  template <bool Wide>
  static __device__ __forceinline__ uint32_t weights(uint32_t pair, const Chunk& c) {
    __nv_bfloat162 w;
    if constexpr (Wide) {
      const float lo = __uint_as_float((pair & 0xffffu) | 0x4b000000u) - 8388608.0f;
      const float hi = __uint_as_float((pair >> 16) | 0x4b000000u) - 8388608.0f;
      w = __floats2bfloat162_rn(fmaf(c.s_lo, lo, c.b_lo), fmaf(c.s_hi, hi, c.b_hi));
    } else {
      const uint32_t magic = pair | 0x43004300u;  // 128 + code, exact
      const __nv_bfloat162 q = __hsub2(*reinterpret_cast<const __nv_bfloat162*>(&magic),
                                       __floats2bfloat162_rn(128.0f, 128.0f));
      w = __hfma2(q, __floats2bfloat162_rn(c.s_lo, c.s_hi), __floats2bfloat162_rn(c.b_lo, c.b_hi));
    }
    return *reinterpret_cast<uint32_t*>(&w);
  }
  static __device__ __forceinline__ void mma(float (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                             uint32_t b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
};

template <>
struct Pairs<__half> {
  template <bool Wide>
  static __device__ __forceinline__ uint32_t weights(uint32_t pair, const Chunk& c) {
    const uint32_t magic = pair | 0x64006400u;  // 1024 + code, exact for codes < 1024
    const __half2 q =
        __hsub2(*reinterpret_cast<const __half2*>(&magic), __floats2half2_rn(1024.0f, 1024.0f));
    const __half2 w =
        __hfma2(q, __floats2half2_rn(c.s_lo, c.s_hi), __floats2half2_rn(c.b_lo, c.b_hi));
    return *reinterpret_cast<const uint32_t*>(&w);
  }
  static __device__ __forceinline__ void mma(float (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                             uint32_t b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
};

// Adds bias and stores one output element.
__device__ __forceinline__ void store_out(const Params& p, int xrow, int row, float v) {
  if (p.bias != nullptr) v += load_float_coded(p.bias, p.bias_code, row);
  const int64_t i = static_cast<int64_t>(xrow) * p.n + row;
  switch (p.out_code) {
    case 0:
      static_cast<float*>(p.out)[i] = v;
      break;
    case 1:
      static_cast<__nv_bfloat16*>(p.out)[i] = __float2bfloat16_rn(v);
      break;
    default:
      static_cast<__half*>(p.out)[i] = __float2half_rn(v);
      break;
  }
}

template <class Fmt, class T, int Tiles>
__global__ void __launch_bounds__(kThreads) gemv_kernel(const __grid_constant__ Params p) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int g = lane >> 2, quad = lane & 3;
  const int row0 = blockIdx.x * kRowsPerBlock + warp * 16;
  // Rows past N read the last row (in bounds) and are not stored.
  const int row_a = min(row0 + g, p.n - 1), row_b = min(row0 + g + 8, p.n - 1);
  const int split = blockIdx.y;
  const int step_begin = static_cast<int>(static_cast<int64_t>(p.steps) * split / p.splits);
  const int step_end = static_cast<int>(static_cast<int64_t>(p.steps) * (split + 1) / p.splits);

  float acc[Tiles][4] = {};
  const T* x = static_cast<const T*>(p.x);
  for (int step = step_begin; step < step_end; ++step) {
    // Every lane runs the mma (it is warp-wide); a quad past the last chunk multiplies zeros.
    const bool valid = step * 4 + quad < p.chunks;
    const int ch = valid ? step * 4 + quad : 0;
    typename Fmt::Raw raw_a, raw_b;
    Fmt::load(raw_a, p, row_a, ch);
    Fmt::load(raw_b, p, row_b, ch);
    uint32_t xw[Tiles][16];
#pragma unroll
    for (int t = 0; t < Tiles; ++t) {
      const int xrow = t * 8 + g;
      if (valid && xrow < p.m) {
        load_uint4_words<4>(reinterpret_cast<const uint8_t*>(x + static_cast<int64_t>(xrow) * p.k +
                                                             static_cast<int64_t>(ch) * kChunk),
                            xw[t]);
      } else {
#pragma unroll
        for (int v = 0; v < 16; ++v) xw[t][v] = 0u;
      }
    }
    Chunk ca, cb;
    Fmt::decode(raw_a, ca);
    Fmt::decode(raw_b, cb);
#pragma unroll
    for (int i = 0; i < 8; ++i) {  // mma i takes pairs 2i (k slots 2q, 2q+1) and 2i + 1
      uint32_t a[4] = {Pairs<T>::template weights<Fmt::kWide>(ca.pair[2 * i], ca),
                       Pairs<T>::template weights<Fmt::kWide>(cb.pair[2 * i], cb),
                       Pairs<T>::template weights<Fmt::kWide>(ca.pair[2 * i + 1], ca),
                       Pairs<T>::template weights<Fmt::kWide>(cb.pair[2 * i + 1], cb)};
      if (!valid) a[0] = a[1] = a[2] = a[3] = 0u;  // 0·x even where the weight is not finite
#pragma unroll
      for (int t = 0; t < Tiles; ++t) {
        // x pair j = (x_j, x_{j+16}): halves of words j / 2 and 8 + j / 2.
        const uint32_t b0 = prmt(xw[t][i], xw[t][8 + i], 0x5410);
        const uint32_t b1 = prmt(xw[t][i], xw[t][8 + i], 0x7632);
        Pairs<T>::mma(acc[t], a, b0, b1);
      }
    }
  }

  // acc[t] = (row g, x rows 2q, 2q+1), (row g + 8, x rows 2q, 2q+1) of tile t.
  if (p.splits == 1) {
#pragma unroll
    for (int t = 0; t < Tiles; ++t) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int xrow = t * 8 + 2 * quad + (e & 1), row = row0 + g + (e >> 1) * 8;
        if (xrow < p.m && row < p.n) store_out(p, xrow, row, acc[t][e]);
      }
    }
    return;
  }
#pragma unroll
  for (int t = 0; t < Tiles; ++t) {
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int xrow = t * 8 + 2 * quad + (e & 1), row = row0 + g + (e >> 1) * 8;
      if (xrow < p.m && row < p.n) {
        p.partials[(static_cast<int64_t>(split) * p.m + xrow) * p.n + row] = acc[t][e];
      }
    }
  }
  // The last block of this row tile to arrive sums the splits in order.
  __shared__ unsigned last;
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0) last = atomicAdd(&p.arrivals[blockIdx.x], 1u) == p.splits - 1u;
  __syncthreads();
  if (!last) return;
  __threadfence();
  const int tile0 = blockIdx.x * kRowsPerBlock;
  for (int i = threadIdx.x; i < p.m * kRowsPerBlock; i += kThreads) {
    const int xrow = i / kRowsPerBlock, row = tile0 + i % kRowsPerBlock;
    if (row >= p.n) continue;
    float v = 0.0f;
    for (int s = 0; s < p.splits; ++s) {
      v += __ldcg(&p.partials[(static_cast<int64_t>(s) * p.m + xrow) * p.n + row]);
    }
    store_out(p, xrow, row, v);
  }
  if (threadIdx.x == 0) p.arrivals[blockIdx.x] = 0;
}

template <class Fmt, class T>
void launch(Params p, const Stream& stream) {
  const auto cuda_stream = static_cast<cudaStream_t>(stream.native_handle());
  const int tiles = p.m > 8 ? 2 : 1;
  const void* kernel = tiles == 2 ? reinterpret_cast<const void*>(&gemv_kernel<Fmt, T, 2>)
                                  : reinterpret_cast<const void*>(&gemv_kernel<Fmt, T, 1>);
  const int row_tiles = (p.n + kRowsPerBlock - 1) / kRowsPerBlock;
  const int resident = resident_blocks_per_sm(kernel, kThreads, 0, stream.device()) *
                       device_properties(stream.device()).multiprocessors;
  // Enough blocks to fill every SM about twice, but at least 2 steps per split.
  p.splits = std::clamp((2 * resident + row_tiles - 1) / row_tiles, 1,
                        std::min(kMaxSplits, std::max(1, p.steps / 2)));
  Buffer workspace;
  if (p.splits > 1) {
    const int64_t partial_bytes = static_cast<int64_t>(p.splits) * p.m * p.n * 4;
    workspace = Buffer::empty({partial_bytes + row_tiles * 4}, DType::u8, stream);
    stream.retain_for_capture(workspace.allocation());
    p.partials = workspace.data_as<float>();
    p.arrivals = reinterpret_cast<unsigned*>(workspace.data_as<uint8_t>() + partial_bytes);
    MLXN_CUDA_CHECK(
        cudaMemsetAsync(p.arrivals, 0, static_cast<size_t>(row_tiles) * 4, cuda_stream));
  }
  const dim3 grid(static_cast<unsigned>(row_tiles), static_cast<unsigned>(p.splits));
  if (tiles == 2) {
    gemv_kernel<Fmt, T, 2><<<grid, kThreads, 0, cuda_stream>>>(p);
  } else {
    gemv_kernel<Fmt, T, 1><<<grid, kThreads, 0, cuda_stream>>>(p);
  }
  MLXN_CUDA_CHECK_LAUNCH();
}

template <class T>
void launch_format(const Params& p, const Weight& w, const Stream& stream) {
  switch (w.format()) {
    case WeightFormat::mlx_affine:
      switch (w.bits()) {
        case 2:
          return launch<MlxAffine<2>, T>(p, stream);
        case 3:
          return launch<MlxAffine<3>, T>(p, stream);
        case 4:
          return launch<MlxAffine<4>, T>(p, stream);
        case 5:
          return launch<MlxAffine<5>, T>(p, stream);
        case 6:
          return launch<MlxAffine<6>, T>(p, stream);
        default:
          return launch<MlxAffine<8>, T>(p, stream);
      }
    case WeightFormat::q4_0:
      return launch<Q4_0, T>(p, stream);
    case WeightFormat::q8_0:
      return launch<Q8_0, T>(p, stream);
    case WeightFormat::q4_k:
      return launch<QK45<false>, T>(p, stream);
    case WeightFormat::q5_k:
      return launch<QK45<true>, T>(p, stream);
    case WeightFormat::q6_k:
      return launch<Q6K, T>(p, stream);
    default:
      throw Error("matmul", "no packed GEMV for " + std::string(weight_format_name(w.format())));
  }
}

}  // namespace

bool gemv_packed(const linear::Job& job, const Stream& stream) {
  const Weight& w = job.w;
  if (w.format() == WeightFormat::dense || job.m > kMaxRows) return false;
  if (job.x.dtype() != DType::bf16 && job.x.dtype() != DType::f16) return false;
  // Vector loads: x rows and the weight rows must be 16-byte aligned (K is a multiple of 32, so
  // x rows are whenever x is; MLX and K-quant rows are whenever the data is).
  if (!job.x.is_aligned(16) || !w.data().is_aligned(16)) return false;
  if (job.n > (1 << 30) || job.k > (1 << 30)) return false;
  Params p{};
  p.x = job.x.data();
  p.w = static_cast<const uint8_t*>(w.data().data());
  p.row_bytes = w.data().dim(1) * w.data().element_size();
  p.scales = w.scales().defined() ? w.scales().data() : nullptr;
  p.biases = w.biases().defined() ? w.biases().data() : nullptr;
  p.scale_code = w.scales().defined() ? float_dtype_code(w.scales().dtype()) : 0;
  p.bias = job.bias.defined() ? job.bias.data() : nullptr;
  p.bias_code = job.bias.defined() ? float_dtype_code(job.bias.dtype()) : 0;
  p.out = job.out.data();
  p.out_code = float_dtype_code(job.out.dtype());
  p.m = static_cast<int>(job.m);
  p.n = static_cast<int>(job.n);
  p.k = static_cast<int>(job.k);
  p.chunks = p.k / kChunk;
  p.group_chunks = w.format() == WeightFormat::mlx_affine ? w.group_size() / kChunk : 1;
  p.steps = (p.chunks + 3) / 4;
  if (job.x.dtype() == DType::bf16) {
    launch_format<__nv_bfloat16>(p, w, stream);
  } else {
    launch_format<__half>(p, w, stream);
  }
  return true;
}

}  // namespace mlxn::cuda
