// Row normalisations: a warp per row up to 1024 elements, 128 threads up to 4096, 256 above. Each
// thread keeps up to kCache of its row's values in registers between the statistics pass and the
// output pass (rows up to 8192 elements are read from memory once) and moves them in 16-byte
// packs when the row allows; statistics in f32.
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/device/pdl.cuh"
#include "backend/cuda/device/rows.cuh"
#include "backend/cuda/device/types.cuh"
#include "backend/cuda/norms/norms.h"
#include "backend/cuda/runtime.h"
#include "mlxn/core/dispatch.h"

#include <cstdint>
#include <type_traits>

namespace mlxn::cuda {

namespace {

constexpr int kBlock = 256;
constexpr int kCache = 32;

struct Args {
  const void* x;
  const void* residual;  // or null
  void* sum_out;         // with residual
  const void* weight;    // or null
  const void* bias;      // or null
  void* out;
  int weight_type, bias_type;  // 0 f32, 1 bf16, 2 f16
  int kind;                    // norms::Kind
  bool one_plus;
  float eps;
  long long rows;
  int n;
};

// V consecutive elements per access: 16 bytes of TX when the row allows it, else 1.
template <class TX, class TO, int kThreads, int V>
__global__ void __launch_bounds__(kBlock) norm_kernel(Args a) {
  __shared__ float scratch[kBlock / 32];
  allow_dependents_early();
  wait_for_previous_grid();  // launched overlapping (device/pdl.cuh)
  constexpr int kRowsPerBlock = kBlock / kThreads;
  constexpr int kPacks = kCache / V;  // packs of V values kept in registers per thread
  const long long row = static_cast<long long>(blockIdx.x) * kRowsPerBlock + threadIdx.x / kThreads;
  const int lane = threadIdx.x % kThreads;
  // Rows past the end still take part in the block's barriers.
  const bool active = row < a.rows;
  const long long base = active ? row * a.n : 0;
  const int packs = a.n / V;
  const TX* x = static_cast<const TX*>(a.x) + base;
  const TX* res = a.residual ? static_cast<const TX*>(a.residual) + base : nullptr;
  TX* sum_out = a.residual ? static_cast<TX*>(a.sum_out) + base : nullptr;

  // Pack p's values entering the statistics: x, or x + residual rounded as stored in sum_out.
  auto load = [&](int p, bool write_sum, float(&v)[V]) {
    const Pack<TX, V> xv = reinterpret_cast<const Pack<TX, V>*>(x)[p];
    if (res) {
      const Pack<TX, V> rv = reinterpret_cast<const Pack<TX, V>*>(res)[p];
      Pack<TX, V> sv;
#pragma unroll
      for (int e = 0; e < V; ++e) {
        sv.v[e] = from_float<TX>(to_float(xv.v[e]) + to_float(rv.v[e]));
        v[e] = to_float(sv.v[e]);
      }
      if (write_sum) reinterpret_cast<Pack<TX, V>*>(sum_out)[p] = sv;
    } else {
#pragma unroll
      for (int e = 0; e < V; ++e) v[e] = to_float(xv.v[e]);
    }
  };
  float cache[kPacks][V];
  float sum = 0.0f, sq = 0.0f;
#pragma unroll
  for (int k = 0; k < kPacks; ++k) {
    const int p = lane + k * kThreads;
    if (active && p < packs) {
      load(p, true, cache[k]);
    } else {
#pragma unroll
      for (int e = 0; e < V; ++e) cache[k][e] = 0.0f;
    }
#pragma unroll
    for (int e = 0; e < V; ++e) sum += cache[k][e];
  }
  float tmp[V];
  for (int p = lane + kPacks * kThreads; active && p < packs; p += kThreads) {
    load(p, true, tmp);
#pragma unroll
    for (int e = 0; e < V; ++e) sum += tmp[e];
  }
  const bool layer = a.kind == static_cast<int>(norms::Kind::layer);
  const float mean =
      layer ? row_reduce<kThreads>(sum, scratch, SumOp{}) / static_cast<float>(a.n) : 0.0f;
#pragma unroll
  for (int k = 0; k < kPacks; ++k) {
    if (lane + k * kThreads < packs) {
#pragma unroll
      for (int e = 0; e < V; ++e) {
        const float d = cache[k][e] - mean;
        sq = fmaf(d, d, sq);
      }
    }
  }
  for (int p = lane + kPacks * kThreads; active && p < packs; p += kThreads) {
    load(p, false, tmp);
#pragma unroll
    for (int e = 0; e < V; ++e) {
      const float d = tmp[e] - mean;
      sq = fmaf(d, d, sq);
    }
  }
  sq = row_reduce<kThreads>(sq, scratch, SumOp{});
  const float denom =
      a.kind == static_cast<int>(norms::Kind::l2) ? sq : sq / static_cast<float>(a.n);
  const float inv = rsqrtf(denom + a.eps);
  if (!active) return;
  TO* out = static_cast<TO*>(a.out) + base;
  auto emit = [&](int p, const float(&v)[V]) {
    Pack<TO, V> o;
#pragma unroll
    for (int e = 0; e < V; ++e) {
      const int i = p * V + e;
      float y = (v[e] - mean) * inv;
      if (a.weight) {
        const float w = load_float_coded(a.weight, a.weight_type, i);
        y *= a.one_plus ? 1.0f + w : w;
      }
      if (a.bias) y += load_float_coded(a.bias, a.bias_type, i);
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
    load(p, false, tmp);
    emit(p, tmp);
  }
}

}  // namespace

void normalize(const norms::Job& job, const Stream& stream) {
  Args a{};
  a.x = job.x.data();
  a.residual = job.residual.defined() ? job.residual.data() : nullptr;
  a.sum_out = job.sum_out.defined() ? job.sum_out.data() : nullptr;
  a.weight = job.weight.defined() ? job.weight.data() : nullptr;
  a.bias = job.bias.defined() ? job.bias.data() : nullptr;
  a.out = job.out.data();
  a.weight_type = job.weight.defined() ? float_dtype_code(job.weight.dtype()) : 0;
  a.bias_type = job.bias.defined() ? float_dtype_code(job.bias.dtype()) : 0;
  a.kind = static_cast<int>(job.kind);
  a.one_plus = job.weight_mode == RmsWeight::one_plus;
  a.eps = job.eps;
  a.rows = job.rows;
  a.n = static_cast<int>(job.dim);
  auto cuda_stream = static_cast<cudaStream_t>(stream.native_handle());
  using Floats = DTypeList<DType::f32, DType::bf16, DType::f16>;
  dispatch_dtype<Floats>("norm", job.x.dtype(), [&](auto xt) {
    dispatch_dtype<Floats>("norm", job.out.dtype(), [&](auto ot) {
      using TX = device_type_t<decltype(xt)::value>;
      using TO = device_type_t<decltype(ot)::value>;
      constexpr int kV = 16 / sizeof(TX);
      // 16-byte packs need rows of whole packs and every operand 16-byte aligned (out's packs
      // are kV elements of TO: aligned to their size, or 16, when its base is).
      const bool vec = a.n % kV == 0 && aligned16(a.x) && aligned16(a.out) &&
                       (!a.residual || (aligned16(a.residual) && aligned16(a.sum_out)));
      const auto launch = [&](auto v) {
        constexpr int V = decltype(v)::value;
        // The fewest threads per row that still cache the whole row: more rows in flight per SM.
        const auto blocks = [&](int per_row) {
          const long long rows_per_block = kBlock / per_row;
          return static_cast<unsigned>((a.rows + rows_per_block - 1) / rows_per_block);
        };
        // A few rows (a decode step's one per sequence) get a whole block each: with 32 or 128
        // threads a row is a long serial chain on one SM (11 µs for one row of 4096, measured).
        const bool few_rows = a.rows <= 2LL * device_properties(stream.device()).multiprocessors;
        if (few_rows) {
          launch_overlapping(norm_kernel<TX, TO, kBlock, V>, blocks(kBlock), kBlock, 0, cuda_stream,
                             a);
        } else if (a.n <= 32 * kCache) {
          launch_overlapping(norm_kernel<TX, TO, 32, V>, blocks(32), kBlock, 0, cuda_stream, a);
        } else if (a.n <= 128 * kCache) {
          launch_overlapping(norm_kernel<TX, TO, 128, V>, blocks(128), kBlock, 0, cuda_stream, a);
        } else {
          launch_overlapping(norm_kernel<TX, TO, kBlock, V>, blocks(kBlock), kBlock, 0, cuda_stream,
                             a);
        }
      };
      if (vec) {
        launch(std::integral_constant<int, kV>{});
      } else {
        launch(std::integral_constant<int, 1>{});
      }
      MLXN_CUDA_CHECK_LAUNCH();
    });
  });
}

}  // namespace mlxn::cuda
