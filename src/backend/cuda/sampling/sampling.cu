// Sampling: G co-resident blocks per row (a cooperative launch) that meet at row barriers.
//   phase 0  per chunk of 2048 logits: z = logit / T, the chunk's (max, sum exp(z - max)); and,
//            for top-k, the histogram of the keys' top 11 bits
//   barrier  every block merges the chunk partials in one fixed tree: max M and sum S, the same
//            bits whatever the batch or G
//   top-k    radix select of the k-th largest key, 11 + 11 + 10 bits, a barrier per digit; a
//            digit whose bin is taken whole ends it early
//   top-p    the same select over fixed-point masses of the tokens at or above the top-k key
//   final    each block's best z + Gumbel among the kept tokens; block 0 of the row picks the
//            best of the blocks (ties: lowest index) and advances the row's step
// Histograms are integers (counts, masses in 2^-40 units): atomics add them in any order to the
// same result, so the kept set is reproducible.
#include "backend/cuda/sampling/sampling.h"

#include <cub/block/block_reduce.cuh>
#include <cub/block/block_scan.cuh>

#include <algorithm>
#include <cstdint>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/device/occupancy.h"
#include "backend/cuda/device/types.cuh"
#include "backend/cuda/runtime.h"
#include "mlxn/core/device_errors.h"
#include "mlxn/core/dispatch.h"
#include "portable/error_state.h"
#include "portable/sampling.h"

namespace mlxn::cuda {

namespace {

constexpr int kThreads = 256;
constexpr int kChunk = 2048;
constexpr int kPerThread = kChunk / kThreads;
constexpr int kBins = 2048;
constexpr int kBinsPerThread = kBins / kThreads;
constexpr int kCachedChunks = 2;  // a block's first chunks stay in registers between phases

struct RowSync {
  unsigned count;
  unsigned generation;
};

struct Histograms {  // one select's three digits, per row
  unsigned count[3][kBins];
  unsigned long long mass[3][kBins];
};

struct Args {
  const void* logits;
  const int64_t* seeds;
  int64_t* steps;
  int32_t* out;
  float temperature, top_p, min_p;
  long long top_k;
  bool greedy;
  int vocab, chunks, blocks_per_row;
  RowSync* sync;           // [batch], zeroed before the launch
  Histograms* top_k_hist;  // [batch], zeroed
  Histograms* top_p_hist;  // [batch], zeroed
  float2* partials;        // [batch][chunks] (max, sum)
  float2* best;            // [batch][blocks_per_row] (score, index as bits)
  DeviceErrorState* flag;
  uint32_t site;
};

__device__ __forceinline__ void row_barrier(RowSync* s, int blocks) {
  __syncthreads();
  if (blocks > 1 && threadIdx.x == 0) {
    volatile unsigned* gen = &s->generation;
    const unsigned g = *gen;
    __threadfence();
    if (atomicAdd(&s->count, 1u) == static_cast<unsigned>(blocks - 1)) {
      s->count = 0;
      __threadfence();
      atomicAdd(&s->generation, 1u);
    } else {
      while (*gen == g) __nanosleep(64);
    }
    __threadfence();
  }
  __syncthreads();
}

__device__ __forceinline__ float2 merge_partial(float2 a, float2 b) {
  const float m = fmaxf(a.x, b.x);
  if (m == -INFINITY) return make_float2(m, 0.0f);
  return make_float2(m, a.y * expf(a.x - m) + b.y * expf(b.x - m));
}

// (score, index): higher score wins, then the lower index.
__device__ __forceinline__ bool better(float s, int i, float bs, int bi) {
  return s > bs || (s == bs && static_cast<unsigned>(i) < static_cast<unsigned>(bi));
}

// The block's best (score, index) by `better`, valid in thread 0; every thread must call it.
__device__ __forceinline__ void block_best(float& best, int& best_i, float2* warp_best) {
  for (int o = 16; o > 0; o >>= 1) {
    const float s = __shfl_down_sync(0xffffffffu, best, o);
    const int i = __shfl_down_sync(0xffffffffu, best_i, o);
    if (i >= 0 && (best_i < 0 || better(s, i, best, best_i))) {
      best = s;
      best_i = i;
    }
  }
  __syncthreads();  // warp_best may still be read by an earlier call
  if ((threadIdx.x & 31) == 0)
    warp_best[threadIdx.x / 32] = make_float2(best, __int_as_float(best_i));
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 1; w < kThreads / 32; ++w) {
      const float s = warp_best[w].x;
      const int i = __float_as_int(warp_best[w].y);
      if (i >= 0 && (best_i < 0 || better(s, i, best, best_i))) {
        best = s;
        best_i = i;
      }
    }
  }
}

