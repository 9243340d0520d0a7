// Prefill attention on tensor cores: bf16 / f16 Q, K, V, f32 accumulation, mma.sync.m16n8k16.
// On compute capability 9.0 with an sm_90a build, head_dim 64-256 go to the wgmma kernel in
// prefill_sm90.cu instead (use_sm90_kernel); this one serves every other case.
//
// One block computes a tile of kBr = 16·Mt·Warps query rows of one (sequence, q head) against
// the sequence's keys, in tiles of Bc keys (the FlashAttention-2 scheme):
//   - the Q tile is copied to shared memory once; K and V tiles are double-buffered with
//     cp.async, the next tile's copy in flight while the current one is used;
//   - each warp owns Mt slabs of 16 query rows (2 at D <= 128, so each K / V fragment read from
//     shared memory feeds two mma; measured no faster than one slab, and one slab with more
//     resident blocks was slower: docs/perf.md): S = Q·Kᵀ from ldmatrix fragments, the online
//     softmax on the S registers (exp2 with the scale folded in, running max and sum per row), then
//     O += P·V with P re-packed from the S accumulators as the A operand (V through
//     ldmatrix.trans);
//   - shared-memory rows are 16-byte chunks XOR-swizzled by (row mod 8), so the ldmatrix reads of
//     8 rows at one column hit 8 different bank groups.
// head_dim 512 does not fit one warp's registers (the O accumulator alone would be 256 floats
// per lane): two blocks split the value columns (DV = 256 each) and both compute S.
//
// Masks (causal with the end-aligned position offset, window, the tail of the keys) are applied
// only on tiles that need them. A row that has seen no visible key yet keeps max = -inf and its
// exponentials use 0 as the reference, so no NaN appears; a row that never sees a key ends with
// sum 0 and writes zeros (lse -inf, or the sink's logit when a sink is given).
// Causal tiles of late queries do the most work: they are launched first.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <string>
#include <string_view>
#include <type_traits>

#include "backend/cuda/attention/prefill.h"
#include "backend/cuda/attention/prefill_common.cuh"
#include "backend/cuda/attention/prefill_sm90.h"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/device/mma.cuh"
#include "backend/cuda/device/types.cuh"
#include "mlxn/core/device_errors.h"
#include "mlxn/core/dispatch.h"
#include "portable/error_state.h"

