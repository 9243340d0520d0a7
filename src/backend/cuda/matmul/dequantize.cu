// dequantize and the embedding gather: one thread per element, each decoded by weight_element
// (bit-identical to the CPU reference). dequantize_rows, the tensor-core path's staging: one
// thread per 32-code chunk, loaded and decoded with wide accesses by the packed formats
// (packed_formats.cuh) and written as w = fma(scale, code, bias) rounded once to the output
// dtype (the reference's formula for MLX affine, Q4_0, Q8_0 and Q6_K; one rounding fewer than
// the reference's for Q4_K / Q5_K, well inside the matmul error bound).
#include <algorithm>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/matmul/matmul.h"
#include "backend/cuda/matmul/packed_formats.cuh"
#include "backend/cuda/matmul/weight_view.cuh"
#include "mlxn/core/device_errors.h"
#include "mlxn/core/dispatch.h"
#include "portable/error_state.h"

namespace mlxn::cuda {

namespace {

constexpr int kThreads = 256;

// out[t, c] = weight[row(t), c], row(t) = row0 + t, or ids[t] when ids is given.
template <class T>
__global__ void __launch_bounds__(kThreads)
    gather_rows_kernel(const __grid_constant__ WeightView w, int64_t row0, const int32_t* ids,
                       int64_t rows, int64_t vocab, T* out, DeviceErrorState* flag, uint32_t site) {
  for (int64_t t = blockIdx.y; t < rows; t += gridDim.y) {
    int64_t row = row0 + t;
    T* o = out + t * w.k;
    if (ids != nullptr) {
      row = ids[t];
      if (row < 0 || row >= vocab) {
        if (blockIdx.x == 0 && threadIdx.x == 0) {
          report_device_error(flag, DeviceErrorCode::index_out_of_range, site, t, row, 0);
        }
        for (int64_t c = blockIdx.x * kThreads + threadIdx.x; c < w.k; c += gridDim.x * kThreads)
          o[c] = from_float<T>(0.0f);
        continue;
      }
    }
    for (int64_t c = blockIdx.x * kThreads + threadIdx.x; c < w.k; c += gridDim.x * kThreads)
      o[c] = from_float<T>(weight_element(w, row, c));
  }
}

void gather(const Weight& w, int64_t row0, const Buffer& ids, int64_t rows, const Buffer& out,
            uint32_t site, const Stream& stream) {
  const auto cuda_stream = static_cast<cudaStream_t>(stream.native_handle());
  const WeightView view = weight_view(w);
  const dim3 grid(
      static_cast<unsigned>(std::min<int64_t>((w.in_features() + kThreads - 1) / kThreads, 64)),
      static_cast<unsigned>(std::min<int64_t>(rows, 65535)));
  dispatch_dtype<DTypeList<DType::f32, DType::bf16, DType::f16>>(
      "dequantize", out.dtype(), [&](auto tag) {
        using T = device_type_t<decltype(tag)::value>;
        gather_rows_kernel<T><<<grid, kThreads, 0, cuda_stream>>>(
            view, row0, ids.defined() ? ids.data_as<const int32_t>() : nullptr, rows,
            w.out_features(), out.data_as<T>(), device_error_state(stream.device()), site);
        MLXN_CUDA_CHECK_LAUNCH();
      });
}

// out[r, :] = weight row row0 + r, one thread per chunk. A thread's decoded chunk (64 or 128
// bytes) goes through shared memory so that the block writes its contiguous run of the tile
// with consecutive lanes on consecutive 16 bytes: stored straight from the thread, each store
// instruction wrote 16 bytes every 64 (or 128) and the kernel ran at 1.8 TB/s.
template <class Fmt, class T>
__global__ void __launch_bounds__(kThreads)
    stage_rows_kernel(const __grid_constant__ packed::PackedWeight w, int row0, int64_t rows,
                      T* out) {
  constexpr int kPieces = packed::kChunk * static_cast<int>(sizeof(T)) / 16;  // 16 B per chunk
  __shared__ uint4 decoded[kThreads * kPieces];
  const int64_t first = static_cast<int64_t>(blockIdx.x) * kThreads;  // the block's first chunk
  const int64_t i = first + threadIdx.x;
  if (i < rows * w.chunks) {
    const int64_t r = i / w.chunks;
    const int ch = static_cast<int>(i - r * w.chunks);
    typename Fmt::Raw raw;
    Fmt::load(raw, w, row0 + static_cast<int>(r), ch);
    packed::Chunk c;
    Fmt::decode(raw, c);
    float v[packed::kChunk];
#pragma unroll
    for (int j = 0; j < 16; ++j) {
      v[j] = fmaf(c.s_lo, static_cast<float>(c.pair[j] & 0xffffu), c.b_lo);
      v[16 + j] = fmaf(c.s_hi, static_cast<float>(c.pair[j] >> 16), c.b_hi);
    }
    uint4* mine = decoded + threadIdx.x * kPieces;
    if constexpr (sizeof(T) == 4) {
#pragma unroll
      for (int j = 0; j < kPieces; ++j) {
        mine[j] = make_uint4(__float_as_uint(v[4 * j]), __float_as_uint(v[4 * j + 1]),
                             __float_as_uint(v[4 * j + 2]), __float_as_uint(v[4 * j + 3]));
      }
    } else {
      uint32_t h[16];
#pragma unroll
      for (int j = 0; j < 16; ++j) {
        const T lo = from_float<T>(v[2 * j]), hi = from_float<T>(v[2 * j + 1]);
        h[j] = static_cast<uint32_t>(*reinterpret_cast<const uint16_t*>(&lo)) |
               (static_cast<uint32_t>(*reinterpret_cast<const uint16_t*>(&hi)) << 16);
      }
#pragma unroll
      for (int j = 0; j < kPieces; ++j) {
        mine[j] = make_uint4(h[4 * j], h[4 * j + 1], h[4 * j + 2], h[4 * j + 3]);
      }
    }
  }
  __syncthreads();
  // Rows are contiguous in the tile: chunk i starts at element i · kChunk.
  const int64_t valid = min(static_cast<int64_t>(kThreads), rows * w.chunks - first);
  uint4* dst = reinterpret_cast<uint4*>(out + first * packed::kChunk);
  for (int p = threadIdx.x; p < valid * kPieces; p += kThreads) dst[p] = decoded[p];
}

}  // namespace

void dequantize(const Weight& w, const Buffer& out, const Stream& stream) {
  gather(w, 0, Buffer(), w.out_features(), out, 0, stream);
}

void dequantize_rows(const Weight& w, int64_t row0, int64_t rows, const Buffer& out,
                     const Stream& stream) {
  // The chunk kernel's wide loads and stores need aligned rows; anything else takes the gather.
  if (w.format() == WeightFormat::dense || !w.data().is_aligned(16) || !out.is_aligned(16) ||
      w.out_features() > (int64_t{1} << 30)) {
    gather(w, row0, Buffer(), rows, out, 0, stream);
    return;
  }
  const auto cuda_stream = static_cast<cudaStream_t>(stream.native_handle());
  const packed::PackedWeight view = packed::packed_weight(w);
  const int64_t chunks = rows * view.chunks;
  const auto blocks = static_cast<unsigned>((chunks + kThreads - 1) / kThreads);
  packed::with_format(w, [&](auto fmt) {
    using Fmt = decltype(fmt);
    dispatch_dtype<DTypeList<DType::f32, DType::bf16, DType::f16>>(
        "dequantize", out.dtype(), [&](auto tag) {
          using T = device_type_t<decltype(tag)::value>;
          stage_rows_kernel<Fmt, T><<<blocks, kThreads, 0, cuda_stream>>>(
              view, static_cast<int>(row0), rows, out.data_as<T>());
          MLXN_CUDA_CHECK_LAUNCH();
        });
  });
}

void embedding(const linear::EmbeddingJob& job, const Stream& stream) {
  gather(job.table, 0, job.ids, job.tokens, job.out, job.site, stream);
}

}  // namespace mlxn::cuda
