// The bulk TurboQuant encoder (prefill-sized batches, head_dim 64 and 128): one thread per
// vector. The lane-group encoder in turboquant.cu spreads a vector over D/16 lanes, which costs
// three shuffle stages of the rotation and the reductions per vector and repeats the per-vector
// work (addressing, divisions, the page lookup) on every lane; it was measured
// instruction-bound at ~246 warp-instructions per vector. Here every butterfly and every
// reduction step stays in registers, codes are found with the cell lookup of
// portable/tq_cell_search.h, and the warp stages its 32 input rows through shared memory with
// coalesced asynchronous copies, issued one tile ahead. The arithmetic is the reference's, in the
// reference's order, so the output is byte-identical to it and to the lane-group encoder.
#include <bit>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/device/types.cuh"
#include "backend/cuda/turboquant/common.cuh"
#include "backend/cuda/turboquant/turboquant.h"
#include "mlxn/core/device_errors.h"
#include "mlxn/core/dispatch.h"
#include "portable/error_state.h"
#include "portable/tq_cell_search.h"
#include "portable/turboquant.h"
#include "turboquant/codebook.h"

namespace mlxn::cuda {

namespace {

using portable::add_rn;
using portable::div_rn;
using portable::fma_rn;
using portable::mul_rn;
using portable::sqrt_rn;

// 4 warps. __launch_bounds__(kThreads, 3) caps registers at 168 so 3 blocks fit per SM; with
// 2 blocks (255 registers) the prefill case measured 133 us instead of 118 us.
constexpr int kThreads = 128;
constexpr int kWarps = kThreads / 32;

struct RowTensor {
  const void* x;         // [tokens, kv_heads, dim], token i at x + i * token_stride elements
  int64_t token_stride;  // elements
  uint8_t* payload;
  uint16_t* scales;
  uint32_t site;
};

struct RowParams {
  RowTensor tensor[2];  // K and V of one bit width (or one tensor)
  uint32_t vectors;     // tokens * kv_heads per tensor
  uint32_t tiles;       // 32-vector tiles per tensor
  int tensors;
  int kv_heads;
  int page_size_log2;
  const int32_t* positions;
  const int32_t* page_table;
  int64_t page_table_len;
  int64_t num_pages;
  DeviceErrorState* flag;
  uint32_t index_site;
};

// Shared memory: the cell table and the centroids for the block, then one staging tile per
// warp. A thread's row is
// padded by 16 bytes so the 32 rows start in distinct bank groups and each 16-byte read of a row is
// conflict-free.
template <int kDim, int kBits, class TIn>
struct RowLayout {
  static constexpr int kCells = tq::cell_grid(kBits).cells + 1;
  static constexpr int kRowBytes = kDim * static_cast<int>(sizeof(TIn)) + 16;
  static constexpr int kChunks = kDim * static_cast<int>(sizeof(TIn)) / 16;  // per row
  static constexpr size_t kTableBytes = sizeof(tq::CellEntry) * kCells;
  static constexpr size_t kCentroidBytes = sizeof(float) << kBits;
  static constexpr size_t kStageOffset = (kTableBytes + kCentroidBytes + 15) / 16 * 16;
  static constexpr size_t kBytes = kStageOffset + size_t{kWarps} * 32 * kRowBytes;
};

__device__ void copy_async_16(void* smem, const void* global) {
  const auto s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(s), "l"(global));
}
__device__ void copy_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
__device__ void copy_async_wait_all() { asm volatile("cp.async.wait_group 0;\n" ::: "memory"); }

// Starts copying the 32 rows of `tile` into the warp's staging area: lane l owns row l (its
// base address, computed once), the copies walk the tile in 16-byte chunks so that consecutive
// lanes read consecutive bytes.
template <int kDim, class TIn, int kRowBytes, int kChunks>
__device__ void stage_tile(const RowParams& p, uint32_t tile, int lane, char* stage) {
  const int k = tile >= p.tiles ? 1 : 0;
  const uint32_t vec = (tile - k * p.tiles) * 32 + lane;
  const uint32_t token = vec / p.kv_heads;
  const uint32_t head = vec - token * p.kv_heads;
  const bool valid = vec < p.vectors;
  const char* row = static_cast<const char*>(p.tensor[k].x) +
                    (static_cast<int64_t>(token) * p.tensor[k].token_stride + head * kDim) *
                        static_cast<int64_t>(sizeof(TIn));
#pragma unroll
  for (int i = 0; i < kChunks; ++i) {
    const int chunk = lane + 32 * i;
    const int r = chunk / kChunks, c = chunk % kChunks;
    const char* src = reinterpret_cast<const char*>(
        __shfl_sync(0xffffffffu, reinterpret_cast<uintptr_t>(row), r));
    if (__shfl_sync(0xffffffffu, valid, r))
      copy_async_16(stage + r * kRowBytes + c * 16, src + c * 16);
  }
  copy_async_commit();
}

// The reference's reduction tree over per-group partial sums: partner g xor m, m = G/2 .. 1.
template <int kGroups>
__device__ float tree_sum(float (&s)[kGroups]) {
#pragma unroll
  for (int m = kGroups / 2; m >= 1; m /= 2) {
#pragma unroll
    for (int g = 0; g < m; ++g) s[g] = add_rn(s[g], s[g + m]);
  }
  return s[0];
}

template <int kDim, int kBits, class TIn>
__global__ void __launch_bounds__(kThreads, 3) tq_encode_rows_kernel(const RowParams p) {
  using Layout = RowLayout<kDim, kBits, TIn>;
  constexpr int kGroups = kDim / tq::kGroup;
  constexpr int kWords = kDim * kBits / 32;
  constexpr tq::CellGrid kGrid = tq::cell_grid(kBits);
  extern __shared__ __align__(16) char smem[];
  // An 8-byte entry and a separate centroid read measured faster than a 16-byte entry holding
  // both candidate centroids (139 vs 160 us): random 16-byte reads conflict on more banks.
  auto* table = reinterpret_cast<tq::CellEntry*>(smem);
  auto* centroids = reinterpret_cast<float*>(smem + Layout::kTableBytes);
  {
    const float* m = device_magnitudes(kBits);
    for (int c = threadIdx.x; c < Layout::kCells; c += kThreads)
      table[c] = tq::cell_entry(m, kBits, kGrid, c);
    for (int c = threadIdx.x; c < (1 << kBits); c += kThreads)
      centroids[c] = tq::centroid(m, kBits, c);
  }
  __syncthreads();
  const int lane = static_cast<int>(threadIdx.x % 32);
  char* stage = smem + Layout::kStageOffset + (threadIdx.x / 32) * 32 * Layout::kRowBytes;
  const uint32_t tiles = p.tiles * p.tensors;
  const uint32_t stride = gridDim.x * kWarps;
  uint32_t tile = blockIdx.x * kWarps + threadIdx.x / 32;
  if (tile < tiles) stage_tile<kDim, TIn, Layout::kRowBytes, Layout::kChunks>(p, tile, lane, stage);
  for (; tile < tiles; tile += stride) {
    copy_async_wait_all();
    __syncwarp();
    float z[kDim];
    load_floats(reinterpret_cast<const TIn*>(stage + lane * Layout::kRowBytes), z);
    __syncwarp();  // every lane has its row: the buffer takes the next tile while we compute
    if (tile + stride < tiles)
      stage_tile<kDim, TIn, Layout::kRowBytes, Layout::kChunks>(p, tile + stride, lane, stage);

    const int k = tile >= p.tiles ? 1 : 0;
    const RowTensor& t = p.tensor[k];
    const uint32_t vec = (tile - k * p.tiles) * 32 + lane;
    if (vec >= p.vectors) continue;
    const uint32_t token = vec / p.kv_heads;
    const uint32_t head = vec - token * p.kv_heads;
    const int64_t position = p.positions[token];
    const int64_t page_index = position >> p.page_size_log2;
    const bool position_ok = position >= 0 && page_index < p.page_table_len;
    const int64_t page = position_ok ? p.page_table[page_index] : 0;
    if (!position_ok || page < 0 || page >= p.num_pages) {
      report_device_error(p.flag, DeviceErrorCode::index_out_of_range, p.index_site,
                          position_ok ? page_index : token, position_ok ? page : position, 0);
      continue;
    }
    const int64_t slot = (page * p.kv_heads + head) * (int64_t{1} << p.page_size_log2) +
                         (position & ((int64_t{1} << p.page_size_log2) - 1));

    // fmax drops NaN, so NaN is caught below through the sum of squares it poisons.
    float max_abs = 0.0f;
#pragma unroll
    for (int j = 0; j < kDim; ++j) max_abs = fmaxf(max_abs, fabsf(z[j]));
    const bool zero = max_abs == 0.0f;
    const int e2 = zero || !(max_abs <= 3.402823466e38f) ? 0 : tq::exponent_of(max_abs);
    // tq::scale_pow2(x, -e2) with the sign folded into the first exact power-of-two factor.
    const int half = -e2 / 2;
    const float p1 = tq::pow2(half), p2 = tq::pow2(-e2 - half);
#pragma unroll
    for (int j = 0; j < kDim; ++j)
      z[j] = mul_rn(mul_rn(z[j], tq::sign_is_negative(j) ? -p1 : p1), p2);
    fwht_in_registers(z);
    float sums[kGroups];
#pragma unroll
    for (int g = 0; g < kGroups; ++g) {
      float acc = 0.0f;
#pragma unroll
      for (int e = 0; e < tq::kGroup; ++e)
        acc = fma_rn(z[g * tq::kGroup + e], z[g * tq::kGroup + e], acc);
      sums[g] = acc;
    }
    const float norm2 = tree_sum(sums);
    const bool finite = max_abs <= 3.402823466e38f && norm2 == norm2;
    if (!finite) {
      // The first non-finite input value, for the message (rare path: re-read the row).
      float bad = 0.0f;
      const TIn* src = reinterpret_cast<const TIn*>(static_cast<const char*>(t.x)) +
                       static_cast<int64_t>(token) * t.token_stride + head * kDim;
      for (int j = kDim - 1; j >= 0; --j) {
        const float v = to_float(src[j]);
        if (!isfinite(v)) bad = v;
      }
      report_device_error(p.flag, DeviceErrorCode::non_finite, t.site, vec, 0, bad);
    }
    const float to_unit = div_rn(tq::sqrt_dim(kDim), sqrt_rn(norm2));

    // D * b / 8 bytes per row, written in 16-byte chunks at D = 128 and 8-byte ones at D = 64
    // (3- and 5-bit rows of 24 and 40 bytes are only 8-byte aligned), each chunk as soon as its
    // codes are packed so that the packed words do not pile up in registers.
    constexpr int kChunkWords = kWords % 4 == 0 ? 4 : 2;
    const bool store_zeros = zero || !finite;
    uint32_t* row = reinterpret_cast<uint32_t*>(t.payload + slot * (kDim * kBits / 8));
    uint32_t words[kWords] = {};
    float dots[kGroups], ccs[kGroups];
#pragma unroll
    for (int g = 0; g < kGroups; ++g) {
      float dot = 0.0f, cc = 0.0f;
#pragma unroll
      for (int e = 0; e < tq::kGroup; ++e) {
        const int j = g * tq::kGroup + e;
        const float u = mul_rn(z[j], to_unit);
        const tq::CellEntry cell = table[tq::cell_of(u, kGrid)];
        const uint32_t code =
            static_cast<uint32_t>(cell.code_below) + (u > cell.boundary ? 1u : 0u);
        const float c = centroids[code];
        dot = fma_rn(z[j], c, dot);
        cc = fma_rn(c, c, cc);
        const int bit = j * kBits;  // disjoint bit fields: + lets the compiler shift-and-add
        words[bit / 32] += code << (bit % 32);
        if (bit % 32 + kBits > 32) words[bit / 32 + 1] += code >> (32 - bit % 32);
      }
      dots[g] = dot;
      ccs[g] = cc;
      // Keeps the scheduler from hoisting every group's table reads to the top, which would
      // need registers for all 128 lookups at once and spill.
      asm volatile("" ::: "memory");
      constexpr int kGroupBits = tq::kGroup * kBits;
#pragma unroll
      for (int c = g * kGroupBits / (32 * kChunkWords);
           c < (g + 1) * kGroupBits / (32 * kChunkWords); ++c) {
        const uint32_t* w = words + c * kChunkWords;
        if constexpr (kChunkWords == 4) {
          reinterpret_cast<uint4*>(row)[c] =
              store_zeros ? make_uint4(0, 0, 0, 0) : make_uint4(w[0], w[1], w[2], w[3]);
        } else {
          reinterpret_cast<uint2*>(row)[c] =
              store_zeros ? make_uint2(0, 0) : make_uint2(w[0], w[1]);
        }
      }
    }
    const float dot = tree_sum(dots), cc = tree_sum(ccs);
    const float alpha = tq::scale_pow2(mul_rn(div_rn(dot, cc), tq::inv_sqrt_dim(kDim)), e2);
    t.scales[slot] =
        store_zeros ? 0 : __half_as_ushort(__float2half_rn(tq::clamp_to_half_range(alpha)));
  }
}

template <int kDim, int kBits, class TIn>
void launch_rows(const RowParams& p, const Stream& stream) {
  using Layout = RowLayout<kDim, kBits, TIn>;
  auto kernel = tq_encode_rows_kernel<kDim, kBits, TIn>;
  if constexpr (Layout::kBytes > 48 * 1024) {  // an opt-in, per device, cheap to repeat
    MLXN_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         static_cast<int>(Layout::kBytes)));
  }
  const uint32_t tiles = p.tiles * p.tensors;
  int per_sm = 0;  // as many resident blocks as registers and shared memory allow
  MLXN_CUDA_CHECK(
      cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kThreads, Layout::kBytes));
  const unsigned blocks = std::min<unsigned>(
      (tiles + kWarps - 1) / kWarps,
      static_cast<unsigned>(std::max(per_sm, 1)) *
          static_cast<unsigned>(device_properties(stream.device()).multiprocessors));
  kernel<<<blocks, kThreads, Layout::kBytes, static_cast<cudaStream_t>(stream.native_handle())>>>(
      p);
  MLXN_CUDA_CHECK_LAUNCH();
}

}  // namespace

