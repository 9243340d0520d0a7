// Softmax rows, built like the norms kernel: a warp per row up to 1024 elements, 128 threads up
// to 4096, 256 up to 8192, and a 1024-thread block per row above that (vocabulary rows). Each
// thread keeps up to kCache of its row's values in registers across the three passes (maximum,
// sum of exponentials, output), so a row that fits is read from memory once; a longer row's
// remainder is read again in each pass (from L2 while the rows in flight fit there). 16-byte
// packs when the row allows; statistics in f32.
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/device/rows.cuh"
#include "backend/cuda/device/types.cuh"
#include "backend/cuda/softmax/softmax.h"
#include "mlxn/core/dispatch.h"

#include <cstdint>
#include <type_traits>

namespace mlxn::cuda {

namespace {

constexpr int kCache = 32;      // values per thread cached up to 256 threads per row
constexpr int kWideCache = 16;  // with 1024 threads per row: 64 registers per thread at most

struct Args {
  const void* x;
  void* out;
  float temperature;
  long long rows;
  int n;
};

// (x - max) / temperature; the division is skipped for the common temperature 1 (uniform branch).
__device__ __forceinline__ float scaled(float d, float t) {
  if (t != 1.0f) d = d / t;
  return d;
}

// kThreads threads per row, kBlockThreads per block; V consecutive elements per access (16
// bytes of TX when the row allows it, else 1).
template <class TX, class TO, int kThreads, int kBlockThreads, int kCacheN, int V, bool kLog>
__global__ void __launch_bounds__(kBlockThreads) softmax_kernel(const Args a) {
  __shared__ float scratch[kBlockThreads / 32];
  constexpr int kRowsPerBlock = kBlockThreads / kThreads;
  constexpr int kPacks = kCacheN / V;  // packs of V values kept in registers per thread
  const long long row = static_cast<long long>(blockIdx.x) * kRowsPerBlock + threadIdx.x / kThreads;
  const int lane = threadIdx.x % kThreads;
  // Rows past the end still take part in the block's barriers.
  const bool active = row < a.rows;
  const long long base = active ? row * a.n : 0;
  const int packs = a.n / V;
  const TX* x = static_cast<const TX*>(a.x) + base;
  const float t = a.temperature;
  auto load = [&](int p, float(&v)[V]) {
    const Pack<TX, V> xv = reinterpret_cast<const Pack<TX, V>*>(x)[p];
#pragma unroll
    for (int e = 0; e < V; ++e) v[e] = to_float(xv.v[e]);
  };

  const MaxOp max_op;
  float cache[kPacks][V];
  float m = -INFINITY;
#pragma unroll
  for (int k = 0; k < kPacks; ++k) {
    const int p = lane + k * kThreads;
    if (active && p < packs) {
      load(p, cache[k]);
    } else {
#pragma unroll
      for (int e = 0; e < V; ++e) cache[k][e] = -INFINITY;
    }
#pragma unroll
    for (int e = 0; e < V; ++e) m = max_op(m, cache[k][e]);
  }
  float tmp[V];
  for (int p = lane + kPacks * kThreads; active && p < packs; p += kThreads) {
    load(p, tmp);
#pragma unroll
    for (int e = 0; e < V; ++e) m = max_op(m, tmp[e]);
  }
  m = row_reduce<kThreads>(m, scratch, max_op);

  // The cache now takes what the output pass needs: exp(z) for softmax, z for log_softmax.
  float s = 0.0f;
#pragma unroll
  for (int k = 0; k < kPacks; ++k) {
    if (lane + k * kThreads < packs) {
#pragma unroll
      for (int e = 0; e < V; ++e) {
        const float z = scaled(cache[k][e] - m, t);
        const float ez = expf(z);
        s += ez;
        cache[k][e] = kLog ? z : ez;
      }
    }
  }
  for (int p = lane + kPacks * kThreads; active && p < packs; p += kThreads) {
    load(p, tmp);
#pragma unroll
    for (int e = 0; e < V; ++e) s += expf(scaled(tmp[e] - m, t));
  }
  s = row_reduce<kThreads>(s, scratch, SumOp{});
  if (!active) return;

  // A row of -inf only has no distribution (z would be -inf - -inf): ops/softmax.h's values.
  const bool none = m == -INFINITY;
  const float log_s = logf(s);
  const float inv_s = 1.0f / s;
  TO* out = static_cast<TO*>(a.out) + base;
  auto emit = [&](int p, const float(&v)[V]) {
    Pack<TO, V> o;
#pragma unroll
    for (int e = 0; e < V; ++e) {
      const float y = none ? (kLog ? -INFINITY : 0.0f) : (kLog ? v[e] - log_s : v[e] * inv_s);
      o.v[e] = from_float<TO>(y);
    }
    reinterpret_cast<Pack<TO, V>*>(out)[p] = o;
  };
#pragma unroll
  for (int k = 0; k < kPacks; ++k) {
    const int p = lane + k * kThreads;
    if (p < packs) emit(p, cache[k]);
  }
  for (int p = lane + kPacks * kThreads; p < packs; p += kThreads) {
    load(p, tmp);
#pragma unroll
    for (int e = 0; e < V; ++e) {
      const float z = scaled(tmp[e] - m, t);
      tmp[e] = kLog ? z : expf(z);
    }
    emit(p, tmp);
  }
}

}  // namespace

void softmax(const Buffer& x, const Buffer& out, float temperature, bool log,
             const Stream& stream) {
  Args a{};
  a.x = x.data();
  a.out = out.data();
  a.temperature = temperature;
  a.n = static_cast<int>(x.dim(-1));
  a.rows = x.numel() / a.n;
  auto cuda_stream = static_cast<cudaStream_t>(stream.native_handle());
  dispatch_dtype<ComputeDTypes>("softmax", x.dtype(), [&](auto xt) {
    dispatch_dtype<ComputeDTypes>("softmax", out.dtype(), [&](auto ot) {
      using TX = device_type_t<decltype(xt)::value>;
      using TO = device_type_t<decltype(ot)::value>;
      constexpr int kV = 16 / sizeof(TX);
      // 16-byte packs need rows of whole packs and both bases 16-byte aligned (out's packs are
      // kV elements of TO: aligned to their size, or 16, when its base is).
      const bool vec = a.n % kV == 0 && aligned16(a.x) && aligned16(a.out);
      const auto launch = [&](auto v, auto lg) {
        constexpr int V = decltype(v)::value;
        constexpr bool kLog = decltype(lg)::value;
        // The fewest threads per row that still cache the whole row: more rows in flight per SM.
        const auto blocks = [&](int rows_per_block) {
          return static_cast<unsigned>((a.rows + rows_per_block - 1) / rows_per_block);
        };
        if (a.n <= 32 * kCache) {
          softmax_kernel<TX, TO, 32, 256, kCache, V, kLog>
              <<<blocks(256 / 32), 256, 0, cuda_stream>>>(a);
        } else if (a.n <= 128 * kCache) {
          softmax_kernel<TX, TO, 128, 256, kCache, V, kLog>
              <<<blocks(256 / 128), 256, 0, cuda_stream>>>(a);
        } else if (a.n <= 256 * kCache) {
          softmax_kernel<TX, TO, 256, 256, kCache, V, kLog><<<blocks(1), 256, 0, cuda_stream>>>(a);
        } else {
          softmax_kernel<TX, TO, 1024, 1024, kWideCache, V, kLog>
              <<<blocks(1), 1024, 0, cuda_stream>>>(a);
        }
      };
      const auto with_log = [&](auto v) {
        if (log) {
          launch(v, std::true_type{});
        } else {
          launch(v, std::false_type{});
        }
      };
      if (vec) {
        with_log(std::integral_constant<int, kV>{});
      } else {
        with_log(std::integral_constant<int, 1>{});
      }
      MLXN_CUDA_CHECK_LAUNCH();
    });
  });
}

}  // namespace mlxn::cuda
