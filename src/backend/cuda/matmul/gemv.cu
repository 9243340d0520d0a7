// The bandwidth path of matmul: M ≤ 16 rows of bf16 / f16 x against a weight in any packed
// format, reading each weight byte once. Two kernels: MLX affine 2/4/8-bit with scales of x's
// dtype take the leaner `affine` kernel (codes fed to the mma as they are, scale and bias per
// group; described where it starts); every other packed format takes the general one below.
//
// General kernel: a warp owns 16 weight rows; per step each lane takes one 32-code chunk of two
// rows (row g and g + 8, g = lane / 4) and the four lanes of a quad cover 128 consecutive k. The
// chunk is decoded in registers into bf16 / f16 pairs and fed to mma.m16n8k16 as the A operand, x
// (rows as the N dimension, 8 per tile) as B. The k order inside an mma is free as long as A and B
// agree: pair i of a chunk holds codes (i, i + 16) — for Q4_0 exactly the low and high nibble of
// byte i — and x is paired the same way with one byte permute per pair.
//
// Decoding: codes below 128 (bf16) or 1024 (f16) become floats by the exponent trick (OR the
// code into the mantissa of 128.0 / 1024.0, subtract it back), then w = fma(q, scale, bias) on
// pairs: one rounding to x's dtype. 8-bit codes with bf16 x take the f32 route. The formats'
// loading and decoding: packed_formats.cuh.
//
// Split-K: when the rows alone give too few blocks, blockIdx.y splits the steps; partial sums go
// to an f32 workspace and the last block of each row tile adds them in split order (a fixed
// order: results do not depend on timing).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <type_traits>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/device/mma.cuh"
#include "backend/cuda/device/occupancy.h"
#include "backend/cuda/device/pdl.cuh"
#include "backend/cuda/matmul/matmul.h"
#include "backend/cuda/matmul/packed_formats.cuh"
#include "backend/cuda/runtime.h"
#include "mlxn/core/dispatch.h"