// Bins from the top: the one where the running total (of `value`, over non-empty bins) first
// reaches `target`. Returns the bin and the total strictly above it; `value` may be a count or
// a mass.
template <class Scan>
__device__ void find_bin(const unsigned* count, const unsigned long long* mass, bool by_mass,
                         unsigned long long target, typename Scan::TempStorage& tmp, int* bin_out,
                         unsigned long long* above_out, unsigned long long* total_out) {
  // Thread t owns bins kBins-1-8t down to kBins-8-8t.
  unsigned long long v[kBinsPerThread], sum = 0;
#pragma unroll
  for (int k = 0; k < kBinsPerThread; ++k) {
    const int bin = kBins - 1 - (threadIdx.x * kBinsPerThread + k);
    v[k] = by_mass ? mass[bin] : count[bin];
    sum += v[k];
  }
  unsigned long long above, total;
  Scan(tmp).ExclusiveSum(sum, above, total);
  if (threadIdx.x == 0) *total_out = total;
#pragma unroll
  for (int k = 0; k < kBinsPerThread; ++k) {
    const int bin = kBins - 1 - (threadIdx.x * kBinsPerThread + k);
    if (count[bin] != 0 && above < target && target <= above + v[k]) {
      *bin_out = bin;
      *above_out = above;
    }
    above += v[k];
  }
  __syncthreads();
}

