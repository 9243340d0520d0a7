// RoPE and per-head RMSNorm + RoPE. A block takes a few tokens: it first computes their cos/sin
// table in shared memory (one sincosf per token and frequency, shared by every head), then a
// group of G lanes takes each (token, head). A lane's unit is V rotation pairs: with half
// pairing the packs at j and j + rotary_dim / 2, with interleaved pairing 2V consecutive
// elements; past rotary_dim a unit is 2V elements that pass through. With the norm, each lane
// keeps its units in registers between the sum of squares and the output.
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/device/map.cuh"
#include "backend/cuda/device/pdl.cuh"
#include "backend/cuda/device/types.cuh"
#include "backend/cuda/rope/rope.h"
#include "mlxn/core/device_errors.h"
#include "mlxn/core/dispatch.h"
#include "portable/error_state.h"

#include <algorithm>
#include <bit>
#include <cstdint>
#include <string>

namespace mlxn::cuda {

namespace {

constexpr int kBlock = 256;
constexpr int kMaxTableBytes = 48 * 1024;

struct Args {
  const void* x;
  void* out;
  const int32_t* positions;
  const float* inv_freq;
  const void* weight;  // or null
  int weight_type;     // 0 f32, 1 bf16, 2 f16
  bool one_plus, norm, interleaved;
  float eps, scaling;
  long long tokens, x_stride, out_stride;  // token strides in elements
  int heads, head_dim, half, rotary_units, units;
  int group;  // lanes per (token, head): a power of two <= 32
  int tokens_per_block;
  DeviceErrorState* flag;
  uint32_t site;
};

// kCache units per lane stay in registers (the norm needs the whole head before any output).
template <class T, int V>
__global__ void __launch_bounds__(kBlock) rope_kernel(Args a) {
  allow_dependents_early();
  wait_for_previous_grid();  // launched overlapping (device/pdl.cuh)
  constexpr int kCache = V >= 8 ? 2 : 16 / (2 * V);
  extern __shared__ float2 table[];  // [tokens_per_block][half]: (cos, sin) * scaling
  const long long t0 = static_cast<long long>(blockIdx.x) * a.tokens_per_block;
  const int tb = static_cast<int>(min(static_cast<long long>(a.tokens_per_block), a.tokens - t0));
  for (int k = threadIdx.x; k < tb * a.half; k += kBlock) {
    const int lt = k / a.half, j = k - lt * a.half;
    const int p = a.positions[t0 + lt];
    float c = 1.0f, s = 0.0f;  // a negative position is reported and leaves its rows unrotated
    if (p >= 0) {
      sincosf(__fmul_rn(static_cast<float>(p), a.inv_freq[j]), &s, &c);
      c = __fmul_rn(c, a.scaling);
      s = __fmul_rn(s, a.scaling);
    } else if (j == 0) {
      report_device_error(a.flag, DeviceErrorCode::index_out_of_range, a.site, t0 + lt, p, 0.0f);
    }
    table[k] = make_float2(c, s);
  }
  __syncthreads();

  const int g = a.group, lane = threadIdx.x % g;
  const int groups = kBlock / g, items = tb * a.heads;
  // Every lane runs the same number of iterations: the group reductions use whole-warp shuffles.
  for (int base = 0; base < items; base += groups) {
    const int item = base + static_cast<int>(threadIdx.x) / g;
    const bool active = item < items;
    const int lt = active ? item / a.heads : 0, h = active ? item - lt * a.heads : 0;
    const T* x = static_cast<const T*>(a.x) + (t0 + lt) * a.x_stride + h * a.head_dim;
    T* out = static_cast<T*>(a.out) + (t0 + lt) * a.out_stride + h * a.head_dim;
    const float2* cs = table + lt * a.half;
    // Element offsets of unit u's two packs.
    const auto offsets = [&](int u, int& oa, int& ob) {
      if (u < a.rotary_units) {
        oa = a.interleaved ? 2 * u * V : u * V;
        ob = a.interleaved ? oa + V : oa + a.half;
      } else {
        oa = 2 * a.half + 2 * (u - a.rotary_units) * V;
        ob = oa + V;
      }
    };
    for (int u0 = 0; u0 < a.units; u0 += g * kCache) {  // one pass with the norm (host-checked)
      float va[kCache][V], vb[kCache][V];
      float sq = 0.0f;
#pragma unroll
      for (int k = 0; k < kCache; ++k) {
        const int u = u0 + lane + k * g;
        if (active && u < a.units) {
          int oa, ob;
          offsets(u, oa, ob);
          const Pack<T, V> pa = *reinterpret_cast<const Pack<T, V>*>(x + oa);
          const Pack<T, V> pb = *reinterpret_cast<const Pack<T, V>*>(x + ob);
#pragma unroll
          for (int e = 0; e < V; ++e) {
            va[k][e] = to_float(pa.v[e]);
            vb[k][e] = to_float(pb.v[e]);
            sq = fmaf(va[k][e], va[k][e], fmaf(vb[k][e], vb[k][e], sq));
          }
        }
      }
      float inv = 1.0f;
      if (a.norm) {
        for (int o = g / 2; o > 0; o >>= 1) sq += __shfl_xor_sync(0xffffffffu, sq, o);
        inv = rsqrtf(sq / static_cast<float>(a.head_dim) + a.eps);
      }
#pragma unroll
      for (int k = 0; k < kCache; ++k) {
        const int u = u0 + lane + k * g;
        if (!active || u >= a.units) continue;
        int oa, ob;
        offsets(u, oa, ob);
#pragma unroll
        for (int e = 0; e < V; ++e) {
          va[k][e] *= inv;
          vb[k][e] *= inv;
          if (a.weight) {
            const float wa = load_float_coded(a.weight, a.weight_type, oa + e);
            const float wb = load_float_coded(a.weight, a.weight_type, ob + e);
            va[k][e] *= a.one_plus ? 1.0f + wa : wa;
            vb[k][e] *= a.one_plus ? 1.0f + wb : wb;
          }
        }
        if (u < a.rotary_units) {
          if (!a.interleaved || V == 1) {
            // Half pairing (or one interleaved pair per unit): element e of A pairs with e of B.
#pragma unroll
            for (int e = 0; e < V; ++e) {
              const float2 r = cs[a.interleaved ? u : oa + e];
              const float p = va[k][e], q = vb[k][e];
              va[k][e] = p * r.x - q * r.y;
              vb[k][e] = q * r.x + p * r.y;
            }
          } else {
            // Interleaved: pairs (2m, 2m + 1) inside each pack; frequencies u*V .. u*V + V - 1.
#pragma unroll
            for (int m = 0; m < V / 2; ++m) {
              const float2 ra = cs[u * V + m], rb = cs[u * V + V / 2 + m];
              const float p = va[k][2 * m], q = va[k][2 * m + 1];
              va[k][2 * m] = p * ra.x - q * ra.y;
              va[k][2 * m + 1] = q * ra.x + p * ra.y;
              const float pb = vb[k][2 * m], qb = vb[k][2 * m + 1];
              vb[k][2 * m] = pb * rb.x - qb * rb.y;
              vb[k][2 * m + 1] = qb * rb.x + pb * rb.y;
            }
          }
        }
        Pack<T, V> pa, pb;
#pragma unroll
        for (int e = 0; e < V; ++e) {
          pa.v[e] = from_float<T>(va[k][e]);
          pb.v[e] = from_float<T>(vb[k][e]);
        }
        *reinterpret_cast<Pack<T, V>*>(out + oa) = pa;
        *reinterpret_cast<Pack<T, V>*>(out + ob) = pb;
      }
    }
  }
}

}  // namespace

void rope(const rotary::Job& job, const Stream& stream) {
  Args a{};
  a.x = job.x.data();
  a.out = job.out.data();
  a.positions = job.positions.data_as<const int32_t>();
  a.inv_freq = job.inv_freq.data_as<const float>();
  a.weight = job.weight.defined() ? job.weight.data() : nullptr;
  a.weight_type = job.weight.defined() ? float_dtype_code(job.weight.dtype()) : 0;
  a.one_plus = job.weight_mode == RmsWeight::one_plus;
  a.norm = job.norm;
  a.interleaved = job.pairing == RopePairing::interleaved;
  a.eps = job.eps;
  a.scaling = job.attention_scaling;
  a.tokens = job.tokens;
  a.x_stride = job.x_token_stride;
  a.out_stride = job.out_token_stride;
  a.heads = static_cast<int>(job.heads);
  a.head_dim = static_cast<int>(job.head_dim);
  a.half = static_cast<int>(job.rotary_dim / 2);
  a.flag = device_error_state(stream.device());
  a.site = job.position_site;
  auto cuda_stream = static_cast<cudaStream_t>(stream.native_handle());
  dispatch_dtype<DTypeList<DType::f32, DType::bf16, DType::f16>>(
      "rope", job.x.dtype(), [&](auto t) {
        using T = device_type_t<decltype(t)::value>;
        constexpr int kV = 16 / sizeof(T);
        const auto aligned = [](const void* p, long long stride) {
          return (reinterpret_cast<uintptr_t>(p) & 15) == 0 && (stride * sizeof(T)) % 16 == 0;
        };
        // Packs of kV pairs need whole packs in both halves, in the pass-through tail, and in every
        // head and token offset.
        const bool vec = a.half % kV == 0 && (a.head_dim - 2 * a.half) % (2 * kV) == 0 &&
                         a.head_dim % kV == 0 && aligned(a.x, a.x_stride) &&
                         aligned(a.out, a.out_stride);
        const auto launch = [&](auto v) {
          constexpr int V = decltype(v)::value;
          constexpr int kCache = V >= 8 ? 2 : 16 / (2 * V);
          a.rotary_units = a.half / V;
          a.units = a.head_dim / (2 * V);
          a.group = std::min(32, static_cast<int>(std::bit_ceil(static_cast<unsigned>(a.units))));
          if (a.norm && a.units > a.group * kCache) {
            throw Error("rms_norm_rope", "head_dim " + std::to_string(a.head_dim) +
                                             " is above this kernel's limit of " +
                                             std::to_string(64 * kCache * V) + " for this layout");
          }
          // Enough tokens per block for two passes of its groups, within the table's budget.
          const int per_pass = kBlock / a.group;
          a.tokens_per_block = std::clamp((2 * per_pass + a.heads - 1) / a.heads, 1,
                                          std::max(1, kMaxTableBytes / (8 * std::max(a.half, 1))));
          const long long blocks = (a.tokens + a.tokens_per_block - 1) / a.tokens_per_block;
          const size_t smem = static_cast<size_t>(a.tokens_per_block) * a.half * sizeof(float2);
          launch_overlapping(rope_kernel<T, V>, static_cast<unsigned>(blocks), kBlock, smem,
                             cuda_stream, a);
          MLXN_CUDA_CHECK_LAUNCH();
        };
        if (vec) {
          launch(std::integral_constant<int, kV>{});
        } else {
          launch(std::integral_constant<int, 1>{});
        }
      });
}

}  // namespace mlxn::cuda
