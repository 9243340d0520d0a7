// The elementwise engine every map-shaped CUDA op uses: out[i] = op(i, in_0[i], ..., in_{N-1}[i])
// over one shape, N inputs of one dtype TIn, output TOut.
//  - All operands contiguous and 16-byte aligned: each thread moves 16-byte packs (kVec
//    elements of the narrowest type), kUnroll packs in flight per thread; block 0 does the tail.
//  - Contiguous but unaligned: the same kernel with one element per pack.
//  - Otherwise (strided, broadcast): a grid-stride loop that turns the row-major index into
//    per-operand offsets.
// `op` receives the row-major element index (fill_random needs it) and the input values.
#pragma once

#include <algorithm>
#include <array>

#include "backend/cuda/cuda_check.h"
#include "mlxn/core/buffer.h"

namespace mlxn::cuda {

template <class T, int N>
struct alignas(sizeof(T) * N >= 16 ? 16 : sizeof(T) * N) Pack {
  T v[N];
};

template <int kInputs>
struct MapPointers {
  void* out;                                    // [numel] TOut
  const void* in[kInputs > 0 ? kInputs : 1];    // [numel] TIn each
};

template <int kInputs>
struct MapStrides {
  int rank;
  int64_t numel;
  int64_t shape[kMaxRank];
  int64_t out[kMaxRank];                        // element strides of out
  int64_t in[kInputs > 0 ? kInputs : 1][kMaxRank];
};

constexpr int kMapThreads = 256;
constexpr int kMapUnroll = 4;

template <int kInputs, class TIn, class TOut, int kVec, class Op>
__global__ void __launch_bounds__(kMapThreads)
    map_contiguous_kernel(const MapPointers<kInputs> p, const int64_t numel, const Op op) {
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

template <int kInputs, class TIn, class TOut, class Op>
__global__ void __launch_bounds__(kMapThreads)
    map_strided_kernel(const MapPointers<kInputs> p, const MapStrides<kInputs> s, const Op op) {
  constexpr int kIn = kInputs > 0 ? kInputs : 1;
  const int64_t step = static_cast<int64_t>(gridDim.x) * kMapThreads;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * kMapThreads + threadIdx.x; i < s.numel;
       i += step) {
    int64_t rest = i, out_offset = 0;
    int64_t in_offset[kIn] = {};
    for (int d = s.rank - 1; d >= 0; --d) {
      const int64_t c = rest % s.shape[d];
      rest /= s.shape[d];
      out_offset += c * s.out[d];
#pragma unroll
      for (int j = 0; j < kInputs; ++j) in_offset[j] += c * s.in[j][d];
    }
    TIn values[kIn];
#pragma unroll
    for (int j = 0; j < kInputs; ++j) values[j] = static_cast<const TIn*>(p.in[j])[in_offset[j]];
    static_cast<TOut*>(p.out)[out_offset] = op(i, values);
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
  if (contiguous) {
    constexpr int kNarrowest = kInputs > 0 ? std::min(sizeof(TIn), sizeof(TOut)) : sizeof(TOut);
    constexpr int kVec = 16 / kNarrowest;
    if (aligned) {
      const int64_t packs = numel / kVec;
      const int64_t blocks = std::max<int64_t>(1, (packs + kMapThreads * kMapUnroll - 1) /
                                                      (kMapThreads * kMapUnroll));
      map_contiguous_kernel<kInputs, TIn, TOut, kVec, Op>
          <<<static_cast<unsigned>(blocks), kMapThreads, 0, cuda_stream>>>(p, numel, op);
    } else {
      const int64_t blocks = std::max<int64_t>(1, (numel + kMapThreads * kMapUnroll - 1) /
                                                      (kMapThreads * kMapUnroll));
      map_contiguous_kernel<kInputs, TIn, TOut, 1, Op>
          <<<static_cast<unsigned>(blocks), kMapThreads, 0, cuda_stream>>>(p, numel, op);
    }
    MLXN_CUDA_CHECK_LAUNCH();
    return;
  }
  MapStrides<kInputs> s{};
  s.rank = out.rank();
  s.numel = numel;
  for (int d = 0; d < out.rank(); ++d) {
    s.shape[d] = out.shape()[d];
    s.out[d] = out.strides()[d];
    for (int j = 0; j < kInputs; ++j) s.in[j][d] = inputs[j]->strides()[d];
  }
  const int64_t blocks = std::min<int64_t>((numel + kMapThreads - 1) / kMapThreads,
                                           int64_t{16} * multiprocessor_count(out.device()));
  map_strided_kernel<kInputs, TIn, TOut, Op>
      <<<static_cast<unsigned>(blocks), kMapThreads, 0, cuda_stream>>>(p, s, op);
  MLXN_CUDA_CHECK_LAUNCH();
}

}  // namespace mlxn::cuda
