// Decode attention over the paged KV cache: one kernel template for every cache type, through
// a KV-format policy (how a tile is laid out in shared memory and how its bytes become tensor-core
// fragments), plus the split merge. Design and data flow: docs/kv_cache.md.
//
// One CTA = 4 warps = one (sequence, kv-head, block of 16 query rows, split of the key range).
// Query rows are the GQA group's heads times the query tokens (row = token * group + head).
// Tiles of keys stream through shared memory with cp.async (two stages); each warp takes 32 keys
// of a tile (a "key group") or, for head_dim 256/512, shares them with 1 or 3 other warps that
// each own a 128-wide slice of the output. Per 32 keys a warp computes S = Q K^T with
// mma.m16n8k16 (f32 accumulation), an online softmax in base 2, and O += P V with mma.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include <cstdint>

#include "backend/cuda/device/mma.cuh"
#include "backend/cuda/device/pdl.cuh"
#include "backend/cuda/turboquant/common.cuh"
#include "portable/error_state.h"
#include "portable/turboquant.h"
#include "portable/turboquant_codebook.h"

namespace mlxn::cuda::decode {

inline constexpr int kWarps = 4;
inline constexpr int kThreads = 32 * kWarps;
inline constexpr int kRows = 16;      // query rows per CTA: one mma M tile
inline constexpr int kLutCopies = 4;  // lookup tables are replicated so lanes spread over banks

enum QType : int { q_f32 = 0, q_bf16 = 1, q_f16 = 2 };

struct Args {
  const void* q;
  int q_type;
  const uint8_t* k_data;
  const uint8_t* v_data;
  const void* k_scales;  // tq: f16 per vector; fp8: f32 per kv-head; dense: unused
  const void* v_scales;
  const int32_t* page_table;
  const int32_t* lengths;
  float* part_o;    // [partials, dim]: un-normalised O of each (row, split)
  float2* part_ml;  // [partials]: (running max in log2 units, sum of weights)
  int batch, q_len, q_heads, kv_heads, group, row_blocks, dim, log2_page, table_width, ring_pages,
      window, splits;
  long long num_pages;
  float scale, softcap;
  DeviceErrorState* flag;
  uint32_t site;
};

// ---- KV formats -----------------------------------------------------------------------------
// kDense: bf16/f16 rows read with ldmatrix; keys in natural order inside a 16-key block.
// Otherwise ("packed": fp8, TurboQuant) each lane decodes its own bytes; keys are grouped so a
// lane's four P columns are four consecutive keys, and a lane's S-side dims are a contiguous run.
// KMma / VMma: the tensor-core input type when the format is the K / V side. S = Q K^T runs in
// f16 for everything but bf16 caches (q is normalised first, so f16 cannot overflow). P V runs in
// bf16 for TurboQuant (p * alpha spans alpha's whole f16 range and must keep its relative
// precision), in the cache's own type for dense V, and in f16 for fp8 (exact).
template <class T>
struct DenseFormat {
  using KMma = T;
  using VMma = T;
  static constexpr bool kDense = true, kFp8 = false, kTq = false;
  static constexpr int kBits = 16;
};
struct Fp8Format {
  using KMma = __half;
  using VMma = __half;
  static constexpr bool kDense = false, kFp8 = true, kTq = false;
  static constexpr int kBits = 8;
};
template <int B>
struct TqFormat {
  using KMma = __half;
  using VMma = __nv_bfloat16;
  static constexpr bool kDense = false, kFp8 = false, kTq = true;
  static constexpr int kBits = B;
  static constexpr bool kPairLut = B <= 4;  // one lookup yields two values
  static constexpr int kLutEntries = kPairLut ? 1 << (2 * B) : 1 << B;
};

// Keys per warp per tile and pipeline depth. Dense rows are 4-8x larger: 16 keys per warp and
// three stages keep a tile at 32 KB (bf16, head_dim 128) so three CTAs fit on an SM, with two
// tiles in flight each; packed formats take 32 keys per warp to amortise the per-tile work.
template <class KF>
inline constexpr int kWarpKeys = KF::kDense ? 16 : 32;
template <class KF>
inline constexpr int kStages = KF::kDense ? 3 : 2;

template <class F>
__host__ __device__ constexpr int row_bytes(int dim) {
  return dim * F::kBits / 8;
}
// Rows are stored in units: dense rows one by one with 16 bytes of padding (ldmatrix rows of one
// 8x8 matrix fall in distinct banks); packed rows in groups of four with 32 bytes after each group
// (the four rows a lane reads for P V start in four distinct bank quarters).
template <class F>
__host__ __device__ constexpr int unit_rows() {
  return F::kDense ? 1 : 4;
}
template <class F>
__host__ __device__ constexpr int unit_stride(int dim) {
  return F::kDense ? row_bytes<F>(dim) + 16 : 4 * row_bytes<F>(dim) + 32;
}
template <class F>
__device__ __forceinline__ int row_offset(int r, int dim) {
  return F::kDense ? r * unit_stride<F>(dim)
                   : (r >> 2) * unit_stride<F>(dim) + (r & 3) * row_bytes<F>(dim);
}
template <class F>
__host__ __device__ constexpr int region_bytes(int dim, int keys) {
  return keys / unit_rows<F>() * unit_stride<F>(dim);
}
template <class F>
__host__ __device__ constexpr int lut_bytes() {
  if constexpr (F::kTq) {
    return F::kLutEntries * kLutCopies * 4;
  } else {
    return 0;
  }
}

// The dim that S-column kappa (0..15) of k-step `s` multiplies (the Q smem column order).
template <class F>
__device__ __forceinline__ int q_dim_of(int s, int kappa, int dim, int ksteps_per_chunk) {
  if constexpr (F::kDense) {
    return 16 * s + kappa;
  } else {
    const int lane_q = (kappa & 7) >> 1, sub = (kappa & 1) + ((kappa >> 3) << 1);
    const int chunk = s / ksteps_per_chunk, step = s % ksteps_per_chunk;
    return lane_q * (dim / 4) + 4 * ksteps_per_chunk * chunk + 4 * step + sub;
  }
}
// Key (0..15 inside a 16-key block) of S accumulator column (n-tile j, lane quad tq, element e).
template <class F>
__device__ __forceinline__ int key_of(int j, int tq, int e) {
  return F::kDense ? 8 * j + 2 * tq + e : 4 * tq + 2 * j + e;
}

// ---- PTX wrappers ---------------------------------------------------------------------------
// One-dimensional bulk copies (TMA) into shared memory, completing on an mbarrier: one
// instruction per row or group of rows instead of one per 16 bytes.
__device__ __forceinline__ void mbar_init(uint64_t* bar, uint32_t count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(smem_addr(bar)), "r"(count));
}
__device__ __forceinline__ void mbar_expect_tx(uint64_t* bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(smem_addr(bar)),
               "r"(bytes)
               : "memory");
}
__device__ __forceinline__ void mbar_wait(uint64_t* bar, uint32_t parity) {
  uint32_t done = 0;
  while (!done) {
    asm volatile(
        "{ .reg .pred p; mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2; selp.u32 %0, 1, 0, "
        "p; }\n"
        : "=r"(done)
        : "r"(smem_addr(bar)), "r"(parity)
        : "memory");
  }
}
__device__ __forceinline__ void bulk_copy(uint32_t dst, const void* src, uint32_t bytes,
                                          uint64_t* bar) {
  asm volatile(
      "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];\n" ::
          "r"(dst),
      "l"(src), "r"(bytes), "r"(smem_addr(bar))
      : "memory");
}
__device__ __forceinline__ uint32_t e4m3x2_to_half2(uint32_t two_bytes) {
  uint32_t out;
  asm("{ .reg .b16 t; cvt.u16.u32 t, %1; cvt.rn.f16x2.e4m3x2 %0, t; }\n"
      : "=r"(out)
      : "r"(two_bytes));
  return out;
}
// `n` bits at bit offset `bit` of a little-endian word array (n <= 32; bit, n compile-time after
// unrolling so this is a shift and a mask).
template <int W>
__device__ __forceinline__ uint32_t bits_at(const uint32_t (&w)[W], int bit, int n) {
  const int i = bit >> 5, sh = bit & 31;
  const uint32_t lo = w[i];
  const uint32_t hi = i + 1 < W ? w[i + 1] : 0u;
  const uint32_t v = sh == 0 ? lo : __funnelshift_r(lo, hi, sh);
  return n == 32 ? v : v & ((1u << n) - 1u);
}

