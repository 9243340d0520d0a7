// Host side of decode attention: picks the kernel instance, the split count and the grid,
// then merges the splits.
#include <algorithm>
#include <bit>
#include <map>
#include <mutex>
#include <tuple>

#include "backend/cuda/attention/decode_launch.h"
#include "backend/cuda/attention/kv_cache.h"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/device/pdl.cuh"
#include "mlxn/core/device.h"
#include "mlxn/core/device_errors.h"

namespace mlxn::cuda {

namespace decode {
Kernel tq_kernel_k2(int v_bits, int dim);
Kernel tq_kernel_k3(int v_bits, int dim);
Kernel tq_kernel_k4(int v_bits, int dim);
Kernel tq_kernel_k5(int v_bits, int dim);
Kernel tq_kernel_k6(int v_bits, int dim);
Kernel tq_kernel_k8(int v_bits, int dim);
}  // namespace decode

namespace decode {
namespace {

// ---- merge of the splits: normalise, sinks, fp8's V scale, un-rotation, output dtype --------
struct MergeArgs {
  const float* part_o;
  const float2* part_ml;
  const float* sinks;    // f32 [q_heads] or null
  const float* v_scale;  // fp8: f32 [kv_heads] or null
  void* out;
  bool out_bf16, unrotate;
  int q_len, q_heads, kv_heads, group, row_blocks, dim, splits;
};

constexpr int kMergeThreads = 256;

// One block per output row. Threads take 4 consecutive dims each and one of several interleaved
// sets of splits (many loads in flight per row), then the sets are summed in shared memory.
__global__ void __launch_bounds__(kMergeThreads) decode_merge_kernel(MergeArgs a) {
  extern __shared__ float sm[];  // weights [splits] | partial sums [sets][dim] | vec [dim]
  __shared__ float red[kMergeThreads / 32];
  __shared__ float scale_s;
  allow_dependents_early();
  wait_for_previous_grid();  // launched overlapping (device/pdl.cuh)
  const int tid = threadIdx.x;
  const int row_id = blockIdx.x;  // (b * q_len + i) * q_heads + h
  const int h = row_id % a.q_heads, i = (row_id / a.q_heads) % a.q_len,
            b = row_id / (a.q_heads * a.q_len);
  const int kvh = h / a.group, row = i * a.group + h % a.group;
  const long long pbase =
      ((((static_cast<long long>(b) * a.kv_heads + kvh) * a.row_blocks + row / kRows) * kRows) +
       row % kRows) *
      a.splits;
  const float log2e = 1.4426950408889634f;
  float* weight = sm;
  const int groups = a.dim / 4, sets = kMergeThreads / groups;
  float* sums = sm + (a.splits + 3) / 4 * 4;  // 16-byte aligned for the float4 stores
  float* vec = sums + sets * a.dim;
  // The largest running max (with the sink), then each split's weight and the denominator.
  float m = -INFINITY;
  for (int s2 = tid; s2 < a.splits; s2 += kMergeThreads) m = fmaxf(m, a.part_ml[pbase + s2].x);
  for (int o = 16; o > 0; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
  if ((tid & 31) == 0) red[tid >> 5] = m;
  __syncthreads();
  m = red[0];
  for (int w = 1; w < kMergeThreads / 32; ++w) m = fmaxf(m, red[w]);
  const float sink = a.sinks ? a.sinks[h] * log2e : -INFINITY;
  m = fmaxf(m, sink);
  const float m_safe = m == -INFINITY ? 0.0f : m;
  float l = 0.0f;
  for (int s2 = tid; s2 < a.splits; s2 += kMergeThreads) {
    const float2 ml = a.part_ml[pbase + s2];
    const float w = exp2f(ml.x - m_safe);
    weight[s2] = w;
    l += w * ml.y;
  }
  for (int o = 16; o > 0; o >>= 1) l += __shfl_xor_sync(0xffffffffu, l, o);
  __syncthreads();
  if ((tid & 31) == 0) red[tid >> 5] = l;
  __syncthreads();
  if (tid == 0) {
    float total = a.sinks ? exp2f(sink - m_safe) : 0.0f;
    for (int w = 0; w < kMergeThreads / 32; ++w) total += red[w];
    float f = total > 0.0f ? 1.0f / total : 0.0f;
    if (a.v_scale) f *= a.v_scale[kvh];
    if (a.unrotate) f *= rsqrtf(static_cast<float>(a.dim));
    scale_s = f;
  }
  // Weighted sum of the partial outputs.
  const int dg = tid % groups, set = tid / groups;
  if (set < sets) {
    float4 acc = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    for (int s2 = set; s2 < a.splits; s2 += sets) {
      const float w = weight[s2];
      const float4 o = reinterpret_cast<const float4*>(a.part_o + (pbase + s2) * a.dim)[dg];
      acc.x += w * o.x;
      acc.y += w * o.y;
      acc.z += w * o.z;
      acc.w += w * o.w;
    }
    reinterpret_cast<float4*>(sums + set * a.dim)[dg] = acc;
  }
  __syncthreads();
  for (int d = tid; d < a.dim; d += kMergeThreads) {
    float v = 0.0f;
    for (int k = 0; k < sets; ++k) v += sums[k * a.dim + d];
    vec[d] = v * scale_s;
  }
  __syncthreads();
  if (a.unrotate) {
    // x = S H y / sqrt(D): the 1/sqrt(D) is already in scale_s.
    for (int log_h = 0; (1 << log_h) < a.dim; ++log_h) {
      const int hh = 1 << log_h;
      for (int k = tid; k < a.dim / 2; k += kMergeThreads) {
        const int j = ((k >> log_h) << (log_h + 1)) + (k & (hh - 1));
        const float x = vec[j], y = vec[j + hh];
        vec[j] = x + y;
        vec[j + hh] = x - y;
      }
      __syncthreads();
    }
  }
  for (int d = tid; d < a.dim; d += kMergeThreads) {
    float v = vec[d];
    if (a.unrotate && tq::sign_is_negative(d)) v = -v;
    const long long at = static_cast<long long>(row_id) * a.dim + d;
    if (a.out_bf16)
      static_cast<__nv_bfloat16*>(a.out)[at] = __float2bfloat16_rn(v);
    else
      static_cast<float*>(a.out)[at] = v;
  }
}

}  // namespace
}  // namespace decode

namespace {

decode::Kernel pick_kernel(const KvLayerStorage& layer, int dim) {
  const KvType k = layer.k.type, v = layer.v.type;
  if (!kv_type_is_tq(k)) return decode::dense_kernel(k, dim);
  const int vb = kv_type_bits(v);
  switch (kv_type_bits(k)) {
    case 2:
      return decode::tq_kernel_k2(vb, dim);
    case 3:
      return decode::tq_kernel_k3(vb, dim);
    case 4:
      return decode::tq_kernel_k4(vb, dim);
    case 5:
      return decode::tq_kernel_k5(vb, dim);
    case 6:
      return decode::tq_kernel_k6(vb, dim);
    default:
      return decode::tq_kernel_k8(vb, dim);
  }
}

// Opts the kernel into its shared memory and asks how many CTAs fit per SM: once per
// (kernel, smem, device), the answer cannot change.
int ctas_per_sm(const decode::Kernel& kernel, int smem, Device device) {
  static std::mutex mutex;
  static std::map<std::tuple<const void*, int, int>, int> known;
  std::lock_guard lock(mutex);
  auto [it, inserted] = known.try_emplace({kernel.function, smem, device.index}, 0);
  if (inserted) {
    MLXN_CUDA_CHECK(
        cudaFuncSetAttribute(kernel.function, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
    MLXN_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&it->second, kernel.function,
                                                                  decode::kThreads, smem));
    if (it->second < 1) {
      throw Error("decode_attention", "kernel does not fit on the device with " +
                                          std::to_string(smem) + " bytes of shared memory");
    }
  }
  return it->second;
}

}  // namespace

void decode_attention(const attention::DecodeJob& job, const Stream& stream) {
  const KvLayerStorage& layer = *job.layer;
  const decode::Kernel kernel = pick_kernel(layer, job.dim);
  const int smem = kernel.smem_bytes;
  const int per_sm = ctas_per_sm(kernel, smem, stream.device());
  const int group = job.q_heads / job.kv_heads;
  const int row_blocks = (group * job.q_len + decode::kRows - 1) / decode::kRows;
  const int tile_keys = kernel.tile_keys;

  // Splits: enough CTAs to fill every SM once, no more than there are tiles of keys, and few
  // enough that the partial outputs (real rows x dim f32 per split) stay under a tenth of the
  // cache bytes each split reads.
  int64_t keys = job.max_length;
  if (job.window > 0) keys = std::min<int64_t>(keys, job.window + job.q_len - 1);
  const int64_t max_tiles = keys / tile_keys + 2;  // +1 for a window not aligned to tiles
  const int64_t base = int64_t{job.batch} * job.kv_heads * row_blocks;
  const int64_t want = int64_t{per_sm} * device_properties(stream.device()).multiprocessors;
  const int64_t rows_per_head = std::min<int64_t>(int64_t{group} * job.q_len, decode::kRows);
  const int64_t kv_bytes =
      keys * (kv_vector_bytes(layer.k.type, job.dim) + kv_vector_bytes(layer.v.type, job.dim));
  const int64_t by_traffic = std::max<int64_t>(1, kv_bytes / (10 * rows_per_head * job.dim * 4));
  const int splits = static_cast<int>(
      std::clamp<int64_t>((want + base - 1) / base, 1, std::min(max_tiles, by_traffic)));
  const int64_t partials = base * decode::kRows * splits;
  Buffer part_o = Buffer::empty({partials, job.dim}, DType::f32, stream);
  Buffer part_ml = Buffer::empty({partials, 2}, DType::f32, stream);
  // A graph captured around this call replays into the same workspace: keep it alive with it.
  stream.retain_for_capture(part_o.allocation());
  stream.retain_for_capture(part_ml.allocation());

  decode::Args a{};
  a.q = job.q->data();
  a.q_type = job.q->dtype() == DType::f32    ? decode::q_f32
             : job.q->dtype() == DType::bf16 ? decode::q_bf16
                                             : decode::q_f16;
  a.k_data = layer.k.data.data_as<const uint8_t>();
  a.v_data = layer.v.data.data_as<const uint8_t>();
  a.k_scales = layer.k.scales.defined() ? layer.k.scales.data() : nullptr;
  a.v_scales = layer.v.scales.defined() ? layer.v.scales.data() : nullptr;
  a.page_table = job.page_table->data_as<const int32_t>();
  a.lengths = job.lengths->data_as<const int32_t>();
  a.part_o = part_o.data_as<float>();
  a.part_ml = reinterpret_cast<float2*>(part_ml.data_as<float>());
  a.batch = job.batch;
  a.q_len = job.q_len;
  a.q_heads = job.q_heads;
  a.kv_heads = job.kv_heads;
  a.group = group;
  a.row_blocks = row_blocks;
  a.dim = job.dim;
  a.log2_page = std::countr_zero(static_cast<unsigned>(layer.k.page_size()));
  a.table_width = job.table_width;
  a.ring_pages = layer.ring_pages;
  a.window = job.window;
  a.splits = splits;
  a.num_pages = layer.k.num_pages();
  a.scale = job.scale;
  a.softcap = job.softcap;
  a.flag = device_error_state(stream.device());
  a.site = job.index_site;
  auto cuda_stream = static_cast<cudaStream_t>(stream.native_handle());
  const dim3 grid(static_cast<unsigned>(splits), static_cast<unsigned>(job.kv_heads * row_blocks),
                  static_cast<unsigned>(job.batch));
  kernel.launch(a, grid, smem, cuda_stream);
  MLXN_CUDA_CHECK_LAUNCH();

  decode::MergeArgs m{};
  m.part_o = a.part_o;
  m.part_ml = a.part_ml;
  m.sinks = job.sinks ? job.sinks->data_as<const float>() : nullptr;
  m.v_scale = layer.v.type == KvType::fp8 ? layer.v.scales.data_as<const float>() : nullptr;
  m.out = job.out->data();
  m.out_bf16 = job.out->dtype() == DType::bf16;
  m.unrotate = kv_type_is_tq(layer.v.type);
  m.q_len = job.q_len;
  m.q_heads = job.q_heads;
  m.kv_heads = job.kv_heads;
  m.group = group;
  m.row_blocks = row_blocks;
  m.dim = job.dim;
  m.splits = splits;
  const int sets = decode::kMergeThreads / (job.dim / 4);
  const size_t merge_smem = sizeof(float) * ((splits + 3) / 4 * 4 + (sets + 1) * job.dim);
  if (merge_smem > 48 * 1024) {
    MLXN_CUDA_CHECK(cudaFuncSetAttribute(decode::decode_merge_kernel,
                                         cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         static_cast<int>(merge_smem)));
  }
  launch_overlapping(decode::decode_merge_kernel,
                     static_cast<unsigned>(job.batch * job.q_len * job.q_heads),
                     decode::kMergeThreads, merge_smem, cuda_stream, m);
  MLXN_CUDA_CHECK_LAUNCH();
}

}  // namespace mlxn::cuda
