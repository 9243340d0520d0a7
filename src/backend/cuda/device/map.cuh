// The elementwise engine every map-shaped CUDA op uses: out[i] = op(i, in_0[i], ..., in_{N-1}[i])
// over one shape, N inputs of one dtype TIn, output TOut.
//  - All operands contiguous and 16-byte aligned: each thread moves packs of kVec elements (16
//    bytes of the widest type), kUnroll packs in flight per thread; block 0 does the tail.
//  - Contiguous but unaligned: the same kernel with one element per pack.
//  - Rows contiguous but pitched (after merging, a 2-D view whose inner axis has stride 1 in
//    every operand, e.g. the gate and up halves of a fused [M, 2I] projection): the same packs
//    along each row, when rows are whole packs and every row starts 16-byte aligned.
//  - A transposing 2-D copy/cast: shared-memory tiles, so both sides are coalesced.
//  - Otherwise (strided, broadcast): a grid-stride loop that turns the row-major index into
//    per-operand offsets, over axes merged where all operands allow it.
// `op` receives the row-major element index (fill_random needs it) and the input values.
#pragma once

#include <algorithm>
#include <array>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/device/pdl.cuh"
#include "backend/cuda/device/types.cuh"
#include "mlxn/core/buffer.h"

namespace mlxn::cuda {

template <int kInputs>
struct MapPointers {
  void* out;                                  // [numel] TOut
  const void* in[kInputs > 0 ? kInputs : 1];  // [numel] TIn each
};

template <int kInputs>
struct MapStrides {
  int rank;
  int64_t numel;
  int64_t shape[kMaxRank];
  int64_t out[kMaxRank];  // element strides of out
  int64_t in[kInputs > 0 ? kInputs : 1][kMaxRank];
};

constexpr int kMapThreads = 256;
constexpr int kMapUnroll = 4;

template <int kInputs, class TIn, class TOut, int kVec, class Op>
__global__ void __launch_bounds__(kMapThreads)
    map_contiguous_kernel(const MapPointers<kInputs> p, const int64_t numel, const Op op) {
  allow_dependents_early();
  wait_for_previous_grid();  // launched overlapping (device/pdl.cuh)
  constexpr int kIn = kInputs > 0 ? kInputs : 1;
  const int64_t packs = numel / kVec;
  const int64_t first = static_cast<int64_t>(blockIdx.x) * kMapThreads * kMapUnroll + threadIdx.x;
  Pack<TIn, kVec> in[kMapUnroll][kIn];
#pragma unroll
  for (int u = 0; u < kMapUnroll; ++u) {
    const int64_t pack = first + u * kMapThreads;
#pragma unroll
    for (int j = 0; j < kInputs; ++j) {
      if (pack < packs) in[u][j] = static_cast<const Pack<TIn, kVec>*>(p.in[j])[pack];
    }
  }
#pragma unroll
  for (int u = 0; u < kMapUnroll; ++u) {
    const int64_t pack = first + u * kMapThreads;
    if (pack >= packs) continue;
    Pack<TOut, kVec> out;
#pragma unroll
    for (int e = 0; e < kVec; ++e) {
      TIn values[kIn];
#pragma unroll
      for (int j = 0; j < kInputs; ++j) values[j] = in[u][j].v[e];
      out.v[e] = op(pack * kVec + e, values);
    }
    static_cast<Pack<TOut, kVec>*>(p.out)[pack] = out;
  }
  if (blockIdx.x == 0) {
    for (int64_t i = packs * kVec + threadIdx.x; i < numel; i += kMapThreads) {
      TIn values[kIn];
#pragma unroll
      for (int j = 0; j < kInputs; ++j) values[j] = static_cast<const TIn*>(p.in[j])[i];
      static_cast<TOut*>(p.out)[i] = op(i, values);
    }
  }
}

// Index is int32_t when every offset fits (32-bit division is several times cheaper).
template <int kInputs, class TIn, class TOut, class Index, class Op>
__global__ void __launch_bounds__(kMapThreads)
    map_strided_kernel(const MapPointers<kInputs> p, const MapStrides<kInputs> s, const Op op) {
  constexpr int kIn = kInputs > 0 ? kInputs : 1;
  const Index numel = static_cast<Index>(s.numel);
  const Index step = static_cast<Index>(gridDim.x) * kMapThreads;
  for (Index i = static_cast<Index>(blockIdx.x) * kMapThreads + threadIdx.x; i < numel; i += step) {
    Index rest = i, out_offset = 0;
    Index in_offset[kIn] = {};
    for (int d = s.rank - 1; d >= 0; --d) {
      const auto extent = static_cast<Index>(s.shape[d]);
      const Index c = rest % extent;
      rest /= extent;
      out_offset += c * static_cast<Index>(s.out[d]);
#pragma unroll
      for (int j = 0; j < kInputs; ++j) in_offset[j] += c * static_cast<Index>(s.in[j][d]);
    }
    TIn values[kIn];
#pragma unroll
    for (int j = 0; j < kInputs; ++j) values[j] = static_cast<const TIn*>(p.in[j])[in_offset[j]];
    static_cast<TOut*>(p.out)[out_offset] = op(static_cast<int64_t>(i), values);
  }
}

// A 2-D map over s.shape[0] rows of s.shape[1] contiguous elements per operand, row pitches
// s.out[0] and s.in[j][0]: the contiguous kernel's packs, each located by its row. Rows are a
// whole number of packs and every row of every operand starts aligned to a pack.
template <int kInputs, class TIn, class TOut, int kVec, class Op>
__global__ void __launch_bounds__(kMapThreads)
    map_rows_kernel(const MapPointers<kInputs> p, const MapStrides<kInputs> s, const Op op) {
  using Index = int32_t;  // the launch keeps every pack index below 2^30
  constexpr int kIn = kInputs > 0 ? kInputs : 1;
  const auto row_packs = static_cast<Index>(s.shape[1] / kVec);
  const Index packs = static_cast<Index>(s.shape[0]) * row_packs;
  const Index first =
      static_cast<Index>(blockIdx.x) * (kMapThreads * kMapUnroll) + static_cast<Index>(threadIdx.x);
  Pack<TIn, kVec> in[kMapUnroll][kIn];
  int64_t row[kMapUnroll], col[kMapUnroll];
#pragma unroll
  for (int u = 0; u < kMapUnroll; ++u) {
    const Index pack = first + u * kMapThreads;
    const Index r = pack / row_packs;
    row[u] = r;
    col[u] = static_cast<int64_t>(pack - r * row_packs) * kVec;
#pragma unroll
    for (int j = 0; j < kInputs; ++j) {
      if (pack < packs) {
        in[u][j] = *reinterpret_cast<const Pack<TIn, kVec>*>(static_cast<const TIn*>(p.in[j]) +
                                                             row[u] * s.in[j][0] + col[u]);
      }
    }
  }
#pragma unroll
  for (int u = 0; u < kMapUnroll; ++u) {
    if (first + u * kMapThreads >= packs) continue;
    Pack<TOut, kVec> out;
#pragma unroll
    for (int e = 0; e < kVec; ++e) {
      TIn values[kIn];
#pragma unroll
      for (int j = 0; j < kInputs; ++j) values[j] = in[u][j].v[e];
      out.v[e] = op(row[u] * s.shape[1] + col[u] + e, values);
    }
    *reinterpret_cast<Pack<TOut, kVec>*>(static_cast<TOut*>(p.out) + row[u] * s.out[0] + col[u]) =
        out;
  }
}

// A 2-D map whose output rows are contiguous while the input walks down columns (the copy or
// cast that makes a transposed view contiguous). One thread per element would read or write
// with a stride; instead a block stages a kTile x kTile tile in shared memory, reading it along
// the input's contiguous axis and writing it along the output's. +1 column of padding keeps the
// column reads free of bank conflicts.
constexpr int kTile = 32;
constexpr int kTileRows = 8;

template <class TIn, class TOut, class Op>
__global__ void __launch_bounds__(kTile* kTileRows)
    map_transpose_kernel(const MapPointers<1> p, const int64_t rows, const int64_t cols,
                         const int64_t out_row_stride, const int64_t in_col_stride, const Op op) {
  __shared__ TIn tile[kTile][kTile + 1];
  const int64_t row0 = static_cast<int64_t>(blockIdx.y) * kTile;
  const int64_t col0 = static_cast<int64_t>(blockIdx.x) * kTile;
  const auto* in = static_cast<const TIn*>(p.in[0]);  // element (r, c) at r + c * in_col_stride
  auto* out = static_cast<TOut*>(p.out);              // element (r, c) at r * out_row_stride + c
  // Read: consecutive threads take consecutive rows of one column (the input's contiguous axis).
  for (int k = threadIdx.y; k < kTile; k += kTileRows) {
    const int64_t r = row0 + threadIdx.x, c = col0 + k;
    if (r < rows && c < cols) tile[threadIdx.x][k] = in[r + c * in_col_stride];
  }
  __syncthreads();
  // Write: consecutive threads take consecutive columns of one row (the output's contiguous axis).
  for (int k = threadIdx.y; k < kTile; k += kTileRows) {
    const int64_t r = row0 + k, c = col0 + threadIdx.x;
    if (r < rows && c < cols) {
      const TIn values[1] = {tile[k][threadIdx.x]};
      out[r * out_row_stride + c] = op(r * cols + c, values);
    }
  }
}

inline int multiprocessor_count(Device device) { return device_properties(device).multiprocessors; }

// Launches the right variant for `out` and `inputs` (already broadcast to out's shape).
template <int kInputs, class TIn, class TOut, class Op>
void launch_map(const Buffer& out, const std::array<const Buffer*, kInputs>& inputs, const Op& op,
                const Stream& stream) {
  const int64_t numel = out.numel();
  if (numel == 0) return;
  auto cuda_stream = static_cast<cudaStream_t>(stream.native_handle());
  MapPointers<kInputs> p{};
  p.out = out.data();
  bool contiguous = out.is_contiguous();
  bool aligned = out.is_aligned(16);
  for (int j = 0; j < kInputs; ++j) {
    p.in[j] = inputs[j]->data();
    contiguous = contiguous && inputs[j]->is_contiguous();
    aligned = aligned && inputs[j]->is_aligned(16);
  }
  // 16 bytes of the widest operand per pack: its accesses are full 16-byte, fully coalesced
  // transactions, and the narrower operands' 4- or 8-byte accesses still cover whole lines.
  constexpr int kWidest = kInputs > 0 ? std::max(sizeof(TIn), sizeof(TOut)) : sizeof(TOut);
  constexpr int kVec = 16 / kWidest;
  if (contiguous) {
    if (aligned) {
      const int64_t packs = numel / kVec;
      const int64_t blocks =
          std::max<int64_t>(1, (packs + kMapThreads * kMapUnroll - 1) / (kMapThreads * kMapUnroll));
      launch_overlapping(map_contiguous_kernel<kInputs, TIn, TOut, kVec, Op>,
                         static_cast<unsigned>(blocks), kMapThreads, 0, cuda_stream, p, numel, op);
    } else {
      const int64_t blocks =
          std::max<int64_t>(1, (numel + kMapThreads * kMapUnroll - 1) / (kMapThreads * kMapUnroll));
      launch_overlapping(map_contiguous_kernel<kInputs, TIn, TOut, 1, Op>,
                         static_cast<unsigned>(blocks), kMapThreads, 0, cuda_stream, p, numel, op);
    }
    MLXN_CUDA_CHECK_LAUNCH();
    return;
  }
  // Drop size-1 axes and merge neighbours that every operand walks contiguously, so the kernel
  // divides as little as possible.
  MapStrides<kInputs> s{};
  s.numel = numel;
  int rank = 0;
  int64_t span = 1;  // largest element offset any operand reaches, for the index-width choice
  for (int d = 0; d < out.rank(); ++d) {
    const int64_t extent = out.shape()[d];
    if (extent == 1) continue;
    bool merge = rank > 0 && s.out[rank - 1] == out.strides()[d] * extent;
    for (int j = 0; j < kInputs; ++j)
      merge = merge && s.in[j][rank - 1] == inputs[j]->strides()[d] * extent;
    if (merge) {
      s.shape[rank - 1] *= extent;
      s.out[rank - 1] = out.strides()[d];
      for (int j = 0; j < kInputs; ++j) s.in[j][rank - 1] = inputs[j]->strides()[d];
      continue;
    }
    s.shape[rank] = extent;
    s.out[rank] = out.strides()[d];
    for (int j = 0; j < kInputs; ++j) s.in[j][rank] = inputs[j]->strides()[d];
    ++rank;
  }
  s.rank = rank;
  for (int d = 0; d < rank; ++d) {
    int64_t widest = s.out[d];
    for (int j = 0; j < kInputs; ++j) widest = std::max(widest, s.in[j][d]);
    span += (s.shape[d] - 1) * widest;
  }
  // Base addresses 16-byte aligned, and row pitches and row length whole packs: then every pack
  // of every row is aligned too. 32-bit pack indices (one cheap division per pack); larger views
  // take the strided loop.
  if (rank == 2 && aligned && numel / kVec < (int64_t{1} << 30)) {
    bool rows = s.out[1] == 1 && s.out[0] % kVec == 0 && s.shape[1] % kVec == 0;
    for (int j = 0; j < kInputs; ++j) rows = rows && s.in[j][1] == 1 && s.in[j][0] % kVec == 0;
    if (rows) {
      const int64_t blocks =
          (numel / kVec + kMapThreads * kMapUnroll - 1) / (kMapThreads * kMapUnroll);
      map_rows_kernel<kInputs, TIn, TOut, kVec, Op>
          <<<static_cast<unsigned>(blocks), kMapThreads, 0, cuda_stream>>>(p, s, op);
      MLXN_CUDA_CHECK_LAUNCH();
      return;
    }
  }
  if constexpr (kInputs == 1) {
    if (rank == 2 && s.out[1] == 1 && s.in[0][0] == 1 && s.in[0][1] != 1 &&
        s.shape[0] / kTile < 65536) {
      const dim3 grid(static_cast<unsigned>((s.shape[1] + kTile - 1) / kTile),
                      static_cast<unsigned>((s.shape[0] + kTile - 1) / kTile));
      map_transpose_kernel<TIn, TOut, Op><<<grid, dim3(kTile, kTileRows), 0, cuda_stream>>>(
          p, s.shape[0], s.shape[1], s.out[0], s.in[0][1], op);
      MLXN_CUDA_CHECK_LAUNCH();
      return;
    }
  }
  const int64_t blocks = std::min<int64_t>((numel + kMapThreads - 1) / kMapThreads,
                                           int64_t{16} * multiprocessor_count(out.device()));
  if (numel < (int64_t{1} << 31) && span < (int64_t{1} << 31)) {
    map_strided_kernel<kInputs, TIn, TOut, int32_t, Op>
        <<<static_cast<unsigned>(blocks), kMapThreads, 0, cuda_stream>>>(p, s, op);
  } else {
    map_strided_kernel<kInputs, TIn, TOut, int64_t, Op>
        <<<static_cast<unsigned>(blocks), kMapThreads, 0, cuda_stream>>>(p, s, op);
  }
  MLXN_CUDA_CHECK_LAUNCH();
}

}  // namespace mlxn::cuda