template <class T>
__global__ void __launch_bounds__(kThreads) sample_kernel(Args a) {
  using Reduce = cub::BlockReduce<float, kThreads>;
  using Scan = cub::BlockScan<unsigned long long, kThreads>;
  __shared__ union {
    typename Reduce::TempStorage reduce;
    typename Scan::TempStorage scan;
  } tmp;
  __shared__ unsigned hist_count[kBins];
  __shared__ unsigned long long hist_mass[kBins];
  __shared__ float2 merged[kThreads / 32];
  __shared__ float bcast[2];
  __shared__ int sel_bin;
  __shared__ unsigned long long sel_above, sel_total;
  __shared__ float2 warp_best[kThreads / 32];

  const int G = a.blocks_per_row;
  const int row = blockIdx.x / G, part = blockIdx.x % G;
  const T* logits = static_cast<const T*>(a.logits) + static_cast<long long>(row) * a.vocab;
  RowSync* sync = a.sync + row;
  const int my_chunks = (a.chunks - part + G - 1) / G;

  // z of element e of the block's local chunk lc, cached for the first chunks.
  float cache[kCachedChunks][kPerThread];
  const auto element = [&](int lc, int e) {
    return (part + lc * G) * kChunk + e * kThreads + static_cast<int>(threadIdx.x);
  };
  const auto load_z = [&](int lc, int e) {
    const int i = element(lc, e);
    if (i >= a.vocab) return -INFINITY;
    float x = to_float(logits[i]);
    if (isnan(x)) {
      report_device_error(a.flag, DeviceErrorCode::non_finite, a.site,
                          static_cast<long long>(row) * a.vocab + i, 0, x);
      x = -INFINITY;
    }
    return a.greedy ? x : __fdiv_rn(x, a.temperature);
  };
#pragma unroll
  for (int lc = 0; lc < kCachedChunks; ++lc) {
#pragma unroll
    for (int e = 0; e < kPerThread; ++e) cache[lc][e] = lc < my_chunks ? load_z(lc, e) : -INFINITY;
  }
  // f(i, z) for every element of the block's chunks.
  const auto for_each = [&](auto&& f) {
    for (int lc = 0; lc < my_chunks; ++lc) {
#pragma unroll
      for (int e = 0; e < kPerThread; ++e) {
        const int i = element(lc, e);
        if (i >= a.vocab) continue;
        f(i, lc < kCachedChunks ? cache[lc][e] : load_z(lc, e));
      }
    }
  };
  const auto clear_hist = [&] {
    for (int b = threadIdx.x; b < kBins; b += kThreads) {
      hist_count[b] = 0;
      hist_mass[b] = 0;
    }
    __syncthreads();
  };
  const auto flush_hist = [&](Histograms* h, int digit, bool with_mass) {
    __syncthreads();
    for (int b = threadIdx.x; b < kBins; b += kThreads) {
      if (hist_count[b] != 0) {
        atomicAdd(&h->count[digit][b], hist_count[b]);
        if (with_mass) atomicAdd(&h->mass[digit][b], hist_mass[b]);
      }
    }
  };
  constexpr int kShift[3] = {21, 10, 0};  // digits: key bits 31..21, 20..10, 9..0
  const auto digit = [&](unsigned key, int d) {
    return static_cast<int>((key >> kShift[d]) &
                            ((1u << (d == 0 ? 11 : kShift[d - 1] - kShift[d])) - 1u));
  };

  bool use_top_k = !a.greedy && a.top_k > 0 && a.top_k < a.vocab;
  bool use_top_p = !a.greedy && a.top_p < 1.0f;
  float z_max = -INFINITY, z_sum = 1.0f;
  if (!a.greedy) {
    // Phase 0: chunk partials, and the first top-k digit.
    if (use_top_k) clear_hist();
    for (int lc = 0; lc < my_chunks; ++lc) {
      float m = -INFINITY;
#pragma unroll
      for (int e = 0; e < kPerThread; ++e) {
        const float z = lc < kCachedChunks ? cache[lc][e] : load_z(lc, e);
        m = fmaxf(m, z);
        if (use_top_k && element(lc, e) < a.vocab) {
          atomicAdd(&hist_count[portable::order_key(z) >> kShift[0]], 1u);
        }
      }
      m = Reduce(tmp.reduce).Reduce(m, [](float x, float y) { return fmaxf(x, y); });
      if (threadIdx.x == 0) bcast[0] = m;
      __syncthreads();
      m = bcast[0];
      float s = 0.0f;
      if (m != -INFINITY) {
#pragma unroll
        for (int e = 0; e < kPerThread; ++e) {
          const float z = lc < kCachedChunks ? cache[lc][e] : load_z(lc, e);
          s += expf(z - m);
        }
      }
      s = Reduce(tmp.reduce).Sum(s);
      if (threadIdx.x == 0)
        a.partials[static_cast<long long>(row) * a.chunks + part + lc * G] = make_float2(m, s);
      __syncthreads();
    }
    if (use_top_k) flush_hist(a.top_k_hist + row, 0, false);
    row_barrier(sync, G);
    // Every block merges the chunk partials by the same tree: a strided pass, then the warps.
    float2 acc = make_float2(-INFINITY, 0.0f);
    for (int c = threadIdx.x; c < a.chunks; c += kThreads) {
      acc = merge_partial(acc, a.partials[static_cast<long long>(row) * a.chunks + c]);
    }
    for (int o = 16; o > 0; o >>= 1) {
      const float2 other = make_float2(__shfl_down_sync(0xffffffffu, acc.x, o),
                                       __shfl_down_sync(0xffffffffu, acc.y, o));
      acc = merge_partial(acc, other);
    }
    if ((threadIdx.x & 31) == 0) merged[threadIdx.x / 32] = acc;
    __syncthreads();
    acc = merged[0];
    for (int w = 1; w < kThreads / 32; ++w) acc = merge_partial(acc, merged[w]);
    z_max = acc.x;
    z_sum = acc.y;
    __syncthreads();
  }
  if (z_max == -INFINITY && !a.greedy) {
    // No finite logit in the row (every block agrees): report once and write -1.
    if (part == 0 && threadIdx.x == 0) {
      report_device_error(a.flag, DeviceErrorCode::non_finite, a.site,
                          static_cast<long long>(row) * a.vocab, 0, -INFINITY);
      a.out[row] = -1;
      a.steps[row] += 1;
    }
    return;
  }

  // Radix select: the lowest key kept. prefix holds the digits chosen so far.
  unsigned threshold = 0;
  if (use_top_k) {
    unsigned prefix = 0;
    unsigned long long need = static_cast<unsigned long long>(a.top_k);
    for (int d = 0; d < 3; ++d) {
      if (d > 0) {
        clear_hist();
        const int bits_known = 32 - kShift[d - 1];
        for_each([&](int, float z) {
          const unsigned key = portable::order_key(z);
          if ((key >> (32 - bits_known)) == prefix) {
            atomicAdd(&hist_count[digit(key, d)], 1u);
          }
        });
        flush_hist(a.top_k_hist + row, d, false);
        row_barrier(sync, G);
      }
      const Histograms* h = a.top_k_hist + row;
      find_bin<Scan>(h->count[d], nullptr, false, need, tmp.scan, &sel_bin, &sel_above, &sel_total);
      const unsigned bin = static_cast<unsigned>(sel_bin);
      need -= sel_above;
      prefix = d == 0 ? bin : (prefix << (kShift[d - 1] - kShift[d])) | bin;
      threshold = prefix << kShift[d];
      if (need == h->count[d][bin]) break;  // the whole bin is kept
    }
  }
  if (use_top_p) {
    const float inv_sum = 1.0f / z_sum;
    const auto mass_of = [&](float z) {
      return static_cast<unsigned long long>(expf(z - z_max) * inv_sum * portable::kMassScale);
    };
    unsigned prefix = 0;
    unsigned long long need = 0;
    for (int d = 0; d < 3; ++d) {
      clear_hist();
      const int bits_known = d == 0 ? 0 : 32 - kShift[d - 1];
      for_each([&](int, float z) {
        const unsigned key = portable::order_key(z);
        if (key >= threshold && (bits_known == 0 || (key >> (32 - bits_known)) == prefix)) {
          const int b = digit(key, d);
          atomicAdd(&hist_count[b], 1u);
          atomicAdd(&hist_mass[b], mass_of(z));
        }
      });
      flush_hist(a.top_p_hist + row, d, true);
      row_barrier(sync, G);
      const Histograms* h = a.top_p_hist + row;
      if (d == 0) {
        // The total kept by top-k, from this digit's histogram; the target is top_p of it (at
        // least one unit, so the top token is always kept).
        find_bin<Scan>(h->count[0], h->mass[0], true, 0, tmp.scan, &sel_bin, &sel_above,
                       &sel_total);
        need = max(1ull, static_cast<unsigned long long>(static_cast<double>(a.top_p) *
                                                         static_cast<double>(sel_total)));
      }
      find_bin<Scan>(h->count[d], h->mass[d], true, need, tmp.scan, &sel_bin, &sel_above,
                     &sel_total);
      const unsigned bin = static_cast<unsigned>(sel_bin);
      need -= sel_above;
      prefix = d == 0 ? bin : (prefix << (kShift[d - 1] - kShift[d])) | bin;
      threshold = max(threshold, prefix << kShift[d]);
      if (h->count[d][bin] == 1) break;  // a single token at the boundary
    }
  }

  // Final: the best z + Gumbel among the kept tokens of this block.
  const uint64_t seed = a.greedy ? 0 : static_cast<uint64_t>(a.seeds[row]);
  const uint64_t step = a.greedy ? 0 : static_cast<uint64_t>(a.steps[row]);
  float best = -INFINITY;
  int best_i = -1;
  for_each([&](int i, float z) {
    if (z == -INFINITY) return;
    float score = z;
    if (!a.greedy) {
      if (portable::order_key(z) < threshold) return;
      if (a.min_p > 0.0f && expf(z - z_max) < a.min_p) return;
      const float u = portable::sampling_uniform(seed, step, static_cast<uint32_t>(i));
      score = z - logf(-logf(u));
    }
    if (best_i < 0 || better(score, i, best, best_i)) {
      best = score;
      best_i = i;
    }
  });
  block_best(best, best_i, warp_best);
  if (threadIdx.x == 0) {
    a.best[static_cast<long long>(row) * G + part] = make_float2(best, __int_as_float(best_i));
  }
  row_barrier(sync, G);
  if (part != 0) return;
  // Block 0 of the row: the best of the G block results, read in parallel (a thread reading them
  // one after another waits for G dependent L2 round trips).
  best = -INFINITY;
  best_i = -1;
  for (int p = threadIdx.x; p < G; p += kThreads) {
    const float2 c = a.best[static_cast<long long>(row) * G + p];
    const int i = __float_as_int(c.y);
    if (i >= 0 && (best_i < 0 || better(c.x, i, best, best_i))) {
      best = c.x;
      best_i = i;
    }
  }
  block_best(best, best_i, warp_best);
  if (threadIdx.x == 0) {
    if (best_i < 0) {  // greedy over a row without a finite logit
      report_device_error(a.flag, DeviceErrorCode::non_finite, a.site,
                          static_cast<long long>(row) * a.vocab, 0, -INFINITY);
    }
    a.out[row] = best_i;
    if (!a.greedy) a.steps[row] += 1;
  }
}