namespace mlxn::cuda {

namespace {

using prefill::kLog2e;
using PrefillParams = prefill::Params;

// Chunk (16 bytes) c of row r in a tile whose rows have Chunks chunks, swizzled.
template <int Chunks>
__device__ __forceinline__ int swizzle(int r, int c) {
  return r * Chunks + (c ^ (r & 7));
}

template <int D_, int DV_, int Warps_, int Bc_, int Mt_, int MinBlocks_>
struct Tiling {
  static constexpr int D = D_, DV = DV_, Warps = Warps_, Bc = Bc_, Mt = Mt_;
  static constexpr int kMinBlocks = MinBlocks_;  // resident blocks per SM the registers allow
  static constexpr int kBr = 16 * Mt * Warps;
  static constexpr int kThreads = 32 * Warps;
  static constexpr int kParts = D / DV;  // blocks sharing one query tile (value columns)
  static constexpr int kChunksD = D / 8;
  static constexpr int kChunksDV = DV / 8;
  static constexpr int kSmemBytes = 16 * (kBr * kChunksD + 2 * Bc * kChunksD + 2 * Bc * kChunksDV);
  static_assert(kChunksD >= 8 && kChunksDV >= 8 && Bc % 16 == 0);
};

template <class T, class Tl, bool Softcap>
__global__ void __launch_bounds__(Tl::kThreads, Tl::kMinBlocks)
    prefill_kernel(const __grid_constant__ PrefillParams p) {
  constexpr int D = Tl::D, DV = Tl::DV, Bc = Tl::Bc, kBr = Tl::kBr, Mt = Tl::Mt;
  constexpr int kCD = Tl::kChunksD, kCDV = Tl::kChunksDV;
  extern __shared__ uint4 smem[];
  uint4* s_q = smem;                // [kBr][kCD]
  uint4* s_k = s_q + kBr * kCD;     // [2][Bc][kCD]
  uint4* s_v = s_k + 2 * Bc * kCD;  // [2][Bc][kCDV]

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int q_tile = static_cast<int>(gridDim.x - 1 - blockIdx.x);  // heavy (late) tiles first
  const int head = blockIdx.y;
  const int part = static_cast<int>(blockIdx.z % Tl::kParts);
  const int seq = static_cast<int>(blockIdx.z / Tl::kParts);
  const int kv_head = head / p.group;

  prefill::QueryTile qt;
  if (!prefill::begin_query_tile<D, DV, Tl::kThreads, kBr>(p, q_tile, head, part, seq, qt)) return;
  const int64_t q0 = qt.q0, k0 = qt.k0, len_k = qt.len_k, i0 = qt.i0;
  const int rows = qt.rows;

  const T* q = static_cast<const T*>(p.q);
  const T* k = static_cast<const T*>(p.k);
  const T* v = static_cast<const T*>(p.v);

  // Q tile (rows past the sequence read as zeros).
  for (int c = tid; c < kBr * kCD; c += Tl::kThreads) {
    const int r = c / kCD, ch = c % kCD;
    const bool valid = r < rows;
    const T* src = q + ((q0 + i0 + (valid ? r : 0)) * p.q_heads + head) * D + ch * 8;
    cp_async16(&s_q[swizzle<kCD>(r, ch)], src, valid);
  }
  cp_async_commit();

  const prefill::KeyRange kr = prefill::key_range<Bc>(p, qt);
  const int64_t pos_first = kr.pos_first;
  const int t_begin = kr.t_begin, t_end = kr.t_end;

  const auto load_kv = [&](int t, int buf) {
    const int64_t key0 = static_cast<int64_t>(t) * Bc;
    for (int c = tid; c < Bc * kCD; c += Tl::kThreads) {
      const int r = c / kCD, ch = c % kCD;
      const bool valid = key0 + r < len_k;
      const T* src = k + ((k0 + (valid ? key0 + r : 0)) * p.kv_heads + kv_head) * D + ch * 8;
      cp_async16(&s_k[buf * Bc * kCD + swizzle<kCD>(r, ch)], src, valid);
    }
    for (int c = tid; c < Bc * kCDV; c += Tl::kThreads) {
      const int r = c / kCDV, ch = c % kCDV;
      const bool valid = key0 + r < len_k;
      const T* src =
          v + ((k0 + (valid ? key0 + r : 0)) * p.kv_heads + kv_head) * D + part * DV + ch * 8;
      cp_async16(&s_v[buf * Bc * kCDV + swizzle<kCDV>(r, ch)], src, valid);
    }
    cp_async_commit();
  };
  if (t_begin < t_end) load_kv(t_begin, 0);

  const int g = lane >> 2, quad = lane & 3;
  const int mi = lane >> 3, r8 = lane & 7;  // ldmatrix: which 8x8 matrix this lane addresses
  const int warp_row = warp * 16 * Mt;      // the warp's Mt slabs of 16 rows follow each other

  float o[Mt][DV / 8][4] = {};
  float m_row[Mt][2], l_row[Mt][2];
#pragma unroll
  for (int mt = 0; mt < Mt; ++mt) {
    m_row[mt][0] = m_row[mt][1] = -INFINITY;
    l_row[mt][0] = l_row[mt][1] = 0.0f;
  }
  const float scale_log2 = p.scale * kLog2e;

  for (int t = t_begin; t < t_end; ++t) {
    const int buf = (t - t_begin) & 1;
    if (t + 1 < t_end) {
      load_kv(t + 1, buf ^ 1);
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    const uint4* sk = s_k + buf * Bc * kCD;
    const uint4* sv = s_v + buf * Bc * kCDV;

    // S = Q Kᵀ for the warp's rows and the tile's Bc keys; each K fragment serves Mt slabs.
    float s[Mt][Bc / 8][4] = {};
#pragma unroll
    for (int ks = 0; ks < D / 16; ++ks) {
      uint32_t a[Mt][4];
#pragma unroll
      for (int mt = 0; mt < Mt; ++mt) {
        ldmatrix_x4(
            smem_addr(
                &s_q[swizzle<kCD>(warp_row + mt * 16 + (mi & 1) * 8 + r8, 2 * ks + (mi >> 1))]),
            a[mt]);
      }
#pragma unroll
      for (int np = 0; np < Bc / 16; ++np) {
        uint32_t b[4];
        ldmatrix_x4(smem_addr(&sk[swizzle<kCD>(np * 16 + (mi >> 1) * 8 + r8, 2 * ks + (mi & 1))]),
                    b);
#pragma unroll
        for (int mt = 0; mt < Mt; ++mt) {
          mma<T>(s[mt][2 * np], a[mt], b[0], b[1]);
          mma<T>(s[mt][2 * np + 1], a[mt], b[2], b[3]);
        }
      }
    }

    // Scale (and cap) into the log2 domain; mask where this tile needs it.
    const int64_t key0 = static_cast<int64_t>(t) * Bc;
    const bool need_mask = prefill::tile_needs_mask<Bc>(p, qt, kr, key0);
#pragma unroll
    for (int mt = 0; mt < Mt; ++mt) {
#pragma unroll
      for (int nt = 0; nt < Bc / 8; ++nt) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          float x = s[mt][nt][e];
          if constexpr (Softcap) {
            x = p.softcap * tanhf(x * p.scale / p.softcap) * kLog2e;
          } else {
            x *= scale_log2;
          }
          if (need_mask) {
            const int64_t key = key0 + nt * 8 + 2 * quad + (e & 1);
            const int64_t pos = pos_first + warp_row + mt * 16 + g + 8 * (e >> 1);
            if (!prefill::key_visible(p, len_k, key, pos)) x = -INFINITY;
          }
          s[mt][nt][e] = x;
        }
      }

      // Online softmax: new row max, rescale what was accumulated, exponentiate.
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        float mx = -INFINITY;
#pragma unroll
        for (int nt = 0; nt < Bc / 8; ++nt) {
          mx = fmaxf(mx, fmaxf(s[mt][nt][2 * r], s[mt][nt][2 * r + 1]));
        }
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
        const float m_new = fmaxf(m_row[mt][r], mx);
        const float ref = m_new == -INFINITY ? 0.0f : m_new;  // no key seen yet
        const float alpha = prefill::exp2_ftz(m_row[mt][r] - ref);
        m_row[mt][r] = m_new;
        float sum = 0.0f;
#pragma unroll
        for (int nt = 0; nt < Bc / 8; ++nt) {
          s[mt][nt][2 * r] = prefill::exp2_ftz(s[mt][nt][2 * r] - ref);
          s[mt][nt][2 * r + 1] = prefill::exp2_ftz(s[mt][nt][2 * r + 1] - ref);
          sum += s[mt][nt][2 * r] + s[mt][nt][2 * r + 1];
        }
        l_row[mt][r] = l_row[mt][r] * alpha + sum;  // this lane's share; quad summed at the end
#pragma unroll
        for (int nt = 0; nt < DV / 8; ++nt) {
          o[mt][nt][2 * r] *= alpha;
          o[mt][nt][2 * r + 1] *= alpha;
        }
      }
    }

