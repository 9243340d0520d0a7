// TurboQuant encode / dequantize / rotate. Each vector is handled by a group of dim/16 lanes;
// lane g of a group holds coordinates [16g, 16g + 16). That split is also the format's
// reduction order (src/portable/turboquant.h), so the in-register fma chains and the xor
// shuffles below perform exactly the CPU reference's floating-point operations.
#include <bit>
#include <map>
#include <mutex>
#include <utility>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/device/occupancy.h"
#include "backend/cuda/device/types.cuh"
#include "backend/cuda/turboquant/common.cuh"
#include "backend/cuda/turboquant/turboquant.h"
#include "mlxn/core/device_errors.h"
#include "mlxn/core/dispatch.h"
#include "portable/error_state.h"
#include "portable/turboquant.h"
#include "turboquant/codebook.h"

namespace mlxn::cuda {

namespace {

using portable::add_rn;
using portable::div_rn;
using portable::fma_rn;
using portable::mul_rn;
using portable::sqrt_rn;

constexpr int kThreads = 256;
constexpr int kPerLane = tq::kGroup;  // coordinates per lane

// Centroids and boundaries of one bit width, built per block from the shipped magnitudes.
struct BookTables {
  float centroids[256];
  float boundaries[255];
};

__device__ void build_tables(BookTables& t, int bits) {
  const float* m = device_magnitudes(bits);
  const int levels = 1 << bits;
  for (int c = threadIdx.x; c < levels; c += blockDim.x) {
    t.centroids[c] = tq::centroid(m, bits, c);
    if (c + 1 < levels) t.boundaries[c] = tq::boundary(m, bits, c);
  }
}

// Every shuffle names the whole warp: the kernels keep all 32 lanes converged (bad or padding
// vectors are predicated, never branched around), so the compiler emits plain SHFL instead of
// the much costlier code for a run-time lane mask.
constexpr unsigned kWarp = 0xffffffffu;

template <int kLanes>
__device__ float group_sum(float v) {
#pragma unroll
  for (int m = kLanes / 2; m >= 1; m /= 2) v = add_rn(v, __shfl_xor_sync(kWarp, v, m));
  return v;
}

template <int kLanes>
__device__ uint32_t group_max_bits(uint32_t v) {
#pragma unroll
  for (int m = kLanes / 2; m >= 1; m /= 2) v = max(v, __shfl_xor_sync(kWarp, v, m));
  return v;
}

// The reference's fma chain over this lane's 16 coordinates, then the pairwise tree.
template <int kLanes>
__device__ float group_dot(const float (&a)[kPerLane], const float (&b)[kPerLane]) {
  float acc = 0.0f;
#pragma unroll
  for (int e = 0; e < kPerLane; ++e) acc = fma_rn(a[e], b[e], acc);
  return group_sum<kLanes>(acc);
}

// Unnormalised Walsh-Hadamard transform over the group: stages h = 1..8 inside the lane, then
// h = 16 * m across lanes (partner lane g xor m), each butterfly (a, b) -> (a + b, a - b).
template <int kLanes>
__device__ void group_fwht(float (&v)[kPerLane], int g) {
  fwht_in_registers(v);
  // Across lanes the lower partner needs a + b and the upper one a - b = other - own: both are
  // fma(own, +-1, other), exact product and one rounding, so one instruction per element.
#pragma unroll
  for (int m = 1; m < kLanes; m *= 2) {
    const float own_sign = (g & m) != 0 ? -1.0f : 1.0f;
#pragma unroll
    for (int i = 0; i < kPerLane; ++i) {
      const float other = __shfl_xor_sync(kWarp, v[i], m);
      v[i] = fma_rn(v[i], own_sign, other);
    }
  }
}

template <class T>
__device__ void store16(T* dst, const float (&v)[kPerLane]) {
  constexpr int kVec = 16 / sizeof(T);
#pragma unroll
  for (int c = 0; c < kPerLane / kVec; ++c) {
    uint4 raw;
    T* elems = reinterpret_cast<T*>(&raw);
#pragma unroll
    for (int e = 0; e < kVec; ++e) elems[e] = from_float<T>(v[c * kVec + e]);
    reinterpret_cast<uint4*>(dst)[c] = raw;
  }
}

// This lane's 16 codes are bits [16 g b, 16 (g+1) b) of the payload: b 16-bit words.
template <int kBits>
__device__ void store_codes(uint8_t* lane_payload, const int (&codes)[kPerLane]) {
  uint32_t words[kBits / 2 + 1] = {};
#pragma unroll
  for (int e = 0; e < kPerLane; ++e) {
    const int bit = e * kBits;
    words[bit / 32] |= static_cast<uint32_t>(codes[e]) << (bit % 32);
    if (bit % 32 + kBits > 32)
      words[bit / 32 + 1] |= static_cast<uint32_t>(codes[e]) >> (32 - bit % 32);
  }
  if constexpr (kBits % 2 == 0) {  // 16 b bits = b/2 whole 32-bit words, 4-byte aligned
#pragma unroll
    for (int w = 0; w < kBits / 2; ++w) reinterpret_cast<uint32_t*>(lane_payload)[w] = words[w];
  } else {
    auto* halves = reinterpret_cast<uint16_t*>(lane_payload);
#pragma unroll
    for (int w = 0; w < kBits; ++w)
      halves[w] = static_cast<uint16_t>(words[w / 2] >> (16 * (w % 2)));
  }
}

template <int kBits>
__device__ void load_codes(const uint8_t* lane_payload, int (&codes)[kPerLane]) {
  uint32_t words[kBits / 2 + 1] = {};
  if constexpr (kBits % 2 == 0) {
#pragma unroll
    for (int w = 0; w < kBits / 2; ++w)
      words[w] = reinterpret_cast<const uint32_t*>(lane_payload)[w];
  } else {
    const auto* halves = reinterpret_cast<const uint16_t*>(lane_payload);
#pragma unroll
    for (int w = 0; w < kBits; ++w)
      words[w / 2] |= static_cast<uint32_t>(halves[w]) << (16 * (w % 2));
  }
#pragma unroll
  for (int e = 0; e < kPerLane; ++e) {
    const int bit = e * kBits;
    uint32_t c = words[bit / 32] >> (bit % 32);
    if (bit % 32 + kBits > 32) c |= words[bit / 32 + 1] << (32 - bit % 32);
    codes[e] = static_cast<int>(c & ((1u << kBits) - 1u));
  }
}

// Vector count rounded up to whole warps (32 / lanes vectors per warp).
__host__ __device__ inline uint32_t padded_count(uint32_t vectors, int lanes) {
  const uint32_t per_warp = 32u / static_cast<uint32_t>(lanes);
  return (vectors + per_warp - 1) / per_warp * per_warp;
}

// ---------------------------------------------------------------------------------------------
// Encode

struct EncodeTensor {
  const void* x;         // [tokens, kv_heads, dim] TIn, token i at x + i * token_stride
  int64_t token_stride;  // elements
  uint8_t* payload;      // [num_pages, kv_heads, page_size, dim * bits / 8]
  uint16_t* scales;      // [num_pages, kv_heads, page_size] f16
  int bits;
  uint32_t site;
};

struct EncodeParams {
  EncodeTensor tensor[2];
  int tensors;
  const int32_t* positions;   // [tokens]
  const int32_t* page_table;  // [page_table_len]
  int64_t page_table_len;
  int64_t num_pages;
  int64_t tokens;
  int kv_heads;
  int page_size_log2;
  DeviceErrorState* flag;
  uint32_t index_site;
};

// Encodes this lane's 16 coordinates of one vector. Runs on every lane of the warp (the
// shuffles need them all); `store` says whether this group's result is written.
// Encodes this lane's 16 coordinates of one vector whose largest |x| is `max_abs` (finite).
// Runs on every lane of the warp (the shuffles need them all); `store` says whether this
// group's result is written.
template <int kDim, int kBits>
__device__ void encode_vector(const float (&x)[kPerLane], float max_abs, const BookTables& book,
                              int g, bool store, uint8_t* row_payload, uint16_t* row_scale) {
  constexpr int kLanes = kDim / kPerLane;
  constexpr int kPositive = (1 << (kBits - 1)) - 1;  // boundaries above 0 (the middle one is 0)
  const float* positive = book.boundaries + kPositive + 1;
  const bool zero = max_abs == 0.0f;  // zero vector: codes 0, scale 0 (computed values unused)
  const int e2 = zero ? 0 : tq::exponent_of(max_abs);
  const uint32_t signs = tq::sign_bits16(g * kPerLane);
  float z[kPerLane];
#pragma unroll
  for (int e = 0; e < kPerLane; ++e) {
    const float s = tq::scale_pow2(x[e], -e2);
    z[e] = (signs >> e) & 1u ? -s : s;
  }
  group_fwht<kLanes>(z, g);
  const float norm = sqrt_rn(group_dot<kLanes>(z, z));
  const float to_unit = div_rn(tq::sqrt_dim(kDim), norm);
  float chosen[kPerLane];
  int codes[kPerLane];
#pragma unroll
  for (int e = 0; e < kPerLane; ++e) {
    const float u = mul_rn(z[e], to_unit);
    // The reference's "boundaries strictly below u", searched over the positive half only: by
    // symmetry it is n + 1 + #{p < u} for u > 0 and n - #{p <= |u|} otherwise, and p <= a is
    // p < next_up(a).
    const bool positive_u = u > 0.0f;
    // next_up of |u|, not of -u: for u = +0, -u is -0, whose bits + 1 are a negative number.
    const float a = positive_u ? u : __uint_as_float(__float_as_uint(fabsf(u)) + 1u);
    int below = 0;
#pragma unroll
    for (int step = 1 << (kBits - 2); step >= 1; step /= 2) {
      if (positive[below + step - 1] < a) below += step;
    }
    const int c = positive_u ? kPositive + 1 + below : kPositive - below;
    codes[e] = zero ? 0 : c;
    chosen[e] = book.centroids[c];
  }
  const float dot = group_dot<kLanes>(z, chosen);
  const float cc = group_dot<kLanes>(chosen, chosen);
  const float alpha = tq::scale_pow2(mul_rn(div_rn(dot, cc), tq::inv_sqrt_dim(kDim)), e2);
  if (!store) return;
  store_codes<kBits>(row_payload + 2 * g * kBits, codes);
  if (g == 0) {
    *row_scale = zero ? 0 : __half_as_ushort(__float2half_rn(tq::clamp_to_half_range(alpha)));
  }
}

// One vector per group of lanes. `vec` indexes a padded space in which every warp's groups belong
// to one tensor (K or V), so the bit-width switch below never splits a warp. kBits is the bit
// width when every tensor of the launch has the same one (one code path, a small kernel), or 0.
template <int kDim, class TIn, int kBits>
__device__ void encode_one(const EncodeParams& p, const BookTables (&books)[2], uint32_t vec,
                           int g) {
  constexpr int kLanes = kDim / kPerLane;
  const uint32_t per_tensor = static_cast<uint32_t>(p.tokens) * p.kv_heads;
  const uint32_t padded = padded_count(per_tensor, kLanes);
  const int k = static_cast<int>(vec / padded);
  const uint32_t in_tensor = vec - static_cast<uint32_t>(k) * padded;
  const EncodeTensor& t = p.tensor[k];
  bool ok = in_tensor < per_tensor;
  const uint32_t token = ok ? in_tensor / p.kv_heads : 0;
  const int head = static_cast<int>(in_tensor - token * p.kv_heads);

  float x[kPerLane] = {};
  if (ok)
    load_floats(static_cast<const TIn*>(t.x) + token * t.token_stride + head * kDim + g * kPerLane,
                x);
  int64_t slot = 0;
  if (ok) {
    const int64_t position = p.positions[token];
    const int64_t page_index = position >> p.page_size_log2;
    const bool position_ok = position >= 0 && page_index < p.page_table_len;
    const int64_t page = position_ok ? p.page_table[page_index] : 0;
    if (!position_ok) {
      if (g == 0)
        report_device_error(p.flag, DeviceErrorCode::index_out_of_range, p.index_site, token,
                            position, 0);
    } else if (page < 0 || page >= p.num_pages) {
      if (g == 0)
        report_device_error(p.flag, DeviceErrorCode::index_out_of_range, p.index_site, page_index,
                            page, 0);
    }
    ok = position_ok && page >= 0 && page < p.num_pages;
    slot = (page * p.kv_heads + head) * (int64_t{1} << p.page_size_log2) +
           (position & ((int64_t{1} << p.page_size_log2) - 1));
  }
  // |x| as bits orders like |x|, and NaN/Inf sit above every finite value: one integer max
  // gives both the largest magnitude and whether the vector is finite.
  uint32_t max_bits = 0;
#pragma unroll
  for (int e = 0; e < kPerLane; ++e) max_bits = max(max_bits, __float_as_uint(x[e]) & 0x7fffffffu);
  if (max_bits >= 0x7f800000u && ok) {
    float bad = 0.0f;
#pragma unroll
    for (int e = kPerLane - 1; e >= 0; --e) bad = isfinite(x[e]) ? bad : x[e];
    report_device_error(p.flag, DeviceErrorCode::non_finite, t.site, in_tensor, 0, bad);
  }
  max_bits = group_max_bits<kLanes>(max_bits);
  float max_abs = __uint_as_float(max_bits);
  if (max_bits >= 0x7f800000u) {
#pragma unroll
    for (int e = 0; e < kPerLane; ++e) x[e] = 0.0f;  // stored as the zero vector
    max_abs = 0.0f;
  }
  uint8_t* row_payload = t.payload + slot * (int64_t{kDim} * t.bits / 8);
  uint16_t* row_scale = t.scales + slot;
  if constexpr (kBits != 0) {
    encode_vector<kDim, kBits>(x, max_abs, books[k], g, ok, row_payload, row_scale);
  } else {
    dispatch_on_device(tq::Bits{}, t.bits, [&](auto bits) {
      encode_vector<kDim, decltype(bits)::value>(x, max_abs, books[k], g, ok, row_payload,
                                                 row_scale);
    });
  }
}

// A grid sized to the machine, each group of lanes walking vectors with a grid stride: the
// codebook tables are built once per block, not once per handful of vectors.
template <int kDim, class TIn, int kBits>
__global__ void __launch_bounds__(kThreads) tq_encode_kernel(const EncodeParams p) {
  constexpr int kLanes = kDim / kPerLane;
  constexpr uint32_t kVectorsPerBlock = kThreads / kLanes;
  __shared__ BookTables books[2];
  for (int k = 0; k < p.tensors; ++k) build_tables(books[k], p.tensor[k].bits);
  __syncthreads();
  const uint32_t total =
      padded_count(static_cast<uint32_t>(p.tokens) * p.kv_heads, kLanes) * p.tensors;
  const int g = static_cast<int>(threadIdx.x % kLanes);
  // The loop bound is the same for every lane of a warp (`total` is a whole number of warps).
  for (uint32_t vec = blockIdx.x * kVectorsPerBlock + threadIdx.x / kLanes; vec < total;
       vec += gridDim.x * kVectorsPerBlock) {
    encode_one<kDim, TIn, kBits>(p, books, vec, g);
  }
}

// ---------------------------------------------------------------------------------------------
// Dequantize

struct DequantParams {
  const uint8_t* payload;     // [num_pages, kv_heads, page_size, dim * bits / 8]
  const uint16_t* scales;     // [num_pages, kv_heads, page_size] f16
  const int32_t* page_table;  // [>= pages covering start + count]
  void* out;                  // [count, kv_heads, dim] TOut
  int64_t start;
  int64_t count;
  int64_t num_pages;
  int kv_heads;
  int page_size_log2;
  int ring_pages;  // > 0: logical page n is page_table[n % ring_pages]
  int bits;
  bool original;
  DeviceErrorState* flag;
  uint32_t index_site;
};

template <int kDim, int kBits>
__device__ void dequantize_vector(const DequantParams& p, const float* centroids, int64_t slot,
                                  bool valid, int g, float (&v)[kPerLane]) {
  constexpr int kLanes = kDim / kPerLane;
  if (valid) {
    int codes[kPerLane];
    load_codes<kBits>(p.payload + slot * (kDim * kBits / 8) + 2 * g * kBits, codes);
    const float alpha = __half2float(__ushort_as_half(p.scales[slot]));
#pragma unroll
    for (int e = 0; e < kPerLane; ++e) v[e] = mul_rn(alpha, centroids[codes[e]]);
  }
  if (p.original) {
    group_fwht<kLanes>(v, g);
    const float inv = tq::inv_sqrt_dim(kDim);
    const uint32_t signs = tq::sign_bits16(g * kPerLane);
#pragma unroll
    for (int e = 0; e < kPerLane; ++e) {
      const float s = mul_rn(v[e], inv);
      v[e] = (signs >> e) & 1u ? -s : s;
    }
  }
}

// Writes the warp's 32 x 16 values (lane l holds elements [16 l, 16 l + 16) of the warp's
// contiguous output rows) with full 16-byte coalesced stores: storing each lane's 32 or 64
// bytes directly leaves every store instruction half-coalesced, which held the rotated
// dequantize near 61 % of copy. Chunk c of the warp sits at c ^ ((c >> 3) & 7) in shared memory
// so that both the per-lane writes and the per-chunk reads are free of bank conflicts.
template <int kDim, class TOut>
__device__ void store_warp_rows(uint4* stage, const float (&v)[kPerLane], TOut* warp_out,
                                uint32_t valid_elements, int lane) {
  constexpr int kLaneChunks = kPerLane * static_cast<int>(sizeof(TOut)) / 16;
  constexpr int kElemsPerChunk = 16 / static_cast<int>(sizeof(TOut));
  const auto swizzle = [](int c) { return c ^ ((c >> 3) & 7); };
#pragma unroll
  for (int i = 0; i < kLaneChunks; ++i) {
    uint4 raw;
    TOut* elems = reinterpret_cast<TOut*>(&raw);
#pragma unroll
    for (int e = 0; e < kElemsPerChunk; ++e) elems[e] = from_float<TOut>(v[i * kElemsPerChunk + e]);
    stage[swizzle(lane * kLaneChunks + i)] = raw;
  }
  __syncwarp();
#pragma unroll
  for (int i = 0; i < kLaneChunks; ++i) {
    const int c = lane + 32 * i;
    if (static_cast<uint32_t>(c * kElemsPerChunk) < valid_elements)
      reinterpret_cast<uint4*>(warp_out)[c] = stage[swizzle(c)];
  }
  __syncwarp();  // the stage is reused by the next iteration
}

template <int kDim, class TOut, int kBits>
__global__ void __launch_bounds__(kThreads) tq_dequantize_kernel(const DequantParams p) {
  constexpr int kLanes = kDim / kPerLane;
  constexpr int kVectorsPerBlock = kThreads / kLanes;
  __shared__ float centroids[256];
  {
    const float* m = device_magnitudes(p.bits);
    for (int c = threadIdx.x; c < (1 << p.bits); c += blockDim.x)
      centroids[c] = tq::centroid(m, p.bits, c);
  }
  constexpr int kWarpChunks = 32 * kPerLane * static_cast<int>(sizeof(TOut)) / 16;
  __shared__ uint4 stages[kThreads / 32][kWarpChunks];
  __syncthreads();
  const uint32_t count = static_cast<uint32_t>(p.count * p.kv_heads);
  const uint32_t total = padded_count(count, kLanes);  // whole warps: a warp-uniform loop
  const int g = static_cast<int>(threadIdx.x % kLanes);
  const int lane = static_cast<int>(threadIdx.x % 32);
  for (uint32_t vec = blockIdx.x * kVectorsPerBlock + threadIdx.x / kLanes; vec < total;
       vec += gridDim.x * kVectorsPerBlock) {
    const bool active = vec < count;
    const uint32_t i = active ? vec / p.kv_heads : 0;
    const int head = static_cast<int>(active ? vec - i * p.kv_heads : 0);
    const int64_t position = p.start + i;
    const int64_t logical_page = position >> p.page_size_log2;
    const int64_t page_index = p.ring_pages > 0 ? logical_page % p.ring_pages : logical_page;
    const int64_t page = active ? p.page_table[page_index] : 0;
    const bool valid = active && page >= 0 && page < p.num_pages;
    if (active && !valid && g == 0) {
      report_device_error(p.flag, DeviceErrorCode::index_out_of_range, p.index_site, page_index,
                          page, 0);
    }
    const int64_t slot = (page * p.kv_heads + head) * (int64_t{1} << p.page_size_log2) +
                         (position & ((int64_t{1} << p.page_size_log2) - 1));
    float v[kPerLane] = {};
    dequantize_vector<kDim, kBits>(p, centroids, slot, valid, g, v);
    const uint32_t warp_first = vec - static_cast<uint32_t>(lane / kLanes);
    const uint32_t valid_elements =
        (count > warp_first ? min(count - warp_first, 32u / kLanes) : 0u) * kDim;
    store_warp_rows<kDim>(stages[threadIdx.x / 32], v,
                          static_cast<TOut*>(p.out) + static_cast<int64_t>(warp_first) * kDim,
                          valid_elements, lane);
  }
}

// ---------------------------------------------------------------------------------------------
// Rotate

struct RotateParams {
  const void* x;  // [vectors, dim] TIn
  void* out;      // [vectors, dim] TOut
  int64_t vectors;
  bool inverse;
};

template <int kDim, class TIn, class TOut>
__global__ void __launch_bounds__(kThreads) tq_rotate_kernel(const RotateParams p) {
  constexpr int kLanes = kDim / kPerLane;
  constexpr int kVectorsPerBlock = kThreads / kLanes;
  const int64_t vec = static_cast<int64_t>(blockIdx.x) * kVectorsPerBlock + threadIdx.x / kLanes;
  // Padding groups of the last warp compute on zeros and store nothing (the shuffles need them).
  const bool active = vec < p.vectors;
  const int g = static_cast<int>(threadIdx.x % kLanes);
  float v[kPerLane] = {};
  if (active) load_floats(static_cast<const TIn*>(p.x) + vec * kDim + g * kPerLane, v);
  const float inv = tq::inv_sqrt_dim(kDim);
  const uint32_t signs = tq::sign_bits16(g * kPerLane);
  if (!p.inverse) {
#pragma unroll
    for (int e = 0; e < kPerLane; ++e) v[e] = (signs >> e) & 1u ? -v[e] : v[e];
  }
  group_fwht<kLanes>(v, g);
#pragma unroll
  for (int e = 0; e < kPerLane; ++e) {
    v[e] = mul_rn(v[e], inv);
    if (p.inverse && ((signs >> e) & 1u)) v[e] = -v[e];
  }
  if (active) store16(static_cast<TOut*>(p.out) + vec * kDim + g * kPerLane, v);
}

unsigned blocks_for(int64_t vectors, int dim) {
  const int64_t per_block = kThreads / (dim / kPerLane);
  return static_cast<unsigned>((vectors + per_block - 1) / per_block);
}

// Grid-stride kernels: as many blocks as can be resident at once, no more. A fixed 8 blocks per
// SM ran as 6 resident + 2 in a second, mostly empty wave once a kernel needed 40 registers per
// thread, leaving much of the machine idle for the last part of every call.
unsigned persistent_blocks(const void* kernel, int64_t vectors, int dim, Device device) {
  return std::min<unsigned>(
      blocks_for(vectors, dim),
      static_cast<unsigned>(resident_blocks_per_sm(kernel, kThreads, 0, device) *
                            device_properties(device).multiprocessors));
}

void require_32bit_count(int64_t vectors, const char* op) {
  if (vectors >= (int64_t{1} << 31)) {
    throw Error(op, std::to_string(vectors) + " vectors in one call; at most 2^31 - 1");
  }
}

}  // namespace

void tq_encode(const tq::EncodeJob* jobs, int job_count, const Buffer& positions,
               const Buffer& page_table, uint32_t index_site, const Stream& stream) {
  const TqCache& first = *jobs[0].cache;
  // One thread per vector pays off once every warp slot of the machine gets a 32-vector tile;
  // smaller batches (a decode step) finish sooner spread over D/16 lanes per vector.
  const int64_t tokens = jobs[0].x->dim(0);
  const int64_t row_batch = int64_t{32} * 8 * device_properties(stream.device()).multiprocessors;
  const int64_t vectors = tokens * first.kv_heads() * job_count;
  if (vectors == 0) return;
  require_32bit_count(vectors, "tq_encode");
  const bool one_width = job_count == 1 || jobs[0].cache->bits == jobs[1].cache->bits;
  const tq::Encoder choice = tq::forced_encoder();
  const bool rows_supported = first.dim == 64 || first.dim == 128;
  if (rows_supported &&
      (choice == tq::Encoder::rows || (choice == tq::Encoder::automatic && vectors >= row_batch))) {
    if (one_width) {
      tq_encode_rows(jobs, job_count, positions, page_table, index_site, stream);
    } else {
      for (int k = 0; k < job_count; ++k)
        tq_encode_rows(jobs + k, 1, positions, page_table, index_site, stream);
    }
    return;
  }
  EncodeParams p{};
  p.tensors = job_count;
  for (int k = 0; k < job_count; ++k) {
    p.tensor[k] = {jobs[k].x->data(),
                   jobs[k].x->strides()[0],
                   jobs[k].cache->payload.data_as<uint8_t>(),
                   jobs[k].cache->scales.data_as<uint16_t>(),
                   jobs[k].cache->bits,
                   jobs[k].data_site};
  }
  p.positions = positions.data_as<const int32_t>();
  p.page_table = page_table.data_as<const int32_t>();
  p.page_table_len = page_table.numel();
  p.num_pages = first.num_pages();
  p.tokens = tokens;
  p.kv_heads = first.kv_heads();
  p.page_size_log2 = std::countr_zero(static_cast<unsigned>(first.page_size()));
  p.flag = device_error_state(stream.device());
  p.index_site = index_site;
  dispatch_int<tq::Dims>("tq_encode", "head_dim", first.dim, [&](auto dim) {
    dispatch_dtype<tq::InputDTypes>("tq_encode", jobs[0].x->dtype(), [&](auto tag) {
      using T = device_type_t<decltype(tag)::value>;
      constexpr int kDim = decltype(dim)::value;
      auto cuda_stream = static_cast<cudaStream_t>(stream.native_handle());
      const auto launch = [&](auto kernel) {
        kernel<<<persistent_blocks(reinterpret_cast<const void*>(kernel), vectors, kDim,
                                   stream.device()),
                 kThreads, 0, cuda_stream>>>(p);
      };
      if (one_width) {
        dispatch_int<tq::Bits>("tq_encode", "bits", first.bits, [&](auto bits) {
          launch(tq_encode_kernel<kDim, T, decltype(bits)::value>);
        });
      } else {
        launch(tq_encode_kernel<kDim, T, 0>);
      }
      MLXN_CUDA_CHECK_LAUNCH();
    });
  });
}

void tq_dequantize(const TqCache& cache, const Buffer& page_table, int64_t start, const Buffer& out,
                   TqDomain domain, uint32_t index_site, const Stream& stream, int ring_pages) {
  DequantParams p{};
  p.ring_pages = ring_pages;
  p.payload = cache.payload.data_as<const uint8_t>();
  p.scales = cache.scales.data_as<const uint16_t>();
  p.page_table = page_table.data_as<const int32_t>();
  p.out = out.data();
  p.start = start;
  p.count = out.dim(0);
  p.num_pages = cache.num_pages();
  p.kv_heads = cache.kv_heads();
  p.page_size_log2 = std::countr_zero(static_cast<unsigned>(cache.page_size()));
  p.bits = cache.bits;
  p.original = domain == TqDomain::original;
  p.flag = device_error_state(stream.device());
  p.index_site = index_site;
  const int64_t vectors = p.count * p.kv_heads;
  if (vectors == 0) return;
  require_32bit_count(vectors, "tq_dequantize");
  using Outputs = DTypeList<DType::f32, DType::bf16>;
  dispatch_int<tq::Dims>("tq_dequantize", "head_dim", cache.dim, [&](auto dim) {
    dispatch_dtype<Outputs>("tq_dequantize", out.dtype(), [&](auto tag) {
      dispatch_int<tq::Bits>("tq_dequantize", "bits", cache.bits, [&](auto bits) {
        using T = device_type_t<decltype(tag)::value>;
        auto kernel = tq_dequantize_kernel<decltype(dim)::value, T, decltype(bits)::value>;
        kernel<<<persistent_blocks(reinterpret_cast<const void*>(kernel), vectors, dim,
                                   stream.device()),
                 kThreads, 0, static_cast<cudaStream_t>(stream.native_handle())>>>(p);
        MLXN_CUDA_CHECK_LAUNCH();
      });
    });
  });
}

void tq_rotate(const Buffer& x, const Buffer& out, bool inverse, const Stream& stream) {
  const int dim = static_cast<int>(x.dim(-1));
  RotateParams p{x.data(), out.data(), x.numel() / dim, inverse};
  if (p.vectors == 0) return;
  dispatch_int<tq::Dims>("tq_rotate", "head_dim", dim, [&](auto d) {
    dispatch_dtype<tq::InputDTypes>("tq_rotate", x.dtype(), [&](auto in_tag) {
      using TIn = device_type_t<decltype(in_tag)::value>;
      dispatch_dtype<tq::InputDTypes>("tq_rotate", out.dtype(), [&](auto out_tag) {
        using TOut = device_type_t<decltype(out_tag)::value>;
        tq_rotate_kernel<decltype(d)::value, TIn, TOut>
            <<<blocks_for(p.vectors, d), kThreads, 0,
               static_cast<cudaStream_t>(stream.native_handle())>>>(p);
        MLXN_CUDA_CHECK_LAUNCH();
      });
    });
  });
}

}  // namespace mlxn::cuda