namespace mlxn::cuda {

namespace {

using packed::Chunk;
using packed::kChunk;
using packed::load_uint4_words;
using packed::prmt;

constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;
constexpr int kRowsPerBlock = kWarps * 16;
constexpr int kMaxRows = 16;  // rows of x this path takes
constexpr int kMaxSplits = 32;
constexpr int kMinSplitSteps = 4;     // steps a split covers at least
constexpr int kBlocksPerSm = 8;       // split-K target: blocks per SM (about what fits)
constexpr int kMaxAffineSplits = 16;  // warps per block of the MLX affine kernel

struct Params {
  packed::PackedWeight w;
  const void* x;       // [M, K] T, rows 16-byte aligned
  const void* bias;    // [N] (bias_code) or null
  void* out;           // [M, N] (out_code)
  float* partials;     // [splits, M, N] when splits > 1
  unsigned* arrivals;  // [row tiles], zeroed, when splits > 1
  int bias_code, out_code;
  int m, n, k;
  int chunks;  // K / 32
  int steps;   // ceil(chunks / 4)
  int splits;
};

// ---- pairs of codes -> pairs of T (the A operand of device/mma.cuh's mma) ---------------------

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
};

// Adds bias and stores one output element (x row xrow, weight row `row`).
__device__ __forceinline__ void store_out(const void* bias, int bias_code, void* out, int out_code,
                                          int n, int xrow, int row, float v) {
  if (bias != nullptr) v += load_float_coded(bias, bias_code, row);
  const int64_t i = static_cast<int64_t>(xrow) * n + row;
  switch (out_code) {
    case 0:
      static_cast<float*>(out)[i] = v;
      break;
    case 1:
      static_cast<__nv_bfloat16*>(out)[i] = __float2bfloat16_rn(v);
      break;
    default:
      static_cast<__half*>(out)[i] = __float2half_rn(v);
      break;
  }
}

// ---- MLX affine 2 / 4 / 8-bit: codes into the mma directly, scale and bias per group ----------
//
// The general kernel below spends most of its issue slots turning codes into weights (a
// subtraction and an fma per pair, per-chunk scale loads with a dtype switch). For the MLX
// widths whose codes split into 2- or 4-bit fields this kernel feeds the mma the codes
// themselves, offset by a constant: one LOP3 makes a pair (code | magic = offset + code, exact in
// x's dtype) and the group's scale s and bias b are applied once to f32 partial sums:
//   Σ (s·q + b)·x = s·Σ (off + q)·x + (b − off·s)·Σ x,
// where Σ (off + q)·x comes from the mma over the codes and Σ x from an mma with an all-ones A.
// 8-bit codes are fed as two 4-bit fields, the high one against 16·x (exact), so the cost per
// weight byte is the same at every width.
//
// Layout: a warp owns 16 rows (the mma's M) and a run of groups; the four lanes of a quad split
// a group (group / 4 codes of rows g and g + 8 each), so every mma sums within one group. A
// block is `splits` warps on the same 16 rows, each taking a contiguous share of the groups, and
// sums their partials in shared memory in warp order (results do not depend on timing).
// Memory: each warp keeps kAhead groups of weight loads in flight in registers; the scales and
// biases of a run of groups are first copied to shared memory with row-contiguous loads (read
// per group from global memory, 16 rows' scales cost the L1 as many requests as the weights
// themselves); x is read one group ahead (it is shared by every warp and sits in L1). A warp
// issues its first weight and x loads before staging the scales, and the staging keeps all its
// loads in flight: the latencies overlap instead of adding up (a warp's whole life is a few
// memory round trips, so each one counts).
namespace affine {

template <class T>
struct Magic;
template <>
struct Magic<__nv_bfloat16> {
  static constexpr uint32_t kPair = 0x43004300u;  // 128.0: 128 + code, exact below 128
  static constexpr uint32_t kOnes = 0x3f803f80u;
  static constexpr float kOffset = 128.0f;
};
template <>
struct Magic<__half> {
  static constexpr uint32_t kPair = 0x64006400u;  // 1024.0: 1024 + code, exact below 1024
  static constexpr uint32_t kOnes = 0x3c003c00u;
  static constexpr float kOffset = 1024.0f;
};

constexpr int kMaxChunk = 64;         // groups whose scales a warp stages at a time
constexpr int kStagedPerBlock = 512;  // scale-and-bias pairs per row a block stages at a time

struct Params {
  const uint8_t* w;    // [N, row_bytes]
  const void* scales;  // [N, groups] of T
  const void* biases;  // [N, groups] of T
  const void* x;       // [M, K] T, rows 16-byte aligned
  const void* bias;    // [N] (bias_code) or null
  void* out;           // [M, N] (out_code)
  int64_t row_bytes;
  int bias_code, out_code;
  int m, n, k;
  int groups;  // K / group size
  int splits;  // warps per block, each a share of the groups
  int chunk;   // groups per staging of scales (≤ kMaxChunk, splits · chunk ≤ kStagedPerBlock)
  bool settled;  // the weight is settled: read it before the previous kernel has completed
};

template <class T, int Bits, int Group, int Tiles>
struct Shape {
  static constexpr int kLaneCodes = Group / 4;           // codes of a row a lane takes per group
  static constexpr int kWords = kLaneCodes * Bits / 32;  // their packed 32-bit words
  static constexpr int kGroupBytes = Group * Bits / 8;   // a row's bytes per group
  static constexpr int kXWords = kLaneCodes / 2;         // x as pairs, per x row
  static constexpr int kField = Bits == 2 ? 2 : 4;       // bits of one mma code
  static constexpr int kPairsPerWord = 16 / kField;
  static constexpr int kPairs = kWords * kPairsPerWord;  // A pairs per weight row per group
  static constexpr int kPlain = kLaneCodes / 2;          // x pairs with every k once (for Σ x)
  static constexpr float kOffset = Magic<T>::kOffset * (Bits == 8 ? 17.0f : 1.0f);
  static constexpr uint32_t kMask = ((1u << kField) - 1u) * 0x00010001u;
  // Groups of weight loads a lane keeps in flight: about 32 bytes (16 with two x tiles, whose
  // registers the loads would otherwise spill; 64 bytes measured slower: fewer resident warps).
  static constexpr int kAhead = std::clamp((Tiles == 1 ? 32 : 16) / (2 * 4 * kWords), 1, 4);
  // Groups per turn of the main loop: ring slots and the two x buffers both static.
  static constexpr int kUnroll = std::max(kAhead, 2);
  static_assert(kWords >= 1, "a lane takes at least one word of a group");
};

template <int Words>
__device__ __forceinline__ void load_words(const uint8_t* p, uint32_t (&w)[Words]) {
  if constexpr (Words == 1) {
    w[0] = *reinterpret_cast<const uint32_t*>(p);
  } else if constexpr (Words == 2) {
    const uint2 v = *reinterpret_cast<const uint2*>(p);
    w[0] = v.x, w[1] = v.y;
  } else {
    load_uint4_words<Words / 4>(p, w);
  }
}

// Pair n of packed word w: the fields at bits n·kField and 16 + n·kField, each offset by the
// magic constant (one shift and one LOP3).
template <class T, int Bits, int Group, int Tiles>
__device__ __forceinline__ uint32_t code_pair(uint32_t w, int n) {
  using S = Shape<T, Bits, Group, Tiles>;
  // (w & mask) | magic is one LOP3 with the mask in a register; written in C++ the compiler
  // emits an AND and an OR with two immediates.
  uint32_t pair;
  asm("lop3.b32 %0, %1, %2, %3, 0xea;"
      : "=r"(pair)
      : "r"(w >> (n * S::kField)), "n"(S::kMask), "n"(Magic<T>::kPair));
  return pair;
}

// The x pair matching pair n of word j (x words hold (x[2i], x[2i + 1])).
template <class T, int Bits, int Group, int Tiles>
__device__ __forceinline__ uint32_t
x_pair(const uint32_t (&xw)[Shape<T, Bits, Group, Tiles>::kXWords], int j, int n) {
  if constexpr (Bits == 8) {
    // Word j: codes 4j .. 4j + 3 in bytes; pairs 0 / 2 are the low fields of (4j, 4j + 2) /
    // (4j + 1, 4j + 3), pairs 1 / 3 their high fields, which weigh 16.
    const uint32_t base = prmt(xw[2 * j], xw[2 * j + 1], (n & 2) ? 0x7632 : 0x5410);
    if (!(n & 1)) return base;
    using T2 = std::conditional_t<std::is_same_v<T, __half>, __half2, __nv_bfloat162>;
    const uint32_t sixteen = std::is_same_v<T, __half> ? 0x4c004c00u : 0x41804180u;  // 16.0
    const T2 r =
        __hmul2(*reinterpret_cast<const T2*>(&base), *reinterpret_cast<const T2*>(&sixteen));
    return *reinterpret_cast<const uint32_t*>(&r);
  } else {
    // Word j: codes C·j .. C·j + C − 1 (C = 32 / Bits); pair n = codes (C·j + n, C·j + n + C/2).
    constexpr int C = 32 / Bits;
    return prmt(xw[(C * j + n) / 2], xw[(C * j + n + C / 2) / 2], (n & 1) ? 0x7632 : 0x5410);
  }
}

// A (scale, bias) pair of T as two floats.
template <class T>
__device__ __forceinline__ float2 scale_bias(uint32_t sb) {
  if constexpr (std::is_same_v<T, __half>) {
    return __half22float2(*reinterpret_cast<const __half2*>(&sb));
  } else {
    return make_float2(__uint_as_float(sb << 16), __uint_as_float(sb & 0xffff0000u));
  }
}

template <class T, int Bits, int Group, int Tiles>
__device__ __forceinline__ void accumulate_group(
    const uint32_t (&w)[2][Shape<T, Bits, Group, Tiles>::kWords], uint32_t sb0, uint32_t sb1,
    const uint32_t (&xw)[Tiles][Shape<T, Bits, Group, Tiles>::kXWords], float (&out)[Tiles][4]) {
  using S = Shape<T, Bits, Group, Tiles>;
  uint32_t a[2][S::kPairs];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
#pragma unroll
    for (int j = 0; j < S::kWords; ++j) {
#pragma unroll
      for (int n = 0; n < S::kPairsPerWord; ++n) {
        a[r][j * S::kPairsPerWord + n] = code_pair<T, Bits, Group, Tiles>(w[r][j], n);
      }
    }
  }
  const float2 r0 = scale_bias<T>(sb0), r1 = scale_bias<T>(sb1);
  const float c0 = fmaf(-S::kOffset, r0.x, r0.y), c1 = fmaf(-S::kOffset, r1.x, r1.y);
  constexpr uint32_t kOnes = Magic<T>::kOnes;
  const uint32_t ones[4] = {kOnes, kOnes, kOnes, kOnes};
#pragma unroll
  for (int t = 0; t < Tiles; ++t) {
    uint32_t xp[S::kPairs], plain[S::kPlain];
    int np = 0;
#pragma unroll
    for (int j = 0; j < S::kWords; ++j) {
#pragma unroll
      for (int n = 0; n < S::kPairsPerWord; ++n) {
        xp[j * S::kPairsPerWord + n] = x_pair<T, Bits, Group, Tiles>(xw[t], j, n);
        if (Bits != 8 || !(n & 1)) plain[np++] = xp[j * S::kPairsPerWord + n];
      }
    }
    float acc[4] = {}, sum[4] = {};
#pragma unroll
    for (int i = 0; i < S::kPairs; i += 2) {
      const uint32_t frag[4] = {a[0][i], a[1][i], a[0][i + 1], a[1][i + 1]};
      mma<T>(acc, frag, xp[i], xp[i + 1]);
    }
#pragma unroll
    for (int i = 0; i < S::kPlain; i += 2) mma<T>(sum, ones, plain[i], plain[i + 1]);
    // acc / sum: (row g, x rows 2q, 2q + 1), (row g + 8, the same x rows).
    out[t][0] = fmaf(r0.x, acc[0], fmaf(c0, sum[0], out[t][0]));
    out[t][1] = fmaf(r0.x, acc[1], fmaf(c0, sum[1], out[t][1]));
    out[t][2] = fmaf(r1.x, acc[2], fmaf(c1, sum[2], out[t][2]));
    out[t][3] = fmaf(r1.x, acc[3], fmaf(c1, sum[3], out[t][3]));
  }
}

// Copies the (scale, bias) pairs of the block's 16 rows and groups [j0, j0 + count) into sb (row
// stride `stride` words) with every global load of a batch in flight before the first store: a
// loop of load-then-store pairs would wait for memory once per pair.
__device__ __forceinline__ void stage_scales(const Params& p, uint32_t* sb, int stride, int row0,
                                             int j0, int count, int lane) {
  int lg = 0;  // pairs are numbered e = (row << lg) + group, lg covering the count
  while ((1 << lg) < count) ++lg;
  const int total = 16 << lg;
  constexpr int kBatch = 8;
  for (int e0 = 0; e0 < total; e0 += 32 * kBatch) {
    uint32_t v[kBatch];
#pragma unroll
    for (int k = 0; k < kBatch; ++k) {
      const int e = e0 + 32 * k + lane, r = e >> lg, j = e & ((1 << lg) - 1);
      v[k] = 0u;
      if (e < total && j < count) {
        const int64_t at = static_cast<int64_t>(min(row0 + r, p.n - 1)) * p.groups + j0 + j;
        v[k] = static_cast<uint32_t>(static_cast<const uint16_t*>(p.scales)[at]) |
               static_cast<uint32_t>(static_cast<const uint16_t*>(p.biases)[at]) << 16;
      }
    }
#pragma unroll
    for (int k = 0; k < kBatch; ++k) {
      const int e = e0 + 32 * k + lane, r = e >> lg, j = e & ((1 << lg) - 1);
      if (e < total && j < count) sb[r * stride + j] = v[k];
    }
  }
}

// One x tile and groups up to 64: at most 64 registers (two blocks of 16 warps), for 32 resident
// warps per SM; left free the compiler takes 75-90 and the grid loses a third of its warps (MLX
// 4-bit g64 14336 × 4096, M 1: 31.8 against 24.0 µs). Groups of 128 spill 300-460 bytes under
// that cap (4-bit g128: 37.9 capped against 22.3 µs free); two x tiles need their registers too.
template <class T, int Bits, int Group, int Tiles>
__global__ void __launch_bounds__(32 * kMaxAffineSplits, Tiles == 1 && Group <= 64 ? 2 : 1)
    gemv_affine_kernel(const __grid_constant__ Params p) {
  using S = Shape<T, Bits, Group, Tiles>;
  // Per warp: the (scale, bias) pairs of its 16 rows for `chunk` groups, row stride chunk + 1
  // words (the 8 rows a load instruction reads fall in different banks). After every warp's
  // area: the split-K partial sums of warps 1 .. splits − 1.
  extern __shared__ uint32_t staged[];
  const int lane = threadIdx.x & 31, split = threadIdx.x >> 5;
  const int g = lane >> 2, quad = lane & 3;
  const int row0 = blockIdx.x * 16;
  const int stride = p.chunk + 1;
  uint32_t* sb = staged + split * 16 * stride;
  float* partial = reinterpret_cast<float*>(staged + p.splits * 16 * stride);
  const int begin = static_cast<int>(static_cast<int64_t>(p.groups) * split / p.splits);
  const int end = static_cast<int>(static_cast<int64_t>(p.groups) * (split + 1) / p.splits);

  // Running pointers: the next group of weights to load (rows g and g + 8) and of x. Rows past N
  // read the last row (in bounds) and are not stored; x rows past M likewise.
  const uint8_t* w[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    w[r] = p.w + static_cast<int64_t>(min(row0 + g + 8 * r, p.n - 1)) * p.row_bytes +
           quad * S::kWords * 4 + static_cast<int64_t>(begin) * S::kGroupBytes;
  }
  const T* x[Tiles];
#pragma unroll
  for (int t = 0; t < Tiles; ++t) {
    x[t] = static_cast<const T*>(p.x) + static_cast<int64_t>(min(t * 8 + g, p.m - 1)) * p.k +
           static_cast<int64_t>(begin) * Group + quad * S::kLaneCodes;
  }

  // First in flight: the weights of kAhead groups and the first chunk's scales (their latencies
  // overlap, and for a settled weight also the previous kernel's tail); x, which the previous
  // kernel may still be writing, only after its grid has completed.
  if (!p.settled) wait_for_previous_grid();
  uint32_t ring[S::kAhead][2][S::kWords];
#pragma unroll
  for (int i = 0; i < S::kAhead; ++i) {
    if (begin + i < end) {
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        load_words(w[r], ring[i][r]);
        w[r] += S::kGroupBytes;
      }
    }
  }
  if (begin < end) stage_scales(p, sb, stride, row0, begin, min(p.chunk, end - begin), lane);
  if (p.settled) wait_for_previous_grid();
  uint32_t xw[2][Tiles][S::kXWords];  // x of groups at (slot at − begin mod 2) and at + 1
  if (begin < end) {
#pragma unroll
    for (int t = 0; t < Tiles; ++t) {
      load_uint4_words<S::kXWords / 4>(reinterpret_cast<const uint8_t*>(x[t]), xw[0][t]);
      x[t] += Group;
    }
  }