    // O += P V: the S accumulators of key tiles 2kk and 2kk + 1 are the A fragment of step kk;
    // each V fragment serves Mt slabs.
#pragma unroll
    for (int kk = 0; kk < Bc / 16; ++kk) {
      uint32_t a[Mt][4];
#pragma unroll
      for (int mt = 0; mt < Mt; ++mt) {
        a[mt][0] = pack2<T>(s[mt][2 * kk][0], s[mt][2 * kk][1]);
        a[mt][1] = pack2<T>(s[mt][2 * kk][2], s[mt][2 * kk][3]);
        a[mt][2] = pack2<T>(s[mt][2 * kk + 1][0], s[mt][2 * kk + 1][1]);
        a[mt][3] = pack2<T>(s[mt][2 * kk + 1][2], s[mt][2 * kk + 1][3]);
      }
#pragma unroll
      for (int dp = 0; dp < DV / 16; ++dp) {
        uint32_t b[4];
        ldmatrix_x4_trans(
            smem_addr(&sv[swizzle<kCDV>(kk * 16 + (mi & 1) * 8 + r8, 2 * dp + (mi >> 1))]), b);
#pragma unroll
        for (int mt = 0; mt < Mt; ++mt) {
          mma<T>(o[mt][2 * dp], a[mt], b[0], b[1]);
          mma<T>(o[mt][2 * dp + 1], a[mt], b[2], b[3]);
        }
      }
    }
    __syncthreads();  // the buffer is refilled by the iteration after next
  }

  // A tile that sees no key never waited for its Q copy: no copy may outlive the block.
  cp_async_wait<0>();

