// Prefill attention on Hopper's warpgroup MMA (wgmma, sm_90a) for head_dim 64, 128 and 256:
// the same contract and masks as the mma.sync kernel in prefill.cu, which serves every other
// GPU and head_dim 512.
//
// One block = two warpgroups = 128 query rows of one (sequence, q head); each warpgroup owns 64
// rows. Per tile of Bc keys (the FlashAttention-2 loop on wgmma):
//   - K and V tiles are double-buffered with cp.async into the 128-byte swizzled layout wgmma
//     reads (D / 64 column blocks of 64 elements; chunk c of row r at c ^ (r mod 8)), the next
//     tile's copy in flight while this one is used; the Q tile is loaded once;
//   - S = Q·Kᵀ: D / 16 wgmma m64nBck16, both operands from shared memory (K-major);
//   - the online softmax runs on the S accumulators (exp2, scale folded, -inf-safe as in
//     prefill.cu), then P is re-packed to bf16 / f16 A fragments in registers;
//   - O += P·V: Bc / 16 wgmma m64nDk16 with A from registers and V from shared memory read
//     transposed (MN-major), O in f32 registers (D / 2 per thread).
// Shared memory: Q (128 × D) + 2 × (K + V) (Bc × D each); D 64 fits two blocks per SM.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cmath>
#include <cstdint>

#include "backend/cuda/attention/prefill_common.cuh"
#include "backend/cuda/attention/prefill_sm90.h"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/device/mma.cuh"
#include "backend/cuda/device/wgmma.cuh"

namespace mlxn::cuda {

// Named (not anonymous): a build without sm_90a compiles the kernel body out, and unused
// internal functions would warn.
namespace prefill {

__device__ __forceinline__ int clamp_to_int(int64_t x, int lo, int hi) {
  return static_cast<int>(x < lo ? lo : x > hi ? hi : x);
}

}  // namespace prefill

namespace {

using prefill::kLog2e;

template <int D_, int Bc_, int MinBlocks_>
struct Sm90Tiling {
  static constexpr int D = D_, Bc = Bc_, kMinBlocks = MinBlocks_;
  static constexpr int kGroups = 2;  // warpgroups, 64 query rows each
  static constexpr int kBr = 64 * kGroups;
  static constexpr int kThreads = 128 * kGroups;
  static constexpr int kQBytes = kBr * D * 2;
  static constexpr int kKvBytes = Bc * D * 2;  // one K or one V tile
  // + 1024: the dynamic shared memory is aligned up to the swizzle atom inside the kernel.
  static constexpr int kSmemBytes = kQBytes + 5 * kKvBytes + 1024;
  static_assert(D % 64 == 0 && Bc % 16 == 0 && Bc <= 256);
};

// Byte offset of 16-byte chunk c of row r in a tile of Rows rows kept as column blocks of 64
// elements, rows of 128 bytes swizzled (the layout wgmma_desc_sw128 describes).
template <int Rows>
__device__ __forceinline__ uint32_t sw128_offset(int r, int c) {
  return static_cast<uint32_t>(((c >> 3) * Rows + r) * 128 + (((c & 7) ^ (r & 7)) << 4));
}

// Copies Rows rows of a [row][D] matrix (row_stride elements apart) into the swizzled tile with
// cp.async, rows from valid_rows on zero-filled. Each thread keeps one 16-byte column and every
// (Threads / (D / 8))-th row; that step is a multiple of 8 rows, so the thread's swizzled chunk is
// the same in every row it copies and each copy is a pointer step.
template <class T, int Rows, int D, int Threads>
struct TileCopy {
  static constexpr int kChunks = D / 8;
  static constexpr int kRowStep = Threads / kChunks;
  static constexpr int kSteps = Rows / kRowStep;
  static_assert(Threads % kChunks == 0 && kRowStep % 8 == 0 && Rows % kRowStep == 0);
  uint32_t smem_offset;  // of this thread's first chunk
  int row0, column;      // this thread's first row and its first element