// One block per row: count each history token (atomically, into a zeroed [vocab] scratch),
// then the first thread to take a token's count (atomicExch to 0) penalises it once.
template <class T>
__global__ void __launch_bounds__(kThreads)
    penalty_kernel(T* logits, const int32_t* history, unsigned* counts, int vocab, int length,
                   PenaltyParams p, DeviceErrorState* flag, uint32_t site) {
  const int row = blockIdx.x;
  const int32_t* h = history + static_cast<long long>(row) * length;
  unsigned* c = counts + static_cast<long long>(row) * vocab;
  for (int j = threadIdx.x; j < length; j += kThreads) {
    const int t = h[j];
    if (t < 0) continue;
    if (t >= vocab) {
      report_device_error(flag, DeviceErrorCode::index_out_of_range, site,
                          static_cast<long long>(row) * length + j, t, 0.0f);
      continue;
    }
    atomicAdd(&c[t], 1u);
  }
  __syncthreads();
  for (int j = threadIdx.x; j < length; j += kThreads) {
    const int t = h[j];
    if (t < 0 || t >= vocab) continue;
    const unsigned n = atomicExch(&c[t], 0u);
    if (n == 0) continue;
    T* at = logits + static_cast<long long>(row) * vocab + t;
    float x = to_float(*at);
    x = x > 0.0f ? __fdiv_rn(x, p.repetition) : __fmul_rn(x, p.repetition);
    x = __fsub_rn(__fsub_rn(x, p.presence), __fmul_rn(p.frequency, static_cast<float>(n)));
    *at = from_float<T>(x);
  }
}

}  // namespace