  // Epilogue: the quad's sums, the sink, normalisation, the store.
#pragma unroll
  for (int mt = 0; mt < Mt; ++mt) {
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int row = warp_row + mt * 16 + g + 8 * r;
      const float inv =
          prefill::finish_row(p, head, head * p.total_q + q0 + i0 + row, part == 0 && row < rows,
                              l_row[mt][r], m_row[mt][r], quad);
      if (row >= rows) continue;
      const int64_t out_row = ((q0 + i0 + row) * p.q_heads + head) * D + part * DV;
#pragma unroll
      for (int nt = 0; nt < DV / 8; ++nt) {
        prefill::store_pair(p, out_row + nt * 8 + 2 * quad, o[mt][nt][2 * r] * inv,
                            o[mt][nt][2 * r + 1] * inv);
      }
    }
  }
}

template <class T, class Tl>
void launch(const PrefillParams& p, int batch, int64_t max_q_len, bool softcap,
            const Stream& stream) {
  prefill::launch_tiles(softcap ? prefill_kernel<T, Tl, true> : prefill_kernel<T, Tl, false>,
                        Tl::kThreads, Tl::kSmemBytes, (max_q_len + Tl::kBr - 1) / Tl::kBr,
                        static_cast<int64_t>(batch) * Tl::kParts, p, stream);
}

template <class T>
void launch_dim(const PrefillParams& p, int dim, int batch, int64_t max_q_len, bool softcap,
                const Stream& stream) {
  switch (dim) {
    case 64:
      return launch<T, Tiling<64, 64, 4, 64, 2, 2>>(p, batch, max_q_len, softcap, stream);
    case 128:
      return launch<T, Tiling<128, 128, 4, 32, 2, 2>>(p, batch, max_q_len, softcap, stream);
    case 256:
      return launch<T, Tiling<256, 256, 4, 32, 1, 2>>(p, batch, max_q_len, softcap, stream);
    case 512:
      return launch<T, Tiling<512, 256, 4, 32, 1, 1>>(p, batch, max_q_len, softcap, stream);
    default:
      throw Error("prefill_attention",
                  "head_dim must be 64, 128, 256 or 512, got " + std::to_string(dim));
  }
}

// MLXN_PREFILL_KERNEL=mma_sync keeps the mma.sync kernel on a GPU where the wgmma one applies
// (tests and benchmarks compare the two); unset or "auto" picks the wgmma kernel there.
bool use_sm90_kernel(int dim, const Device& device) {
  const char* choice = std::getenv("MLXN_PREFILL_KERNEL");
  const std::string_view name = choice != nullptr ? choice : "auto";
  if (name == "mma_sync") return false;
  if (name != "auto") {
    throw Error("prefill_attention",
                "MLXN_PREFILL_KERNEL must be auto or mma_sync, got \"" + std::string(name) + "\"");
  }
  return prefill_sm90_available(dim, device);
}

}  // namespace

void prefill_attention(const attention::PrefillJob& job, const Stream& stream) {
  if (job.total_q == 0 || job.batch == 0) return;
  PrefillParams p{};
  p.q = job.q->data();
  p.k = job.k->data();
  p.v = job.v->data();
  p.out = job.out->data();
  p.cu_q = job.cu_q->data_as<const int32_t>();
  p.cu_k = job.cu_k->data_as<const int32_t>();
  p.sinks = job.sinks != nullptr ? job.sinks->data_as<const float>() : nullptr;
  p.lse = job.lse != nullptr ? job.lse->data_as<float>() : nullptr;
  p.total_q = job.total_q;
  p.total_k = job.total_k;
  p.max_q_len = job.max_q_len;
  p.q_heads = job.q_heads;
  p.kv_heads = job.kv_heads;
  p.group = job.q_heads / job.kv_heads;
  p.out_code = float_dtype_code(job.out->dtype());
  p.scale = job.scale;
  p.softcap = job.softcap;
  p.causal = job.causal;
  p.window = job.window;
  p.flag = device_error_state(stream.device());
  p.site = job.index_site;
  const bool softcap = job.softcap > 0.0f;
  if (use_sm90_kernel(job.dim, stream.device())) {
    prefill_attention_sm90(p, job.q->dtype(), job.dim, job.batch, job.max_q_len, softcap, stream);
    return;
  }
  if (job.q->dtype() == DType::bf16) {
    launch_dim<__nv_bfloat16>(p, job.dim, job.batch, job.max_q_len, softcap, stream);
  } else {
    launch_dim<__half>(p, job.dim, job.batch, job.max_q_len, softcap, stream);
  }
}

}  // namespace mlxn::cuda