// kBytes bytes from shared memory into little-endian words; `src` is aligned to the largest
// power of two (up to 16) that divides kBytes, which the layouts guarantee.
template <int kBytes, int W>
__device__ __forceinline__ void load_bytes(const unsigned char* src, uint32_t (&w)[W]) {
  static_assert(W * 4 >= kBytes);
#pragma unroll
  for (int i = 0; i < W; ++i) w[i] = 0;
  if constexpr (kBytes % 16 == 0) {
#pragma unroll
    for (int i = 0; i < kBytes / 16; ++i) {
      const uint4 x = reinterpret_cast<const uint4*>(src)[i];
      w[4 * i] = x.x;
      w[4 * i + 1] = x.y;
      w[4 * i + 2] = x.z;
      w[4 * i + 3] = x.w;
    }
  } else if constexpr (kBytes % 8 == 0) {
#pragma unroll
    for (int i = 0; i < kBytes / 8; ++i) {
      const uint2 x = reinterpret_cast<const uint2*>(src)[i];
      w[2 * i] = x.x;
      w[2 * i + 1] = x.y;
    }
  } else if constexpr (kBytes % 4 == 0) {
#pragma unroll
    for (int i = 0; i < kBytes / 4; ++i) w[i] = reinterpret_cast<const uint32_t*>(src)[i];
  } else if constexpr (kBytes % 2 == 0) {
#pragma unroll
    for (int i = 0; i < kBytes / 2; ++i)
      w[i / 2] |= static_cast<uint32_t>(reinterpret_cast<const uint16_t*>(src)[i])
                  << (16 * (i & 1));
  } else {
#pragma unroll
    for (int i = 0; i < kBytes; ++i) w[i / 4] |= static_cast<uint32_t>(src[i]) << (8 * (i & 3));
  }
}