  __device__ TileCopy() {
    const int tid = static_cast<int>(threadIdx.x), chunk = tid % kChunks;
    row0 = tid / kChunks;
    column = chunk * 8;
    smem_offset = sw128_offset<Rows>(row0, chunk);
  }
  __device__ __forceinline__ void copy(uint8_t* dst, const T* src, int64_t row_stride,
                                       int valid_rows) const {
    const T* from = src + row0 * row_stride + column;
    uint8_t* to = dst + smem_offset;
    if (valid_rows >= Rows) {
#pragma unroll
      for (int i = 0; i < kSteps; ++i) {
        cp_async16(to + i * kRowStep * 128, from + i * kRowStep * row_stride, true);
      }
    } else {
#pragma unroll
      for (int i = 0; i < kSteps; ++i) {
        const bool valid = row0 + i * kRowStep < valid_rows;
        cp_async16(to + i * kRowStep * 128, valid ? from + i * kRowStep * row_stride : src, valid);
      }
    }
  }
};

template <class T, class Tl, bool Softcap>
__global__ void __launch_bounds__(Tl::kThreads, Tl::kMinBlocks)
    prefill_sm90_kernel(const __grid_constant__ prefill::Params p) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  constexpr int D = Tl::D, Bc = Tl::Bc, kBr = Tl::kBr;
  extern __shared__ uint8_t smem_raw[];
  uint8_t* const s_q = smem_raw + ((1024 - (smem_addr(smem_raw) & 1023)) & 1023);
  uint8_t* const s_k = s_q + Tl::kQBytes;       // [2][Bc × D]
  uint8_t* const s_v = s_k + 2 * Tl::kKvBytes;  // [3][Bc × D]

  const int tid = static_cast<int>(threadIdx.x), lane = tid & 31, warp = tid >> 5;
  const int q_tile = static_cast<int>(gridDim.x - 1 - blockIdx.x);  // heavy (late) tiles first
  const int head = static_cast<int>(blockIdx.y);
  const int seq = static_cast<int>(blockIdx.z);
  const int kv_head = head / p.group;

  prefill::QueryTile qt;
  if (!prefill::begin_query_tile<D, D, Tl::kThreads, kBr>(p, q_tile, head, 0, seq, qt)) return;
  const prefill::KeyRange kr = prefill::key_range<Bc>(p, qt);
  const T* const k = static_cast<const T*>(p.k);
  const T* const v = static_cast<const T*>(p.v);
  const int64_t kv_stride = static_cast<int64_t>(p.kv_heads) * D;

  const TileCopy<T, kBr, D, Tl::kThreads> q_copy;
  q_copy.copy(s_q, static_cast<const T*>(p.q) + ((qt.q0 + qt.i0) * p.q_heads + head) * D,
              static_cast<int64_t>(p.q_heads) * D, qt.rows);
  cp_async_commit();
  // K tile t in buffer t mod 2, V tile t in buffer t mod 3: V t - 1 is still being read while
  // K t + 1 and V t + 1 arrive.
  const TileCopy<T, Bc, D, Tl::kThreads> kv_copy;
  const auto load_kv = [&](int t) {
    const int64_t key0 = static_cast<int64_t>(t) * Bc;
    const int64_t first = (qt.k0 + key0) * kv_stride + static_cast<int64_t>(kv_head) * D;
    const int valid = prefill::clamp_to_int(qt.len_k - key0, 0, Bc);
    kv_copy.copy(s_k + (t & 1) * Tl::kKvBytes, k + first, kv_stride, valid);
    kv_copy.copy(s_v + (t % 3) * Tl::kKvBytes, v + first, kv_stride, valid);
    cp_async_commit();
  };
  if (kr.t_begin < kr.t_end) load_kv(kr.t_begin);

  const int g = lane >> 2, quad = lane & 3;
  const int group = warp >> 2;                        // this thread's warpgroup
  const int warp_row = group * 64 + (warp & 3) * 16;  // first of the warp's 16 rows
  const uint32_t q_addr = smem_addr(s_q) + group * 64 * 128;

