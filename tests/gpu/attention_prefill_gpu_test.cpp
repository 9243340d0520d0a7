// Prefill attention on the GPU against the CPU reference (f64), within a bound derived per output
// element from the GPU's roundings; chunked prefill over the paged cache (bf16, fp8, tq4, a
// sliding-window ring) against the CPU's composition of the same ops; bad offsets raise
// mlxn::Error; results are bit-identical run to run. On an H200 the cases with head_dim 64-256 run
// the wgmma kernel; MmaSyncKernelOnEveryHeadDim runs them on the mma.sync kernel as well.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "support/support.h"

using namespace mlxn;

namespace {

struct Case {
  int dim = 128, q_heads = 8, kv_heads = 2;
  std::vector<std::pair<int, int>> seqs;  // (len_q, len_k), set by every case
  bool causal = true;
  int window = 0;
  float softcap = 0.0f;
  bool sinks = false;
  DType dtype = DType::bf16, out = DType::f32;
  std::string name() const {
    std::string s;
    const auto add = [&s](const char* label, int64_t value) {
      s.append(label);
      s.append(std::to_string(value));
    };
    add("D", dim);
    add(" h", q_heads);
    add("/", kv_heads);
    for (auto [lq, lk] : seqs) {
      add(" (", lq);
      add(",", lk);
      s.append(")");
    }
    if (!causal) s.append(" noncausal");
    if (window > 0) add(" window", window);
    if (softcap > 0) s.append(" softcap");
    if (sinks) s.append(" sinks");
    s.append(" ");
    s.append(dtype_name(dtype));
    s.append("->");
    s.append(dtype_name(out));
    return s;
  }
};

// |x| of a bf16 / f16 CPU buffer: the sign bits cleared.
Buffer abs_of(const Buffer& x, const Stream& cpu) {
  Buffer a = Buffer::empty(x.shape(), x.dtype(), cpu);
  copy(x, a, cpu);
  cpu.synchronize();
  auto* bits = a.data_as<uint16_t>();
  for (int64_t i = 0; i < a.numel(); ++i) bits[i] &= 0x7fffu;
  return a;
}

struct Inputs {
  Buffer q, k, v, cu_q, cu_k, sinks;
  int64_t total_q = 0, total_k = 0, max_q = 0;
};

Inputs make_inputs(const Case& c, const Stream& cpu, uint64_t seed) {
  Inputs in;
  std::vector<int32_t> cu_q{0}, cu_k{0};
  for (auto [lq, lk] : c.seqs) {
    cu_q.push_back(cu_q.back() + lq);
    cu_k.push_back(cu_k.back() + lk);
    in.max_q = std::max<int64_t>(in.max_q, lq);
  }
  in.total_q = cu_q.back();
  in.total_k = cu_k.back();
  in.q = test::random_buffer({in.total_q, c.q_heads, c.dim}, c.dtype, seed, cpu);
  in.k = test::random_buffer({in.total_k, c.kv_heads, c.dim}, c.dtype, seed + 1, cpu);
  in.v = test::random_buffer({in.total_k, c.kv_heads, c.dim}, c.dtype, seed + 2, cpu);
  in.cu_q = test::CpuGpu::i32(cu_q, cpu);
  in.cu_k = test::CpuGpu::i32(cu_k, cpu);
  if (c.sinks) in.sinks = test::random_buffer({c.q_heads}, DType::f32, seed + 3, cpu);
  return in;
}

PrefillAttentionParams params_of(const Case& c) {
  PrefillAttentionParams p;
  p.scale = 1.0f / std::sqrt(static_cast<float>(c.dim));
  p.causal = c.causal;
  p.window = c.window;
  p.softcap = c.softcap;
  return p;
}

void check_case(const Case& c) {
  SCOPED_TRACE(c.name());
  const test::CpuGpu d;
  const Inputs in = make_inputs(c, d.cpu, 7 + c.dim);
  PrefillAttentionParams pc = params_of(c);
  pc.sinks = in.sinks;
  // CPU: the reference in f32 (no output rounding), and the same attention over |v|, which is
  // sum_j p_j |v_j| per element: what the GPU's rounding of P scales.
  Buffer ref = Buffer::empty({in.total_q, c.q_heads, c.dim}, DType::f32, d.cpu);
  Buffer ref_abs = Buffer::empty({in.total_q, c.q_heads, c.dim}, DType::f32, d.cpu);
  Buffer lse_cpu = Buffer::empty({c.q_heads, in.total_q}, DType::f32, d.cpu);
  pc.lse = lse_cpu;
  prefill_attention(in.q, in.k, in.v, in.cu_q, in.cu_k, ref, pc, d.cpu);
  pc.lse = Buffer();
  prefill_attention(in.q, in.k, abs_of(in.v, d.cpu), in.cu_q, in.cu_k, ref_abs, pc, d.cpu);

  PrefillAttentionParams pg = params_of(c);
  if (c.sinks) pg.sinks = d.to_gpu(in.sinks);
  pg.max_q_len = in.max_q;
  Buffer out = Buffer::empty({in.total_q, c.q_heads, c.dim}, c.out, d.gpu);
  Buffer lse = Buffer::empty({c.q_heads, in.total_q}, DType::f32, d.gpu);
  test::poison(out, d.gpu);
  test::poison(lse, d.gpu);
  pg.lse = lse;
  const Buffer q = d.to_gpu(in.q), k = d.to_gpu(in.k), v = d.to_gpu(in.v);
  const Buffer cu_q = d.to_gpu(in.cu_q), cu_k = d.to_gpu(in.cu_k);
  prefill_attention(q, k, v, cu_q, cu_k, out, pg, d.gpu);
  d.gpu.synchronize();

  const auto r = test::to_f64(ref, d.cpu), ra = test::to_f64(ref_abs, d.cpu);
  const auto o = test::to_f64(out, d.gpu);
  // P is rounded to the input dtype before P V, and the row sum uses the unrounded values:
  // 2 u_in relative to sum p|v|, plus f32 accumulation and exp2f (far smaller, covered by a third
  // u_in); the output is rounded once.
  const double u_in = test::unit_roundoff(c.dtype), u_out = test::unit_roundoff(c.out);
  int64_t bad = 0;
  for (size_t i = 0; i < r.size() && bad < 5; ++i) {
    const double bound = 3 * u_in * ra[i] + u_out * std::abs(r[i]) + test::smallest_normal(c.out);
    if (!(std::abs(o[i] - r[i]) <= bound)) {
      ADD_FAILURE() << "element " << i << ": gpu " << o[i] << " cpu " << r[i] << " bound " << bound;
      ++bad;
    }
  }
  const auto lc = test::to_f64(lse_cpu, d.cpu), lg = test::to_f64(lse, d.gpu);
  for (size_t i = 0; i < lc.size() && bad < 10; ++i) {
    // Logits in f32 (scale and log2(e) folded: a few ulp of |logit| <= |lse| + its range).
    const bool both_inf = std::isinf(lc[i]) && lc[i] == lg[i];
    if (!both_inf && !(std::abs(lg[i] - lc[i]) <= 1e-5 * (1 + std::abs(lc[i])) + 1e-5)) {
      ADD_FAILURE() << "lse " << i << ": gpu " << lg[i] << " cpu " << lc[i];
      ++bad;
    }
  }
}

TEST(GpuPrefillAttention, HeadDimsAndOddLengths) {
  MLXN_REQUIRE_CUDA();
  for (int dim : {64, 128, 256}) {
    Case c;
    c.dim = dim;
    c.seqs = {{1, 1}, {7, 7}, {129, 129}, {1000, 1000}};
    check_case(c);
  }
  Case c512;
  c512.dim = 512;
  c512.q_heads = 4;
  c512.seqs = {{7, 7}, {129, 129}, {300, 300}};
  check_case(c512);
}

TEST(GpuPrefillAttention, ChunkOffsetsGqaAndDtypes) {
  MLXN_REQUIRE_CUDA();
  for (auto [qh, kvh] : {std::pair{8, 8}, {8, 2}, {8, 1}}) {
    Case c;
    c.q_heads = qh;
    c.kv_heads = kvh;
    c.seqs = {{129, 1000}, {64, 64}, {65, 4097}, {1, 33}};
    check_case(c);
  }
  Case f16;
  f16.dtype = DType::f16;
  f16.out = DType::f16;
  f16.seqs = {{200, 333}};
  check_case(f16);
  Case bf16_out;
  bf16_out.out = DType::bf16;
  bf16_out.dim = 64;
  bf16_out.seqs = {{100, 257}};
  check_case(bf16_out);
}

TEST(GpuPrefillAttention, NonCausalWindowSoftcapSinks) {
  MLXN_REQUIRE_CUDA();
  Case nc;
  nc.causal = false;
  nc.seqs = {{5, 0}, {33, 77}, {130, 20}};
  nc.sinks = true;
  check_case(nc);
  nc.sinks = false;
  check_case(nc);
  for (int window : {1, 37, 64, 5000}) {
    Case w;
    w.window = window;
    w.seqs = {{300, 1000}, {77, 77}};
    check_case(w);
  }
  Case sc;
  sc.softcap = 5.0f;
  sc.sinks = true;
  sc.seqs = {{150, 400}};
  check_case(sc);
  Case d256;
  d256.dim = 256;
  d256.window = 50;
  d256.softcap = 3.0f;
  d256.seqs = {{97, 300}};
  check_case(d256);
}

TEST(GpuPrefillAttention, RunToRunIdentical) {
  MLXN_REQUIRE_CUDA();
  const test::CpuGpu d;
  Case c;
  c.seqs = {{500, 900}};
  const Inputs in = make_inputs(c, d.cpu, 11);
  PrefillAttentionParams p = params_of(c);
  const Buffer q = d.to_gpu(in.q), k = d.to_gpu(in.k), v = d.to_gpu(in.v);
  const Buffer cu_q = d.to_gpu(in.cu_q), cu_k = d.to_gpu(in.cu_k);
  Buffer a = Buffer::empty({in.total_q, c.q_heads, c.dim}, DType::bf16, d.gpu);
  Buffer b = Buffer::empty({in.total_q, c.q_heads, c.dim}, DType::bf16, d.gpu);
  prefill_attention(q, k, v, cu_q, cu_k, a, p, d.gpu);
  prefill_attention(q, k, v, cu_q, cu_k, b, p, d.gpu);
  EXPECT_EQ(test::to_bits(a, d.gpu), test::to_bits(b, d.gpu));
}

// On a GPU where the wgmma kernel takes head_dim 64-256, the mma.sync kernel (other GPUs,
// head_dim 512) stays checked: MLXN_PREFILL_KERNEL=mma_sync selects it; an unknown value raises.
TEST(GpuPrefillAttention, MmaSyncKernelOnEveryHeadDim) {
  MLXN_REQUIRE_CUDA();
  struct KernelChoice {
    explicit KernelChoice(const char* name) { setenv("MLXN_PREFILL_KERNEL", name, 1); }
    ~KernelChoice() { unsetenv("MLXN_PREFILL_KERNEL"); }
  };
  {
    const KernelChoice choice("mma_sync");
    for (int dim : {64, 128, 256}) {
      Case c;
      c.dim = dim;
      c.seqs = {{7, 7}, {129, 1000}, {300, 300}};
      check_case(c);
    }
    Case w;
    w.window = 37;
    w.softcap = 5.0f;
    w.sinks = true;
    w.seqs = {{300, 1000}};
    check_case(w);
  }
  const KernelChoice choice("fastest");
  const test::CpuGpu d;
  Buffer q = test::random_buffer({8, 2, 64}, DType::bf16, 1, d.gpu);
  Buffer out = Buffer::empty({8, 2, 64}, DType::f32, d.gpu);
  PrefillAttentionParams p;
  p.scale = 0.125f;
  const Buffer cu = test::CpuGpu::i32({0, 8}, d.gpu);
  EXPECT_TRUE(test::throws_error([&] { prefill_attention(q, q, q, cu, cu, out, p, d.gpu); },
                                 "[prefill_attention]", {"MLXN_PREFILL_KERNEL", "fastest"}));
}

TEST(GpuPrefillAttention, BadOffsetsRaise) {
  MLXN_REQUIRE_CUDA();
  const test::CpuGpu d;
  Buffer q = test::random_buffer({8, 2, 64}, DType::bf16, 1, d.gpu);
  Buffer k = test::random_buffer({8, 2, 64}, DType::bf16, 2, d.gpu);
  Buffer out = Buffer::empty({8, 2, 64}, DType::f32, d.gpu);
  PrefillAttentionParams p;
  p.scale = 0.125f;
  // Causal with fewer keys than queries.
  EXPECT_TRUE(test::throws_error(
      [&] {
        prefill_attention(q, k, k, test::CpuGpu::i32({0, 8}, d.gpu),
                          test::CpuGpu::i32({0, 4}, d.gpu), out, p, d.gpu);
        d.gpu.synchronize();
      },
      "[prefill_attention]", {"out of range"}));
  // Offsets past the totals.
  EXPECT_TRUE(test::throws_error(
      [&] {
        prefill_attention(q, k, k, test::CpuGpu::i32({0, 8}, d.gpu),
                          test::CpuGpu::i32({0, 9}, d.gpu), out, p, d.gpu);
        d.gpu.synchronize();
      },
      "[prefill_attention]", {"out of range"}));
  // The stream is usable afterwards.
  prefill_attention(q, k, k, test::CpuGpu::i32({0, 8}, d.gpu), test::CpuGpu::i32({0, 8}, d.gpu),
                    out, p, d.gpu);
  d.gpu.synchronize();
}

// Chunked prefill over a cache filled by kv_append: GPU against the CPU's run of the same ops.
// Row-wise bound: the GPU's error is 3 u_in * sum_j p_j |v_j| per element of the (possibly
// rotated) value domain, whose l2 norm per row is at most 3 u_in * sqrt(D) * max |v|, preserved
// by the orthogonal rotation back; plus the output rounding.
void check_cached(KvType type, int window, int64_t prefix, int64_t chunk) {
  std::string label(kv_type_name(type));
  for (auto [name, value] :
       {std::pair{" window ", int64_t{window}}, {" prefix ", prefix}, {" chunk ", chunk}}) {
    label.append(name);
    label.append(std::to_string(value));
  }
  SCOPED_TRACE(label);
  const test::CpuGpu d;
  const int kv_heads = 2, q_heads = 8, dim = 128, page = 16;
  const int64_t pages = (prefix + page - 1) / page + 1;
  const int ring_pages = window > 0 ? static_cast<int>((window + chunk - 1 + page - 1) / page) : 0;
  std::vector<int32_t> table(static_cast<size_t>(window > 0 ? ring_pages : pages));
  std::iota(table.begin(), table.end(), 0);
  std::mt19937 rng(5);
  std::shuffle(table.begin(), table.end(), rng);
  const auto build = [&](const Stream& s) {
    KvLayerStorage l;
    const int64_t store_pages = static_cast<int64_t>(table.size());
    l.k = KvStore::allocate(type, store_pages, kv_heads, page, dim, s);
    l.v = KvStore::allocate(type, store_pages, kv_heads, page, dim, s);
    std::vector<int32_t> ids(static_cast<size_t>(store_pages));
    std::iota(ids.begin(), ids.end(), 0);
    l.page_ids = test::CpuGpu::i32(ids, s);
    l.window = window;
    l.ring_pages = ring_pages;
    return l;
  };
  const KvLayerStorage lc = build(d.cpu), lg = build(d.gpu);
  // The prefix: positions [0, prefix), appended in one go (a ring keeps the last ones).
  const Buffer kp = test::random_buffer({prefix, kv_heads, dim}, DType::bf16, 21, d.cpu);
  const Buffer vp = test::random_buffer({prefix, kv_heads, dim}, DType::bf16, 22, d.cpu);
  const int64_t first = window > 0 ? std::max<int64_t>(0, prefix - ring_pages * page) : 0;
  std::vector<int32_t> slots;
  for (int64_t t = first; t < prefix; ++t) {
    const int64_t n = t / page;
    const int64_t idx = window > 0 ? n % ring_pages : n;
    slots.push_back(table[static_cast<size_t>(idx)] * page + static_cast<int32_t>(t % page));
  }
  const auto kslice = kp.slice(0, first, prefix), vslice = vp.slice(0, first, prefix);
  kv_append(kslice, vslice, test::CpuGpu::i32(slots, d.cpu), lc, d.cpu, {true, true});
  kv_append(d.to_gpu(kslice), d.to_gpu(vslice), test::CpuGpu::i32(slots, d.gpu), lg, d.gpu,
            {true, true});
  const Buffer q = test::random_buffer({chunk, q_heads, dim}, DType::bf16, 23, d.cpu);
  const Buffer kn = test::random_buffer({chunk, kv_heads, dim}, DType::bf16, 24, d.cpu);
  const Buffer vn = test::random_buffer({chunk, kv_heads, dim}, DType::bf16, 25, d.cpu);
  PrefillAttentionParams p;
  p.scale = 1.0f / std::sqrt(static_cast<float>(dim));
  Buffer ref = Buffer::empty({chunk, q_heads, dim}, DType::f32, d.cpu);
  Buffer out = Buffer::empty({chunk, q_heads, dim}, DType::f32, d.gpu);
  prefill_attention_cached(q, kn, vn, lc, test::CpuGpu::i32(table, d.cpu), prefix, ref, p, d.cpu);
  prefill_attention_cached(d.to_gpu(q), d.to_gpu(kn), d.to_gpu(vn), lg,
                           test::CpuGpu::i32(table, d.gpu), prefix, out, p, d.gpu);
  d.gpu.synchronize();
  double vmax = 0;
  for (double x : test::to_f64(vp, d.cpu)) vmax = std::max(vmax, std::abs(x));
  for (double x : test::to_f64(vn, d.cpu)) vmax = std::max(vmax, std::abs(x));
  if (type == KvType::fp8 || kv_type_is_tq(type)) vmax *= 1.5;  // decoded values may exceed
  const auto r = test::to_f64(ref, d.cpu), o = test::to_f64(out, d.gpu);
  const double u = test::unit_roundoff(DType::bf16);
  int bad = 0;
  for (int64_t row = 0; row < chunk * q_heads && bad < 5; ++row) {
    double diff = 0, norm = 0;
    for (int j = 0; j < dim; ++j) {
      const size_t i = static_cast<size_t>(row * dim + j);
      diff += (o[i] - r[i]) * (o[i] - r[i]);
      norm += r[i] * r[i];
    }
    const double bound =
        3 * u * std::sqrt(static_cast<double>(dim)) * vmax + 1e-6 * std::sqrt(norm) + 1e-30;
    if (!(std::sqrt(diff) <= bound)) {
      ADD_FAILURE() << "row " << row << ": |gpu - cpu| " << std::sqrt(diff) << " bound " << bound;
      ++bad;
    }
  }
}

TEST(GpuPrefillAttention, CachedPrefixEveryStoreType) {
  MLXN_REQUIRE_CUDA();
  for (KvType type : {KvType::bf16, KvType::f16, KvType::fp8, KvType::tq4, KvType::tq8}) {
    check_cached(type, 0, 1000, 129);
  }
  check_cached(KvType::bf16, 0, 0, 65);
  check_cached(KvType::bf16, 200, 1000, 64);
  check_cached(KvType::tq4, 200, 1000, 64);
}

}  // namespace