// ---- Codebook lookup tables (TurboQuant) ----------------------------------------------------
// Entry e, copy c at word e * kLutCopies + c. Pair tables map (code0 | code1 << B) to the packed
// pair (C[code0], C[code1]); single tables map a code to C[code] in the low half.
// `staging`: 2^(B-1) floats of shared memory for the magnitudes (constant-memory reads with a
// different index per lane would serialise).
template <class F, class T>
__device__ void build_lut(uint32_t* lut, float* staging) {
  if constexpr (F::kTq) {
    constexpr int B = F::kBits;
    const float* mc = device_magnitudes(B);
    for (int i = threadIdx.x; i < (1 << (B - 1)); i += kThreads) staging[i] = mc[i];
    __syncthreads();
    const float* m = staging;
    // One entry per iteration, its kLutCopies copies written with one 16-byte store.
    static_assert(kLutCopies == 4);
    for (int e = threadIdx.x; e < F::kLutEntries; e += kThreads) {
      uint32_t v;
      if constexpr (F::kPairLut) {
        v = pack2<T>(tq::centroid(m, B, e & ((1 << B) - 1)), tq::centroid(m, B, e >> B));
      } else {
        v = pack2<T>(tq::centroid(m, B, e), 0.0f);
      }
      reinterpret_cast<uint4*>(lut)[e] = make_uint4(v, v, v, v);
    }
    __syncthreads();
  }
}
// Lookups take byte offsets: entry * 16 (kLutCopies words) with the lane's copy (lane & 3) * 4
// ORed into the low bits, so an index costs a shift and a LOP3 and the table's own address
// folds into the load's immediate.
inline constexpr int kLutEntryShift = 4;  // log2(kLutCopies * 4)
static_assert(kLutCopies * 4 == 1 << kLutEntryShift);
__device__ __forceinline__ uint32_t lut_load(const uint32_t* lut, uint32_t byte_offset) {
  return *reinterpret_cast<const uint32_t*>(reinterpret_cast<const char*>(lut) + byte_offset);
}
// Offset of entry (bits [shift, shift + 8) of w) for the pair tables of 4-bit codes.
// (`shift` is a constant once the loops around a call are unrolled.)
__device__ __forceinline__ uint32_t byte_entry_offset(uint32_t w, int shift, uint32_t lane4) {
  const int sh = shift - kLutEntryShift;
  const uint32_t v = sh >= 0 ? (w >> sh) : (w << -sh);
  return (v & (0xffu << kLutEntryShift)) | lane4;
}
template <class F>
__device__ __forceinline__ uint32_t lut_pair(const uint32_t* lut, uint32_t lane4, uint32_t c0,
                                             uint32_t c1) {
  if constexpr (F::kPairLut) {
    return lut_load(lut, ((c0 | (c1 << F::kBits)) << kLutEntryShift) | lane4);
  } else {
    return (lut_load(lut, (c0 << kLutEntryShift) | lane4) & 0xffffu) |
           (lut_load(lut, (c1 << kLutEntryShift) | lane4) << 16);
  }
}

// ---- The kernel -----------------------------------------------------------------------------
struct Smem {
  int q_bytes, lut_k, lut_v, stage_bytes, k_region, v_region, merge_bytes, total;
};

template <int D>
inline constexpr int kSlice = D == 64 ? 64 : 128;  // output dims per warp

template <class KF, class VF, int D>
__host__ __device__ constexpr Smem smem_plan() {
  constexpr int dim = D, DS = kSlice<D>;
  const int slices = dim / DS;
  const int keys = kWarpKeys<KF> * (kWarps / slices);
  Smem s{};
  s.q_bytes = kRows * (dim + 8) * 2;
  s.lut_k = lut_bytes<KF>();
  s.lut_v = lut_bytes<VF>();
  s.k_region = region_bytes<KF>(dim, keys);
  s.v_region = region_bytes<VF>(dim, keys);
  const int scale_bytes = (KF::kTq ? 2 * keys : 0) + (VF::kTq ? 2 * keys : 0);
  s.stage_bytes = s.k_region + s.v_region + scale_bytes;
  const int groups = kWarps / slices;
  s.merge_bytes = groups > 1 ? groups * kRows * (dim + 2) * 4 : 0;
  const int prologue = kRows * dim * 4;  // q as f32 while it is rotated and scaled
  int body = kStages<KF> * s.stage_bytes;
  if (body < s.merge_bytes) body = s.merge_bytes;
  if (body < prologue) body = prologue;
  s.total = s.q_bytes + s.lut_k + s.lut_v + body;
  return s;
}