  float o[D / 2];
#pragma unroll
  for (int i = 0; i < D / 2; ++i) o[i] = 0.0f;
  float m_row[2] = {-INFINITY, -INFINITY}, l_row[2] = {0.0f, 0.0f};
  // Waits for key tile t's copies, issues the next tile's, then S = Q K_t (committed, not
  // waited for). k steps of 16 walk 32 bytes inside a 128-byte row, then the next column block.
  float s[Bc / 2];
  const auto begin_tile = [&](int t) {
    cp_async_wait<0>();
    fence_proxy_async();
    // Tile t is complete for every thread; both warpgroups are done with K t - 1 and V t - 2,
    // whose buffers the next copies reuse.
    __syncthreads();
    if (t + 1 < kr.t_end) load_kv(t + 1);
    const uint32_t k_addr = smem_addr(s_k + (t & 1) * Tl::kKvBytes);
    wgmma_fence();
#pragma unroll
    for (int ks = 0; ks < D / 16; ++ks) {
      const uint32_t column = static_cast<uint32_t>((ks >> 2) * 128), within = (ks & 3) * 32;
      Wgmma<Bc, T>::ss(s, wgmma_desc_sw128(q_addr + column * kBr + within, 16, 1024),
                       wgmma_desc_sw128(k_addr + column * Bc + within, 16, 1024), ks > 0);
    }
    wgmma_commit();
  };
  // O += P V_t, committed, not waited for: A fragment kk holds key columns [16 kk, 16 kk + 16);
  // V's k step of 16 keys is 2048 bytes (two 8-row atoms) further on.
  uint32_t a[Bc / 16][4];
  const auto issue_pv = [&](int t) {
    const uint32_t v_addr = smem_addr(s_v + (t % 3) * Tl::kKvBytes);
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < Bc / 16; ++kk) {
      Wgmma<D, T>::rs(o, a[kk], wgmma_desc_sw128(v_addr + kk * 2048, Bc * 128, 1024), true);
    }
    wgmma_commit();
  };
  // The online softmax of S (complete) for key tile t: mask where the tile needs it (the keys
  // a row sees there form one interval [lo, hi] of tile columns), new row maxima in the log2
  // domain (the scale is > 0, so the raw maximum scales to the scaled one), exponentials with the
  // scale folded into one FFMA (or capped first); returns the factors for what was accumulated.
  // Rows h = 0, 1 are g and g + 8 of the warp's 16.
  const auto softmax = [&](int t, float(&alpha)[2], float(&sum)[2]) {
    const int64_t key0 = static_cast<int64_t>(t) * Bc;
    if constexpr (Softcap) {
#pragma unroll
      for (int i = 0; i < Bc / 2; ++i) s[i] = p.softcap * tanhf(s[i] * p.scale / p.softcap);
    }
    if (prefill::tile_needs_mask<Bc>(p, qt, kr, key0)) {
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int64_t pos = kr.pos_first + warp_row + g + 8 * h - key0;  // relative to key0
        int64_t hi = qt.len_k - key0 - 1;
        if (p.causal && pos < hi) hi = pos;
        const int64_t lo = p.window > 0 ? pos - p.window + 1 : 0;
        const int hi_col = prefill::clamp_to_int(hi, -1, Bc);
        const int lo_col = prefill::clamp_to_int(lo, 0, Bc + 1);
#pragma unroll
        for (int n = 0; n < Bc / 8; ++n) {
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            const int column = n * 8 + 2 * quad + e;
            if (column < lo_col || column > hi_col) s[4 * n + 2 * h + e] = -INFINITY;
          }
        }
      }
    }
    const float scale_log2 = (Softcap ? 1.0f : p.scale) * kLog2e;
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      float mx = -INFINITY;
#pragma unroll
      for (int n = 0; n < Bc / 8; ++n)
        mx = fmaxf(mx, fmaxf(s[4 * n + 2 * h], s[4 * n + 2 * h + 1]));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
      const float m_new = fmaxf(m_row[h], mx * scale_log2);
      const float ref = m_new == -INFINITY ? 0.0f : m_new;  // no key seen yet
      alpha[h] = prefill::exp2_ftz(m_row[h] - ref);
      m_row[h] = m_new;
      sum[h] = 0.0f;