void sample(const sampling::Job& job, const Stream& stream) {
  auto cuda_stream = static_cast<cudaStream_t>(stream.native_handle());
  dispatch_dtype<DTypeList<DType::f32, DType::bf16, DType::f16>>(
      "sample", job.logits.dtype(), [&](auto tag) {
        using T = device_type_t<decltype(tag)::value>;
        const void* kernel = reinterpret_cast<const void*>(&sample_kernel<T>);
        Args a{};
        a.logits = job.logits.data();
        a.seeds = job.seeds.defined() ? job.seeds.data_as<const int64_t>() : nullptr;
        a.steps = job.steps.defined() ? job.steps.data_as<int64_t>() : nullptr;
        a.out = job.out.data_as<int32_t>();
        a.temperature = job.params.temperature;
        a.top_p = job.params.top_p;
        a.min_p = job.params.min_p;
        a.top_k = job.params.top_k;
        a.greedy = job.greedy;
        a.vocab = static_cast<int>(job.vocab);
        a.chunks = static_cast<int>((job.vocab + kChunk - 1) / kChunk);
        const int resident = resident_blocks_per_sm(kernel, kThreads, 0, stream.device()) *
                             device_properties(stream.device()).multiprocessors;
        const long long batch = job.batch;
        a.blocks_per_row = static_cast<int>(
            std::clamp<long long>(resident / std::max<long long>(batch, 1), 1, a.chunks));
        const bool top_k = !job.greedy && job.params.top_k > 0 && job.params.top_k < job.vocab;
        const bool top_p = !job.greedy && job.params.top_p < 1.0f;
        // Scratch from the stream's pool; the barrier state and histograms start at zero.
        const int64_t hist_bytes = static_cast<int64_t>(sizeof(Histograms));
        const int64_t zeroed = batch * (static_cast<int64_t>(sizeof(RowSync)) +
                                        (top_k ? hist_bytes : 0) + (top_p ? hist_bytes : 0));
        const int64_t rest = batch * (a.chunks + a.blocks_per_row) * 8;
        Buffer scratch = Buffer::empty({zeroed + rest + 64}, DType::u8, stream);
        stream.retain_for_capture(scratch.allocation());
        auto* base = scratch.data_as<uint8_t>();
        a.sync = reinterpret_cast<RowSync*>(base);
        uint8_t* p = base + ((batch * sizeof(RowSync) + 15) / 16) * 16;
        if (top_k) {
          a.top_k_hist = reinterpret_cast<Histograms*>(p);
          p += batch * hist_bytes;
        }
        if (top_p) {
          a.top_p_hist = reinterpret_cast<Histograms*>(p);
          p += batch * hist_bytes;
        }
        MLXN_CUDA_CHECK(cudaMemsetAsync(base, 0, static_cast<size_t>(p - base), cuda_stream));
        a.partials = reinterpret_cast<float2*>(p);
        a.best = a.partials + batch * a.chunks;
        a.flag = device_error_state(stream.device());
        a.site = job.site;
        const long long grid = batch * a.blocks_per_row;
        if (grid > 0x7fffffffLL) throw Error("sample", "batch too large for one launch");
        cudaLaunchConfig_t config{};
        config.gridDim = dim3(static_cast<unsigned>(grid));
        config.blockDim = dim3(kThreads);
        config.stream = cuda_stream;
        // Blocks of a row wait for each other: they must all be resident at once.
        cudaLaunchAttribute cooperative{};
        cooperative.id = cudaLaunchAttributeCooperative;
        cooperative.val.cooperative = 1;
        config.attrs = &cooperative;
        config.numAttrs = a.blocks_per_row > 1 ? 1 : 0;
        MLXN_CUDA_CHECK(cudaLaunchKernelEx(&config, sample_kernel<T>, a));
      });
}

void apply_penalties(const sampling::PenaltyJob& job, const Stream& stream) {
  auto cuda_stream = static_cast<cudaStream_t>(stream.native_handle());
  Buffer counts = Buffer::empty({job.batch, job.vocab}, DType::u32, stream);
  stream.retain_for_capture(counts.allocation());
  MLXN_CUDA_CHECK(
      cudaMemsetAsync(counts.data(), 0, static_cast<size_t>(counts.nbytes()), cuda_stream));
  dispatch_dtype<DTypeList<DType::f32, DType::bf16, DType::f16>>(
      "apply_penalties", job.logits.dtype(), [&](auto tag) {
        using T = device_type_t<decltype(tag)::value>;
        penalty_kernel<T><<<static_cast<unsigned>(job.batch), kThreads, 0, cuda_stream>>>(
            job.logits.data_as<T>(), job.history.data_as<const int32_t>(),
            counts.data_as<unsigned>(), static_cast<int>(job.vocab), static_cast<int>(job.length),
            job.params, device_error_state(stream.device()), job.site);
        MLXN_CUDA_CHECK_LAUNCH();
      });
}

}  // namespace mlxn::cuda