template <class KF, class VF, int D>
__global__ void __launch_bounds__(kThreads, KF::kDense ? 2 : 4) decode_attention_kernel(Args a) {
  allow_dependents_early();
  wait_for_previous_grid();  // launched overlapping (device/pdl.cuh)
  using KT = typename KF::KMma;
  using VT = typename VF::VMma;
  constexpr int dim = D, DS = kSlice<D>;
  constexpr int kNt = DS / 8;   // output n-tiles per warp
  constexpr int kKc = DS / 16;  // k-steps per S chunk (8, or 4 for head_dim 64)
  extern __shared__ __align__(128) unsigned char smem[];
  constexpr int kStages_ = kStages<KF>, kKeys = kWarpKeys<KF>;
  constexpr int kBlocks = kKeys / 16, kNs = kKeys / 8;  // 16-key blocks and S n-tiles per warp
  __shared__ uint64_t stage_full[kStages_];
  constexpr Smem plan = smem_plan<KF, VF, D>();
  constexpr int slices = dim / DS, groups = kWarps / slices, tile_keys = kKeys * groups;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, tq = lane & 3;
  const int key_group = warp / slices, dslice = (warp % slices) * DS;

  unsigned char* q_smem = smem;
  uint32_t* lut_k = reinterpret_cast<uint32_t*>(smem + plan.q_bytes);
  uint32_t* lut_v = reinterpret_cast<uint32_t*>(smem + plan.q_bytes + plan.lut_k);
  unsigned char* body = smem + plan.q_bytes + plan.lut_k + plan.lut_v;

  const int split = blockIdx.x;
  const int kvh = blockIdx.y / a.row_blocks, rb = blockIdx.y % a.row_blocks;
  const int b = blockIdx.z;
  const int page = 1 << a.log2_page;
  const int rows_total = a.group * a.q_len;
  const long long part0 =
      ((static_cast<long long>(b) * a.kv_heads + kvh) * a.row_blocks + rb) * kRows;

  // ---- sequence, key range, this split's tiles
  const int len = a.lengths[b];
  bool bad = len < a.q_len;
  if (a.ring_pages == 0 && static_cast<long long>(len) > static_cast<long long>(a.table_width)
                                                             << a.log2_page)
    bad = true;
  if (bad) {
    if (tid == 0 && split == 0 && blockIdx.y == 0) {
      report_device_error(a.flag, DeviceErrorCode::index_out_of_range, a.site, b, len, 0.0f);
    }
    for (int i = tid; i < kRows; i += kThreads)
      if (rb * kRows + i < rows_total)
        a.part_ml[(part0 + i) * a.splits + split] = make_float2(-INFINITY, 0.0f);
    return;
  }
  const int first_pos = len - a.q_len;
  const int lo = a.window > 0 && first_pos - a.window + 1 > 0 ? first_pos - a.window + 1 : 0;
  const int tile0 = lo / tile_keys;
  const int n_tiles = (len - tile0 * tile_keys + tile_keys - 1) / tile_keys;
  const int per_split = (n_tiles + a.splits - 1) / a.splits;
  const int t_begin = split * per_split;
  const int t_end = min(n_tiles, t_begin + per_split);

  // ---- prologue: codebook tables, q rows rotated (TurboQuant), scaled and normalised
  build_lut<KF, __half>(lut_k, reinterpret_cast<float*>(body));
  build_lut<VF, __nv_bfloat16>(lut_v, reinterpret_cast<float*>(body));
  __shared__ int row_source[kRows];  // element offset of each row's q vector, -1 for padding
  if (tid < kRows) {
    const int row = rb * kRows + tid;
    row_source[tid] = -1;
    if (row < rows_total) {
      const int token = row / a.group, head = kvh * a.group + row % a.group;
      row_source[tid] = ((b * a.q_len + token) * a.q_heads + head) * dim;
    }
  }
  __syncthreads();
  float* qf = reinterpret_cast<float*>(body);
  const bool sign_here = KF::kTq && D <= kThreads && tq::sign_is_negative(tid % D);
  for (int i = tid; i < kRows * dim; i += kThreads) {
    const int r = i / dim, d = i % dim;
    float v = 0.0f;
    if (row_source[r] >= 0) {
      const long long at = static_cast<long long>(row_source[r]) + d;
      v = a.q_type == q_f32    ? static_cast<const float*>(a.q)[at]
          : a.q_type == q_bf16 ? __bfloat162float(static_cast<const __nv_bfloat16*>(a.q)[at])
                               : __half2float(static_cast<const __half*>(a.q)[at]);
      if constexpr (KF::kTq) {
        // kThreads is a multiple of D up to 128: each thread keeps one d there.
        const bool negative = D <= kThreads ? sign_here : tq::sign_is_negative(d);
        if (negative) v = -v;
      }
    }
    qf[i] = v;
  }
  __syncthreads();
  if constexpr (KF::kTq) {
    // The unnormalised FWHT of each real row, one warp per row: a lane holds D/32 consecutive
    // coordinates, stages below D/32 run in registers, the others pair lanes by shuffles
    // (butterfly (a, b) -> (a + b, a - b), a the lower index, stages h = 1, 2, ..., D/2).
    constexpr int kPer = dim / 32;
    for (int r = warp; r < kRows; r += kWarps) {
      if (row_source[r] < 0) continue;  // padding rows stay zero
      float v[kPer];
      float* row = qf + r * dim + lane * kPer;
#pragma unroll
      for (int i = 0; i < kPer; ++i) v[i] = row[i];
#pragma unroll
      for (int h = 1; h < kPer; h *= 2) {
#pragma unroll
        for (int i = 0; i < kPer; ++i) {
          if ((i & h) == 0) {
            const float x = v[i], y = v[i + h];
            v[i] = x + y;
            v[i + h] = x - y;
          }
        }
      }
#pragma unroll
      for (int m = 1; m < 32; m *= 2) {
        const bool upper = (lane & m) != 0;
#pragma unroll
        for (int i = 0; i < kPer; ++i) {
          const float other = __shfl_xor_sync(0xffffffffu, v[i], m);
          v[i] = upper ? other - v[i] : v[i] + other;
        }
      }
#pragma unroll
      for (int i = 0; i < kPer; ++i) row[i] = v[i];
    }
    __syncthreads();
  }
  // Per-row scale: softmax scale (and log2 e unless a softcap needs the natural logit), the
  // rotation's 1/sqrt(D), and a power of two that puts the row's largest |q| in [1, 2) so f16
  // keeps full precision; `row_factor` undoes the power of two (and applies fp8's K scale).
  const float log2e = 1.4426950408889634f;
  const float q_mul = a.scale * (a.softcap > 0.0f ? 1.0f : log2e) *
                      (KF::kTq ? rsqrtf(static_cast<float>(dim)) : 1.0f);
  __shared__ float row_factor_s[kRows];
  {
    // 8 threads per row.
    const int r = tid >> 3, part = tid & 7;
    const bool real = row_source[r] >= 0;  // padding rows are zeros: nothing to read
    float amax = 0.0f;
    if (real)
      for (int d = part; d < dim; d += 8) amax = fmaxf(amax, fabsf(qf[r * dim + d] * q_mul));
    for (int o = 4; o > 0; o >>= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
    const int e = amax > 0.0f ? tq::exponent_of(amax) : 0;
    const float down = ldexpf(1.0f, -e);
    KT* qrow = reinterpret_cast<KT*>(q_smem) + r * (dim + 8);
    for (int c = part; c < dim; c += 8) {
      const int s = c >> 4, kappa = c & 15;
      const float v = real ? qf[r * dim + q_dim_of<KF>(s, kappa, dim, kKc)] * q_mul * down : 0.0f;
      if constexpr (std::is_same_v<KT, __half>) {
        qrow[c] = __float2half_rn(v);
      } else {
        qrow[c] = __float2bfloat16_rn(v);
      }
    }
    if (part == 0) {
      float f = ldexpf(1.0f, e);
      if constexpr (KF::kFp8) f *= static_cast<const float*>(a.k_scales)[kvh];
      row_factor_s[r] = f;
    }
  }
  __syncthreads();

  // ---- tile staging: bulk copies of whole rows (dense) or groups of 4 rows (packed), and of
  // each page's run of TurboQuant scales. A row past the sequence or the table, or on a bad page,
  // is copied from page 0 instead (finite, and masked out), so every stage always receives the
  // same byte count.
  constexpr int rbk = row_bytes<KF>(dim), rbv = row_bytes<VF>(dim);
  constexpr int k_units = tile_keys / unit_rows<KF>(), v_units = tile_keys / unit_rows<VF>();
  constexpr int run_keys = 16;  // scale runs: 16 keys (32 bytes), inside one page at any page size
  constexpr int k_runs = KF::kTq ? tile_keys / run_keys : 0,
                v_runs = VF::kTq ? tile_keys / run_keys : 0;
  constexpr int all_copies = k_units + v_units + k_runs + v_runs;
  constexpr uint32_t stage_tx =
      static_cast<uint32_t>(k_units * unit_rows<KF>() * rbk + v_units * unit_rows<VF>() * rbv +
                            (k_runs + v_runs) * run_keys * 2);
  const long long head_rows = static_cast<long long>(a.kv_heads) << a.log2_page;
  if (tid == 0) {
    for (int i = 0; i < kStages_; ++i) mbar_init(&stage_full[i], 1);
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
  }
  __syncthreads();

  auto stage_ptr = [&](int i) { return body + (i % kStages_) * plan.stage_bytes; };
  // Row index (page * kv_heads + kvh) * page + slot of position p, or of page 0 when p has none.
  auto source_row = [&](int p) -> long long {
    const long long fallback = static_cast<long long>(kvh) << a.log2_page;
    if (p >= len) return fallback;
    int n = p >> a.log2_page;
    if (a.ring_pages > 0) n %= a.ring_pages;
    const long long pg =
        n < a.table_width ? a.page_table[static_cast<long long>(b) * a.table_width + n] : -1;
    if (pg < 0 || pg >= a.num_pages) {
      report_device_error(a.flag, DeviceErrorCode::index_out_of_range, a.site,
                          static_cast<long long>(b) * a.table_width + n, pg, 0.0f);
      return fallback;
    }
    return pg * head_rows + fallback + (p & (page - 1));
  };
  auto load_tile = [&](int t, int i) {
    unsigned char* st = stage_ptr(i);
    uint64_t* bar = &stage_full[i % kStages_];
    fence_proxy_async();
    if (tid == 0) mbar_expect_tx(bar, stage_tx);
    const int pos0 = (tile0 + t) * tile_keys;
    for (int c = tid; c < all_copies; c += kThreads) {
      if (c < k_units) {
        const long long row = source_row(pos0 + c * unit_rows<KF>());
        bulk_copy(smem_addr(st + c * unit_stride<KF>(dim)), a.k_data + row * rbk,
                  unit_rows<KF>() * rbk, bar);
      } else if (c < k_units + v_units) {
        const int u = c - k_units;
        const long long row = source_row(pos0 + u * unit_rows<VF>());
        bulk_copy(smem_addr(st + plan.k_region + u * unit_stride<VF>(dim)), a.v_data + row * rbv,
                  unit_rows<VF>() * rbv, bar);
      } else {
        const int r = c - k_units - v_units;
        const bool is_k = r < k_runs;
        const int run = is_k ? r : r - k_runs;
        const long long row = source_row(pos0 + run * run_keys);
        const void* src = static_cast<const uint16_t*>(is_k ? a.k_scales : a.v_scales) + row;
        bulk_copy(smem_addr(st + plan.k_region + plan.v_region +
                            (is_k ? 0 : k_runs * run_keys * 2) + run * run_keys * 2),
                  src, run_keys * 2, bar);
      }
    }
  };

  // ---- per-thread query rows: positions bound the keys each row may see
  int row_pos[2], row_first[2];
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int row = rb * kRows + g + 8 * h;
    const int token = row < rows_total ? row / a.group : a.q_len - 1;
    row_pos[h] = len - a.q_len + token;
    row_first[h] = a.window > 0 && row_pos[h] - a.window + 1 > 0 ? row_pos[h] - a.window + 1 : 0;
  }
  const float row_f[2] = {row_factor_s[g], row_factor_s[g + 8]};

  float o[kNt][4];
#pragma unroll
  for (int n = 0; n < kNt; ++n) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;
  float m_run[2] = {-INFINITY, -INFINITY}, l_run[2] = {0.0f, 0.0f};

  const uint32_t lane4 = static_cast<uint32_t>(lane & (kLutCopies - 1)) * 4;
  // Rows g + 8 of the m16 tile hold queries only when a block has more than 8 real rows; with
  // fewer (GQA 4 and 8 at one query token) their softmax work is skipped.
  const bool upper_rows = rows_total - rb * kRows > 8;
  const KT* q_tile = reinterpret_cast<const KT*>(q_smem);
  const int q_stride = dim + 8;

  for (int i = 0; i < kStages_ - 1 && t_begin + i < t_end; ++i) load_tile(t_begin + i, i);
  for (int t = t_begin; t < t_end; ++t) {
    const int i = t - t_begin;
    if (t + kStages_ - 1 < t_end) load_tile(t + kStages_ - 1, i + kStages_ - 1);
    mbar_wait(&stage_full[i % kStages_], static_cast<uint32_t>((i / kStages_) & 1));
    const unsigned char* st = stage_ptr(i);
    const unsigned char* k_tile = st;
    const unsigned char* v_tile = st + plan.k_region;
    const uint16_t* k_alpha = reinterpret_cast<const uint16_t*>(st + plan.k_region + plan.v_region);
    const uint16_t* v_alpha = k_alpha + (KF::kTq ? tile_keys : 0);
    const int wkey0 = key_group * kKeys;                // this warp's first key in the tile
    const int pos_w = (tile0 + t) * tile_keys + wkey0;  // its position

    // S = Q K^T for this warp's keys: s[nt][..], nt = 2 * block + j
    float s[kNs][4];
#pragma unroll
    for (int nt = 0; nt < kNs; ++nt) s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.0f;
    const int ksteps = dim / 16;
    // Dense K: odd k-steps accumulate apart, so each warp has 2 * kNs independent mma chains
    // instead of kNs (with 16 keys per warp the single chain's latency was exposed).
    float s_odd[kNs][4];
#pragma unroll
    for (int nt = 0; nt < kNs; ++nt)
      s_odd[nt][0] = s_odd[nt][1] = s_odd[nt][2] = s_odd[nt][3] = 0.0f;
    for (int c0 = 0; c0 < ksteps; c0 += kKc) {
      if constexpr (KF::kDense) {
#pragma unroll
        for (int sp = 0; sp < kKc; sp += 2) {
          uint32_t qa[2][4];
#pragma unroll
          for (int u = 0; u < 2; ++u) {
            const KT* qs = q_tile + (c0 + sp + u) * 16 + 2 * tq;
            qa[u][0] = *reinterpret_cast<const uint32_t*>(qs + g * q_stride);
            qa[u][1] = *reinterpret_cast<const uint32_t*>(qs + (g + 8) * q_stride);
            qa[u][2] = *reinterpret_cast<const uint32_t*>(qs + g * q_stride + 8);
            qa[u][3] = *reinterpret_cast<const uint32_t*>(qs + (g + 8) * q_stride + 8);
          }
#pragma unroll
          for (int nt = 0; nt < kNs; ++nt) {
            const int mi = lane >> 3, rr = lane & 7;
            const int krow = wkey0 + nt * 8 + rr;
            const int d = 16 * (c0 + sp + (mi >> 1)) + 8 * (mi & 1);
            uint32_t bf[4];
            ldmatrix_x4(smem_addr(k_tile + row_offset<KF>(krow, dim) + d * 2), bf);
            mma<KT>(s[nt], qa[0], bf[0], bf[1]);
            mma<KT>(s_odd[nt], qa[1], bf[2], bf[3]);
          }
        }
      } else {
        // Each lane's bytes for this chunk: its key row, dims tq*D/4 + 4*kKc*chunk + [0, 4*kKc).
        constexpr int kWords = (4 * kKc * KF::kBits / 8 + 3) / 4;
        uint32_t w[kNs][kWords];
        const int dim_base = tq * (dim / 4) + 4 * c0;
#pragma unroll
        for (int nt = 0; nt < kNs; ++nt) {
          const int krow = wkey0 + (nt >> 1) * 16 + 4 * (g >> 1) + (g & 1) + 2 * (nt & 1);
          const unsigned char* src = k_tile + row_offset<KF>(krow, dim) + dim_base * KF::kBits / 8;
          load_bytes<4 * kKc * KF::kBits / 8>(src, w[nt]);
        }
#pragma unroll
        for (int st2 = 0; st2 < kKc; ++st2) {
          uint32_t qa[4];
          const KT* qs = q_tile + (c0 + st2) * 16 + 2 * tq;
          qa[0] = *reinterpret_cast<const uint32_t*>(qs + g * q_stride);
          qa[1] = *reinterpret_cast<const uint32_t*>(qs + (g + 8) * q_stride);
          qa[2] = *reinterpret_cast<const uint32_t*>(qs + g * q_stride + 8);
          qa[3] = *reinterpret_cast<const uint32_t*>(qs + (g + 8) * q_stride + 8);
#pragma unroll
          for (int nt = 0; nt < kNs; ++nt) {
            uint32_t b0, b1;
            if constexpr (KF::kFp8) {
              const uint32_t word = w[nt][st2];
              b0 = e4m3x2_to_half2(word & 0xffffu);
              b1 = e4m3x2_to_half2(word >> 16);
            } else {
              constexpr int B = KF::kBits;
              const int bit = 4 * st2 * B;
              if constexpr (B == 4) {
                // Pairs of 4-bit codes are whole bytes: byte 2*st2 and 2*st2 + 1 of the run.
                const uint32_t word = w[nt][st2 >> 1];
                b0 = lut_load(lut_k, byte_entry_offset(word, 16 * (st2 & 1), lane4));
                b1 = lut_load(lut_k, byte_entry_offset(word, 16 * (st2 & 1) + 8, lane4));
              } else if constexpr (TqFormat<B>::kPairLut) {
                b0 = lut_load(lut_k, (bits_at(w[nt], bit, 2 * B) << kLutEntryShift) | lane4);
                b1 =
                    lut_load(lut_k, (bits_at(w[nt], bit + 2 * B, 2 * B) << kLutEntryShift) | lane4);
              } else {
                b0 = lut_pair<KF>(lut_k, lane4, bits_at(w[nt], bit, B), bits_at(w[nt], bit + B, B));
                b1 = lut_pair<KF>(lut_k, lane4, bits_at(w[nt], bit + 2 * B, B),
                                  bits_at(w[nt], bit + 3 * B, B));
              }
            }
            mma<KT>(s[nt], qa, b0, b1);
          }
        }
      }
    }

    if constexpr (KF::kDense) {
#pragma unroll
      for (int nt = 0; nt < kNs; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) s[nt][e] += s_odd[nt][e];
    }
    // Scale, cap, mask; the running max.
    float tile_max[2] = {-INFINITY, -INFINITY};
    // TurboQuant per-key scales: a lane's keys in a 16-key block are 4tq .. 4tq + 3 (grouped
    // order), one 8-byte load per block instead of one 2-byte load per logit.
    // (A lane's 4 scales of one block as floats.)
    auto block_scales = [&](const uint16_t* alpha, int kb, float(&out)[4]) {
      const uint2 w2 = *reinterpret_cast<const uint2*>(alpha + wkey0 + kb * 16 + 4 * tq);
      const float2 lo = __half22float2(*reinterpret_cast<const __half2*>(&w2.x));
      const float2 hi = __half22float2(*reinterpret_cast<const __half2*>(&w2.y));
      out[0] = lo.x;
      out[1] = lo.y;
      out[2] = hi.x;
      out[3] = hi.y;
    };
    float k_scale[kBlocks][4];
    if constexpr (KF::kTq) {
#pragma unroll
      for (int kb = 0; kb < kBlocks; ++kb) block_scales(k_alpha, kb, k_scale[kb]);
    }
#pragma unroll
    for (int nt = 0; nt < kNs; ++nt) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int h = e >> 1;
        if (h == 1 && !upper_rows) {
          s[nt][e] = -INFINITY;
          continue;
        }
        const int key = (nt >> 1) * 16 + key_of<KF>(nt & 1, tq, e & 1);
        float v = s[nt][e] * row_f[h];
        if constexpr (KF::kTq)
          v *= k_scale[nt >> 1][2 * (nt & 1) + (e & 1)];  // key_of: 4tq + 2j + e
        if (a.softcap > 0.0f) v = a.softcap * tanhf(v / a.softcap) * log2e;
        const int p = pos_w + key;
        if (p < row_first[h] || p > row_pos[h]) v = -INFINITY;
        s[nt][e] = v;
        tile_max[h] = fmaxf(tile_max[h], v);
      }
    }
    float corr[2], m_use[2];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      tile_max[h] = fmaxf(tile_max[h], __shfl_xor_sync(0xffffffffu, tile_max[h], 1));
      tile_max[h] = fmaxf(tile_max[h], __shfl_xor_sync(0xffffffffu, tile_max[h], 2));
      const float m_new = fmaxf(m_run[h], tile_max[h]);
      m_use[h] = m_new == -INFINITY ? 0.0f : m_new;
      corr[h] = exp2f(m_run[h] - m_use[h]);  // 0 while nothing was seen (-inf)
      m_run[h] = m_new;
      l_run[h] *= corr[h];
    }
    // Once the running max settles, most tiles leave it unchanged: skip the rescale then.
    if (!__all_sync(0xffffffffu, corr[0] == 1.0f && corr[1] == 1.0f)) {
#pragma unroll
      for (int n = 0; n < kNt; ++n) {
        o[n][0] *= corr[0];
        o[n][1] *= corr[0];
        o[n][2] *= corr[1];
        o[n][3] *= corr[1];
      }
    }
    // P (times V's per-key alpha for TurboQuant) as the A operand of P V.
    uint32_t pa[kBlocks][4];
