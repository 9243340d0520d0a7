// What the two prefill-attention kernels share (prefill.cu: mma.sync, any sm_80+ GPU;
// prefill_sm90.cu: wgmma, sm_90a): the launch parameters, the checks of a sequence's offsets
// (a bad sequence is reported once and its rows become zeros), the range of key tiles a query
// tile attends to, and the per-row finish (sink, normalisation, log-sum-exp, store).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cmath>
#include <cstdint>
#include <mutex>
#include <set>
#include <utility>

#include "backend/cuda/cuda_check.h"
#include "mlxn/core/device_errors.h"
#include "mlxn/core/error.h"
#include "mlxn/core/stream.h"
#include "portable/error_state.h"

namespace mlxn::cuda::prefill {

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

// 2^x in one MUFU instruction: inputs below -126 give 0 (they are weights next to a row
// maximum of 2^0, far under bf16's resolution of the sum). exp2f keeps denormal results and
// costs a compare and two multiplies more per element.
__device__ __forceinline__ float exp2_ftz(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

struct Params {
  const void* q;  // [total_q, q_heads, D]
  const void* k;  // [total_k, kv_heads, D]
  const void* v;
  void* out;  // [total_q, q_heads, D] (out_code)
  const int32_t* cu_q;
  const int32_t* cu_k;
  const float* sinks;  // [q_heads] or null
  float* lse;          // [q_heads, total_q] or null
  int64_t total_q, total_k;
  int64_t max_q_len;             // the grid covers this many queries per sequence
  int q_heads, kv_heads, group;  // group = q_heads / kv_heads
  int out_code;
  float scale, softcap;
  bool causal;
  int window;
  DeviceErrorState* flag;
  uint32_t site;
};

__device__ __forceinline__ void store_pair(const Params& p, int64_t index, float a, float b) {
  switch (p.out_code) {
    case 0:
      *reinterpret_cast<float2*>(static_cast<float*>(p.out) + index) = make_float2(a, b);
      break;
    case 1:
      *reinterpret_cast<__nv_bfloat162*>(static_cast<__nv_bfloat16*>(p.out) + index) =
          __floats2bfloat162_rn(a, b);
      break;
    default:
      *reinterpret_cast<__half2*>(static_cast<__half*>(p.out) + index) = __floats2half2_rn(a, b);
      break;
  }
}

// One block's query tile: rows [i0, i0 + rows) of sequence seq.
struct QueryTile {
  int64_t q0 = 0, k0 = 0, len_q = 0, len_k = 0, i0 = 0;
  int rows = 0;
};

// Checks the sequence's offsets. Returns false when the block has nothing to compute: its tile
// lies past the sequence, or the sequence is bad, in which case it is reported once and the
// block writes zeros (lse -inf) to its rows (the grid may cover fewer tiles than a lying offset
// claims, so each block also takes the tiles gridDim.x further on). DV columns from part · DV.
template <int D, int DV, int Threads, int Br>
__device__ bool begin_query_tile(const Params& p, int q_tile, int head, int part, int seq,
                                 QueryTile& t) {
  const int64_t q0 = p.cu_q[seq], q1 = p.cu_q[seq + 1];
  const int64_t k0 = p.cu_k[seq], k1 = p.cu_k[seq + 1];
  const int64_t len_q = q1 - q0, len_k = k1 - k0;
  const bool q_range_ok = q0 >= 0 && q0 <= q1 && q1 <= p.total_q;
  const bool ok = q_range_ok && k0 >= 0 && k0 <= k1 && k1 <= p.total_k &&
                  (!p.causal || len_k >= len_q) && len_q <= p.max_q_len;
  const int64_t i0 = static_cast<int64_t>(q_tile) * Br;
  const int tid = static_cast<int>(threadIdx.x);
  if (!ok) {
    if (q_tile == 0 && head == 0 && part == 0 && tid == 0) {
      report_device_error(p.flag, DeviceErrorCode::index_out_of_range, p.site, seq,
                          q_range_ok ? len_k : q1, 0.0f);
    }
    if (!q_range_ok) return false;
    for (int64_t t0 = i0; t0 < len_q; t0 += static_cast<int64_t>(gridDim.x) * Br) {
      const int rows = static_cast<int>(len_q - t0 < Br ? len_q - t0 : Br);
      for (int e = tid; e < rows * DV / 2; e += Threads) {
        const int r = e / (DV / 2), c = 2 * (e % (DV / 2));
        store_pair(p, ((q0 + t0 + r) * p.q_heads + head) * D + part * DV + c, 0.0f, 0.0f);
      }
      if (p.lse != nullptr && part == 0) {
        for (int r = tid; r < rows; r += Threads) p.lse[head * p.total_q + q0 + t0 + r] = -INFINITY;
      }
    }
    return false;
  }
  if (i0 >= len_q) return false;
  t.q0 = q0;
  t.k0 = k0;
  t.len_q = len_q;
  t.len_k = len_k;
  t.i0 = i0;
  t.rows = static_cast<int>(len_q - i0 < Br ? len_q - i0 : Br);
  return true;
}

// The key tiles of Bc keys the tile's queries see (causal end, window start), and the positions
// of its first and last query (queries end-aligned with the keys).
struct KeyRange {
  int64_t pos_first = 0, pos_last = 0;
  int t_begin = 0, t_end = 0;
};

template <int Bc>
__device__ __forceinline__ KeyRange key_range(const Params& p, const QueryTile& t) {
  KeyRange r;
  r.pos_first = t.len_k - t.len_q + t.i0;
  r.pos_last = r.pos_first + t.rows - 1;
  const int64_t key_end = p.causal ? min(t.len_k, r.pos_last + 1) : t.len_k;
  const int64_t key_begin =
      p.window > 0 && r.pos_first - p.window + 1 > 0 ? r.pos_first - p.window + 1 : 0;
  r.t_begin = static_cast<int>(key_begin / Bc);
  r.t_end = key_end > key_begin ? static_cast<int>((key_end + Bc - 1) / Bc) : r.t_begin;
  return r;
}

// Whether key tile [key0, key0 + Bc) needs masking for any query of the tile.
template <int Bc>
__device__ __forceinline__ bool tile_needs_mask(const Params& p, const QueryTile& t,
                                                const KeyRange& r, int64_t key0) {
  return key0 + Bc > t.len_k || (p.causal && key0 + Bc - 1 > r.pos_first) ||
         (p.window > 0 && key0 < r.pos_last - p.window + 1);
}

__device__ __forceinline__ bool key_visible(const Params& p, int64_t len_k, int64_t key,
                                            int64_t pos) {
  return key < len_k && (!p.causal || key <= pos) && (p.window <= 0 || key > pos - p.window);
}

// A row's finish from this lane's share of the exponential sum (l) and the row max (m, log2
// domain), the quad's four lanes together: adds the sink, returns the factor for the row's
// accumulators (0 for a row that saw nothing) and writes the log-sum-exp (lane quad 0).
__device__ __forceinline__ float finish_row(const Params& p, int head, int64_t lse_index,
                                            bool write_lse, float l, float m, int quad) {
  l += __shfl_xor_sync(0xffffffffu, l, 1);
  l += __shfl_xor_sync(0xffffffffu, l, 2);
  float alpha = 1.0f;
  if (p.sinks != nullptr) {
    const float sink = p.sinks[head] * kLog2e;
    const float m_new = fmaxf(m, sink);
    alpha = m == -INFINITY ? 0.0f : exp2f(m - m_new);
    l = l * alpha + exp2f(sink - m_new);
    m = m_new;
  }
  if (write_lse && p.lse != nullptr && quad == 0) {
    p.lse[lse_index] = l > 0.0f ? (m + log2f(l)) * kLn2 : -INFINITY;
  }
  return l > 0.0f ? alpha / l : 0.0f;
}

// ---- host side ---------------------------------------------------------------------------------

// Launches `kernel` over (query tiles, q heads, z) with `smem` bytes of dynamic shared memory,
// first opting the kernel into that much once per device (the attribute is per device: a
// process-wide flag would leave a second GPU's launch failing).
template <class Kernel>
void launch_tiles(Kernel kernel, int threads, int smem, int64_t tiles, int64_t z, const Params& p,
                  const Stream& stream) {
  {
    static std::mutex mutex;
    static std::set<std::pair<const void*, int>> opted_in;
    std::lock_guard lock(mutex);
    if (opted_in.emplace(reinterpret_cast<const void*>(kernel), stream.device().index).second) {
      MLXN_CUDA_CHECK(
          cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
    }
  }
  if (tiles > 0x7fffffff || z > 65535) {
    throw Error("prefill_attention", "too many query tiles or sequences for one launch");
  }
  const dim3 grid(static_cast<unsigned>(tiles), static_cast<unsigned>(p.q_heads),
                  static_cast<unsigned>(z));
  kernel<<<grid, threads, smem, static_cast<cudaStream_t>(stream.native_handle())>>>(p);
  MLXN_CUDA_CHECK_LAUNCH();
}

}  // namespace mlxn::cuda::prefill