  float out[Tiles][4] = {};
  // Chunks are multiples of kUnroll groups (launch), so slot i of a turn is always group at0 + i.
  for (int chunk0 = begin; chunk0 < end; chunk0 += p.chunk) {
    const int chunk_end = min(chunk0 + p.chunk, end);
    if (chunk0 != begin) {
      __syncwarp();  // the previous chunk's reads of sb are done
      stage_scales(p, sb, stride, row0, chunk0, chunk_end - chunk0, lane);
    }
    __syncwarp();
    const uint32_t* sb_g = sb + g * stride - chunk0;
    for (int at0 = chunk0; at0 < chunk_end; at0 += S::kUnroll) {
#pragma unroll
      for (int i = 0; i < S::kUnroll; ++i) {
        const int at = at0 + i;
        if (at < chunk_end) {
          if (at + 1 < end) {
#pragma unroll
            for (int t = 0; t < Tiles; ++t) {
              load_uint4_words<S::kXWords / 4>(reinterpret_cast<const uint8_t*>(x[t]),
                                               xw[(i + 1) % 2][t]);
              x[t] += Group;
            }
          }
          accumulate_group<T, Bits, Group, Tiles>(ring[i % S::kAhead], sb_g[at],
                                                  sb_g[at + 8 * stride], xw[i % 2], out);
          if (at + S::kAhead < end) {
#pragma unroll
            for (int r = 0; r < 2; ++r) {
              load_words(w[r], ring[i % S::kAhead][r]);
              w[r] += S::kGroupBytes;
            }
          }
        }
      }
    }
  }