#pragma unroll
    for (int kb = 0; kb < kBlocks; ++kb) {
      float pv[2][4];
      float v_scale[4];
      if constexpr (VF::kTq) block_scales(v_alpha, kb, v_scale);
#pragma unroll
      for (int j = 0; j < 2; ++j) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int h = e >> 1;
          if (h == 1 && !upper_rows) {
            pv[j][e] = 0.0f;
            continue;
          }
          const float p = exp2f(s[2 * kb + j][e] - m_use[h]);
          l_run[h] += p;
          float w = p;
          if constexpr (VF::kTq) w *= v_scale[2 * j + (e & 1)];
          pv[j][e] = w;
        }
      }
      pa[kb][0] = pack2<VT>(pv[0][0], pv[0][1]);
      pa[kb][1] = pack2<VT>(pv[0][2], pv[0][3]);
      pa[kb][2] = pack2<VT>(pv[1][0], pv[1][1]);
      pa[kb][3] = pack2<VT>(pv[1][2], pv[1][3]);
    }

    // O += P V over this warp's dim slice.
#pragma unroll
    for (int kb = 0; kb < kBlocks; ++kb) {
      const int kbase = wkey0 + kb * 16;
      if constexpr (VF::kDense) {
#pragma unroll
        for (int n = 0; n < kNt; n += 2) {
          const int mi = lane >> 3, rr = lane & 7;
          const int vrow = kbase + (mi & 1) * 8 + rr;
          const int d = dslice + 8 * (n + (mi >> 1));
          uint32_t bf[4];
          ldmatrix_x4_trans(smem_addr(v_tile + row_offset<VF>(vrow, dim) + d * 2), bf);
          mma<VT>(o[n], pa[kb], bf[0], bf[1]);
          mma<VT>(o[n + 1], pa[kb], bf[2], bf[3]);
        }
      } else {
        // Rows kbase + 4tq + r, dims dslice + g * kNt + [0, kNt).
        constexpr int B = VF::kBits;
        constexpr int kBytes = kNt * B / 8;
        constexpr int kWords = (kBytes + 3) / 4;
        uint32_t x[4][kWords];
#pragma unroll
        for (int r = 0; r < 4; ++r) {
          const unsigned char* src =
              v_tile + row_offset<VF>(kbase + 4 * tq + r, dim) + (dslice + g * kNt) * B / 8;
          load_bytes<kBytes>(src, x[r]);
        }
        // 4-bit codes: the pair index (row a's code | row b's code << 4) of 4 dims at once.
        uint32_t pairs[2][kWords][2];  // [rows 01 / 23][word][even dims / odd dims]
        if constexpr (VF::kTq && B == 4) {
#pragma unroll
          for (int q2 = 0; q2 < 2; ++q2) {
#pragma unroll
            for (int wd = 0; wd < kWords; ++wd) {
              const uint32_t lo = x[2 * q2][wd], hi = x[2 * q2 + 1][wd];
              pairs[q2][wd][0] = (lo & 0x0f0f0f0fu) | ((hi << 4) & 0xf0f0f0f0u);
              pairs[q2][wd][1] = ((lo >> 4) & 0x0f0f0f0fu) | (hi & 0xf0f0f0f0u);
            }
          }
        }
#pragma unroll
        for (int n = 0; n < kNt; ++n) {
          uint32_t b0, b1;
          if constexpr (VF::kTq && B == 4) {
            // dim n: word n / 8, parity n % 2, byte (n % 8) / 2.
            b0 = lut_load(lut_v,
                          byte_entry_offset(pairs[0][n >> 3][n & 1], 8 * ((n & 7) >> 1), lane4));
            b1 = lut_load(lut_v,
                          byte_entry_offset(pairs[1][n >> 3][n & 1], 8 * ((n & 7) >> 1), lane4));
          } else if constexpr (VF::kFp8) {
            const int byte = n;  // dim n of the lane's run is byte n of each row
            const uint32_t r0 = (x[0][byte >> 2] >> (8 * (byte & 3))) & 0xffu;
            const uint32_t r1 = (x[1][byte >> 2] >> (8 * (byte & 3))) & 0xffu;
            const uint32_t r2 = (x[2][byte >> 2] >> (8 * (byte & 3))) & 0xffu;
            const uint32_t r3 = (x[3][byte >> 2] >> (8 * (byte & 3))) & 0xffu;
            b0 = e4m3x2_to_half2(r0 | (r1 << 8));
            b1 = e4m3x2_to_half2(r2 | (r3 << 8));
          } else {
            const uint32_t c0 = bits_at(x[0], n * B, B), c1 = bits_at(x[1], n * B, B);
            const uint32_t c2 = bits_at(x[2], n * B, B), c3 = bits_at(x[3], n * B, B);
            b0 = lut_pair<VF>(lut_v, lane4, c0, c1);
            b1 = lut_pair<VF>(lut_v, lane4, c2, c3);
          }
          mma<VT>(o[n], pa[kb], b0, b1);
        }
      }
    }
    __syncthreads();
  }

  // ---- row sums across the quad; merge the key groups; write this split's partials
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    l_run[h] += __shfl_xor_sync(0xffffffffu, l_run[h], 1);
    l_run[h] += __shfl_xor_sync(0xffffffffu, l_run[h], 2);
  }
  auto dim_of_col = [&](int n, int e) {
    return VF::kDense ? dslice + 8 * n + 2 * tq + e : dslice + (2 * tq + e) * kNt + n;
  };
  if (groups == 1) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      if (rb * kRows + g + 8 * h >= rows_total) continue;
      const long long pidx = (part0 + g + 8 * h) * a.splits + split;
      if (dslice == 0 && tq == 0) a.part_ml[pidx] = make_float2(m_run[h], l_run[h]);