#pragma unroll
      for (int n = 0; n < Bc / 8; ++n) {
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const int i = 4 * n + 2 * h + e;
          s[i] = prefill::exp2_ftz(fmaf(s[i], scale_log2, -ref));
          sum[h] += s[i];
        }
      }
    }
  };
  const auto pack_p = [&] {
#pragma unroll
    for (int kk = 0; kk < Bc / 16; ++kk) {
      a[kk][0] = pack2<T>(s[8 * kk + 0], s[8 * kk + 1]);
      a[kk][1] = pack2<T>(s[8 * kk + 2], s[8 * kk + 3]);
      a[kk][2] = pack2<T>(s[8 * kk + 4], s[8 * kk + 5]);
      a[kk][3] = pack2<T>(s[8 * kk + 6], s[8 * kk + 7]);
    }
  };

  // Software pipeline: while the softmax of tile t runs on the ALUs, the tensor cores work on
  // P_{t-1} V_{t-1} (issued together with S_t). O is rescaled once P_{t-1} V_{t-1} is in; on the
  // first tile O is zero and alpha 0.
  for (int t = kr.t_begin; t < kr.t_end; ++t) {
    const bool first = t == kr.t_begin;
    begin_tile(t);
    if (first) {
      wgmma_wait<0>();
    } else {
      issue_pv(t - 1);
      wgmma_wait<1>();  // S_t is in; P_{t-1} V_{t-1} may still run
    }
    wgmma_fence_registers(s);
    float alpha[2], sum[2];
    softmax(t, alpha, sum);
    wgmma_wait<0>();
    wgmma_fence_registers(o);
    wgmma_fence_registers(a);
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      l_row[h] = l_row[h] * alpha[h] + sum[h];  // this lane's share; the quad sums at the end
#pragma unroll
      for (int n = 0; n < D / 8; ++n) {
        o[4 * n + 2 * h] *= alpha[h];
        o[4 * n + 2 * h + 1] *= alpha[h];
      }
    }
    pack_p();
  }
  if (kr.t_begin < kr.t_end) {
    issue_pv(kr.t_end - 1);
    wgmma_wait<0>();
    wgmma_fence_registers(o);
  }

  // A tile that sees no key never waited for its Q copy: no copy may outlive the block.
  cp_async_wait<0>();

  // Epilogue: the quad's sums, the sink, normalisation, the store.
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int row = warp_row + g + 8 * h;
    const float inv = prefill::finish_row(p, head, head * p.total_q + qt.q0 + qt.i0 + row,
                                          row < qt.rows, l_row[h], m_row[h], quad);
    if (row >= qt.rows) continue;
    const int64_t out_row = ((qt.q0 + qt.i0 + row) * p.q_heads + head) * D;
#pragma unroll
    for (int n = 0; n < D / 8; ++n) {
      prefill::store_pair(p, out_row + n * 8 + 2 * quad, o[4 * n + 2 * h] * inv,
                          o[4 * n + 2 * h + 1] * inv);
    }
  }
#else
  (void)p;
  __trap();  // not built for sm_90a: prefill_sm90_available() keeps the host from launching it
#endif
}

template <class T, class Tl>
void launch(const prefill::Params& p, int batch, int64_t max_q_len, bool softcap,
            const Stream& stream) {
  prefill::launch_tiles(
      softcap ? prefill_sm90_kernel<T, Tl, true> : prefill_sm90_kernel<T, Tl, false>, Tl::kThreads,
      Tl::kSmemBytes, (max_q_len + Tl::kBr - 1) / Tl::kBr, batch, p, stream);
}

template <class T>
void launch_dim(const prefill::Params& p, int dim, int batch, int64_t max_q_len, bool softcap,
                const Stream& stream) {
  switch (dim) {
    case 64:
      return launch<T, Sm90Tiling<64, 64, 2>>(p, batch, max_q_len, softcap, stream);
    case 128:
      return launch<T, Sm90Tiling<128, 128, 1>>(p, batch, max_q_len, softcap, stream);
    case 256:
      return launch<T, Sm90Tiling<256, 64, 1>>(p, batch, max_q_len, softcap, stream);
    default:
      throw Error("prefill_attention",
                  "the sm_90 kernel takes head_dim 64, 128 or 256, got " + std::to_string(dim));
  }
}

}  // namespace

bool prefill_sm90_available(int dim, const Device& device) {
#if defined(MLXN_CUDA_SM90A)
  if (dim != 64 && dim != 128 && dim != 256) return false;
  // sm_90a code runs on compute capability 9.0 only (device_properties caches the query).
  const DeviceProperties& props = device_properties(device);
  return props.compute_major == 9 && props.compute_minor == 0;
#else
  (void)dim;
  (void)device;
  return false;
#endif
}

void prefill_attention_sm90(const prefill::Params& p, DType dtype, int dim, int batch,
                            int64_t max_q_len, bool softcap, const Stream& stream) {
  if (dtype == DType::bf16) {
    launch_dim<__nv_bfloat16>(p, dim, batch, max_q_len, softcap, stream);
  } else {
    launch_dim<__half>(p, dim, batch, max_q_len, softcap, stream);
  }
}

}  // namespace mlxn::cuda