void tq_encode_rows(const tq::EncodeJob* jobs, int job_count, const Buffer& positions,
                    const Buffer& page_table, uint32_t index_site, const Stream& stream) {
  const TqCache& first = *jobs[0].cache;
  RowParams p{};
  p.tensors = job_count;
  for (int k = 0; k < job_count; ++k) {
    p.tensor[k] = {jobs[k].x->data(), jobs[k].x->strides()[0],
                   jobs[k].cache->payload.data_as<uint8_t>(),
                   jobs[k].cache->scales.data_as<uint16_t>(), jobs[k].data_site};
  }
  p.vectors = static_cast<uint32_t>(jobs[0].x->dim(0) * first.kv_heads());
  p.tiles = (p.vectors + 31) / 32;
  p.kv_heads = first.kv_heads();
  p.page_size_log2 = std::countr_zero(static_cast<unsigned>(first.page_size()));
  p.positions = positions.data_as<const int32_t>();
  p.page_table = page_table.data_as<const int32_t>();
  p.page_table_len = page_table.numel();
  p.num_pages = first.num_pages();
  p.flag = device_error_state(stream.device());
  p.index_site = index_site;
  using RowDims = IntList<64, 128>;
  dispatch_int<RowDims>("tq_encode", "head_dim", first.dim, [&](auto dim) {
    dispatch_dtype<tq::InputDTypes>("tq_encode", jobs[0].x->dtype(), [&](auto tag) {
      dispatch_int<tq::Bits>("tq_encode", "bits", first.bits, [&](auto bits) {
        launch_rows<decltype(dim)::value, decltype(bits)::value,
                    device_type_t<decltype(tag)::value>>(p, stream);
      });
    });
  });
}

}  // namespace mlxn::cuda
