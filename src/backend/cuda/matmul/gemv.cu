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
// pairs: one rounding to x's dtype. 8-bit codes with bf16 x take the f32 route. The formats'
// loading and decoding: packed_formats.cuh.
//
// Split-K: when the rows alone give too few blocks, blockIdx.y splits the steps; partial sums go
// to an f32 workspace and the last block of each row tile adds them in split order (a fixed
// order: results do not depend on timing).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/device/mma.cuh"
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
constexpr int kMinSplitSteps = 4;  // steps a split covers at least
constexpr int kBlocksPerSm = 8;    // split-K target: blocks per SM (about what fits)

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
    store_out(p, xrow, row, v);
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