  // out[t] = (row g, x rows 8t + 2q, 8t + 2q + 1), (row g + 8, the same x rows).
  constexpr int kOut = Tiles * 4;
  if (split > 0) {
#pragma unroll
    for (int e = 0; e < kOut; ++e)
      partial[((split - 1) * kOut + e) * 32 + lane] = out[e / 4][e % 4];
  }
  if (p.splits > 1) __syncthreads();
  if (split > 0) return;
  for (int s = 1; s < p.splits; ++s) {
#pragma unroll
    for (int e = 0; e < kOut; ++e) out[e / 4][e % 4] += partial[((s - 1) * kOut + e) * 32 + lane];
  }
#pragma unroll
  for (int t = 0; t < Tiles; ++t) {
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int xr = t * 8 + 2 * quad + (e & 1), row = row0 + g + (e >> 1) * 8;
      if (xr < p.m && row < p.n) {
        store_out(p.bias, p.bias_code, p.out, p.out_code, p.n, xr, row, out[t][e]);
      }
    }
  }
}

// False (nothing launched) when the row tiles alone exceed one wave of one-warp blocks: there
// this kernel's one-warp blocks lost to the general kernel (MLX 4-bit 151936 × 4096, M 1:
// 260.3 µs against 209.6 on the H200, docs/perf.md).
template <class T, int Bits, int Group>
bool launch(Params p, const Stream& stream) {
  const auto cuda_stream = static_cast<cudaStream_t>(stream.native_handle());
  const int tiles = (p.n + 15) / 16;
  const int x_tiles = p.m > 8 ? 2 : 1;
  auto kernel =
      x_tiles == 2 ? gemv_affine_kernel<T, Bits, Group, 2> : gemv_affine_kernel<T, Bits, Group, 1>;
  const int unroll =
      x_tiles == 2 ? Shape<T, Bits, Group, 2>::kUnroll : Shape<T, Bits, Group, 1>::kUnroll;
  const auto smem = [&](int splits, int chunk) {
    return (splits * 16 * (chunk + 1) + (splits - 1) * x_tiles * 4 * 32) * 4;
  };
  // A chunk is a multiple of the kernel's turn (its buffer slots stay static).
  const auto chunk_for = [&](int splits) {
    const int share = (p.groups + splits - 1) / splits;
    return std::min({kMaxChunk, kStagedPerBlock / splits, (share + unroll - 1) / unroll * unroll});
  };
  // Split the groups among the warps of a block only while the whole grid stays resident (one
  // wave: every warp streams at once and they finish together) and each warp keeps at least
  // two groups.
  const int sms = device_properties(stream.device()).multiprocessors;
  const auto resident_tiles = [&](int splits) {
    return int64_t{resident_blocks_per_sm(reinterpret_cast<const void*>(kernel), 32 * splits,
                                          smem(splits, chunk_for(splits)), stream.device())} *
           sms;
  };
  if (tiles > resident_tiles(1)) return false;
  p.splits = 1;
  while (p.splits * 2 <= kMaxAffineSplits && p.groups / (p.splits * 2) >= 2) {
    if (tiles > resident_tiles(p.splits * 2)) break;
    p.splits *= 2;
  }
  p.chunk = chunk_for(p.splits);
  launch_overlapping(kernel, dim3(tiles), dim3(32 * p.splits), smem(p.splits, p.chunk), cuda_stream,
                     p);
  return true;
}