#pragma unroll
      for (int n = 0; n < kNt; ++n) {
        a.part_o[pidx * dim + dim_of_col(n, 0)] = o[n][2 * h];
        a.part_o[pidx * dim + dim_of_col(n, 1)] = o[n][2 * h + 1];
      }
    }
    return;
  }
  __syncthreads();
  float* mo = reinterpret_cast<float*>(body);  // [groups][kRows][dim + 2]: O, then (m, l)
  const int mstride = dim + 2;
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    float* rowp = mo + (key_group * kRows + g + 8 * h) * mstride;
    if (dslice == 0 && tq == 0) {
      rowp[dim] = m_run[h];
      rowp[dim + 1] = l_run[h];
    }
#pragma unroll
    for (int n = 0; n < kNt; ++n) {
      rowp[dim_of_col(n, 0)] = o[n][2 * h];
      rowp[dim_of_col(n, 1)] = o[n][2 * h + 1];
    }
  }
  __syncthreads();
  const int real_rows = min(kRows, rows_total - rb * kRows);
  for (int i = tid; i < real_rows * (dim + 1); i += kThreads) {
    const int r = i / (dim + 1), d = i % (dim + 1);
    float m = -INFINITY;
    for (int k = 0; k < groups; ++k) m = fmaxf(m, mo[(k * kRows + r) * mstride + dim]);
    const float m_safe = m == -INFINITY ? 0.0f : m;
    float acc = 0.0f;
    for (int k = 0; k < groups; ++k) {
      const float* rowp = mo + (k * kRows + r) * mstride;
      const float w = exp2f(rowp[dim] - m_safe);
      acc += w * (d < dim ? rowp[d] : rowp[dim + 1]);
    }
    const long long pidx = (part0 + r) * a.splits + split;
    if (d < dim)
      a.part_o[pidx * dim + d] = acc;
    else
      a.part_ml[pidx] = make_float2(m, acc);
  }
}

}  // namespace mlxn::cuda::decode