template <class T>
bool run(const linear::Job& job, const Stream& stream) {
  const Weight& w = job.w;
  Params p{};
  p.w = static_cast<const uint8_t*>(w.data().data());
  p.row_bytes = w.data().dim(1) * w.data().element_size();
  p.scales = w.scales().data();
  p.biases = w.biases().data();
  p.x = job.x.data();
  p.bias = job.bias.defined() ? job.bias.data() : nullptr;
  p.bias_code = job.bias.defined() ? float_dtype_code(job.bias.dtype()) : 0;
  p.out = job.out.data();
  p.out_code = float_dtype_code(job.out.dtype());
  p.m = static_cast<int>(job.m);
  p.n = static_cast<int>(job.n);
  p.k = static_cast<int>(job.k);
  p.groups = static_cast<int>(job.k / w.group_size());
  p.settled = w.settled();
  switch (w.bits() * 1000 + w.group_size()) {
    case 2064:
      return launch<T, 2, 64>(p, stream);
    case 2128:
      return launch<T, 2, 128>(p, stream);
    case 4032:
      return launch<T, 4, 32>(p, stream);
    case 4064:
      return launch<T, 4, 64>(p, stream);
    case 4128:
      return launch<T, 4, 128>(p, stream);
    case 8032:
      return launch<T, 8, 32>(p, stream);
    case 8064:
      return launch<T, 8, 64>(p, stream);
    case 8128:
      return launch<T, 8, 128>(p, stream);
    default:
      return false;  // 3, 5, 6 bits and 2-bit groups of 32: the general kernel
  }
}

}  // namespace affine

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
    Fmt::load(raw_a, p.w, row_a, ch);
    Fmt::load(raw_b, p.w, row_b, ch);
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
        mma<T>(acc[t], a, b0, b1);
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
        if (xrow < p.m && row < p.n)
          store_out(p.bias, p.bias_code, p.out, p.out_code, p.n, xrow, row, acc[t][e]);
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
    // Split order, with four loads in flight at a time (a serial chain of L2 round trips
    // would dominate the whole kernel at small N).
    const float* src = p.partials + static_cast<int64_t>(xrow) * p.n + row;
    const int64_t stride = static_cast<int64_t>(p.m) * p.n;
    float v = 0.0f;
    int s = 0;
    for (; s + 4 <= p.splits; s += 4) {
      const float a = __ldcg(src + s * stride), b = __ldcg(src + (s + 1) * stride);
      const float c = __ldcg(src + (s + 2) * stride), d = __ldcg(src + (s + 3) * stride);
      v = (((v + a) + b) + c) + d;
    }
    for (; s < p.splits; ++s) v += __ldcg(src + s * stride);
    store_out(p.bias, p.bias_code, p.out, p.out_code, p.n, xrow, row, v);
  }
  if (threadIdx.x == 0) p.arrivals[blockIdx.x] = 0;
}

template <class Fmt, class T>
void launch(Params p, const Stream& stream) {
  const auto cuda_stream = static_cast<cudaStream_t>(stream.native_handle());
  const int tiles = p.m > 8 ? 2 : 1;
  const int row_tiles = (p.n + kRowsPerBlock - 1) / kRowsPerBlock;
  // Split K only as far as needed for about kBlocksPerSm blocks per SM, and never below
  // kMinSplitSteps steps per split: a split's partial sums and the reduction cost more than a
  // short run of steps saves.
  const int target_blocks = kBlocksPerSm * device_properties(stream.device()).multiprocessors;
  p.splits = std::clamp((target_blocks + row_tiles - 1) / row_tiles, 1,
                        std::min(kMaxSplits, std::max(1, p.steps / kMinSplitSteps)));
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

}  // namespace

bool gemv_packed(const linear::Job& job, const Stream& stream) {
  const Weight& w = job.w;
  if (w.format() == WeightFormat::dense || job.m > kMaxRows) return false;
  if (job.x.dtype() != DType::bf16 && job.x.dtype() != DType::f16) return false;
  // Vector loads: x rows and the weight rows must be 16-byte aligned (K is a multiple of 32, so
  // x rows are whenever x is; MLX and K-quant rows are whenever the data is).
  if (!job.x.is_aligned(16) || !w.data().is_aligned(16)) return false;
  if (job.n > (1 << 30) || job.k > (1 << 30)) return false;
  if (w.format() == WeightFormat::mlx_affine && w.scales().dtype() == job.x.dtype() &&
      w.biases().dtype() == job.x.dtype()) {
    const bool ran = job.x.dtype() == DType::bf16 ? affine::run<__nv_bfloat16>(job, stream)
                                                  : affine::run<__half>(job, stream);
    if (ran) return true;
  }
  Params p{};
  p.w = packed::packed_weight(w);
  p.x = job.x.data();
  p.bias = job.bias.defined() ? job.bias.data() : nullptr;
  p.bias_code = job.bias.defined() ? float_dtype_code(job.bias.dtype()) : 0;
  p.out = job.out.data();
  p.out_code = float_dtype_code(job.out.dtype());
  p.m = static_cast<int>(job.m);
  p.n = static_cast<int>(job.n);
  p.k = static_cast<int>(job.k);
  p.chunks = p.k / kChunk;
  p.steps = (p.chunks + 3) / 4;
  packed::with_format(w, [&](auto fmt) {
    using Fmt = decltype(fmt);
    if (job.x.dtype() == DType::bf16) {
      launch<Fmt, __nv_bfloat16>(p, stream);
    } else {
      launch<Fmt, __half>(p, stream);
    }
  });
  return true;
}

}  // namespace mlxn::cuda
