// Decode attention on the GPU against the CPU reference (f64 over the same cache), within an
// error bound derived per output element from the GPU's roundings; the cache writes themselves
// must match the CPU's bit for bit. Bad lengths and pages must raise mlxn::Error.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>

#include "backend/cpu/kv_cache.h"
#include "support/support.h"
#include "turboquant/reference.h"

using namespace mlxn;

namespace {

struct Case {
  KvType k = KvType::bf16, v = KvType::bf16;
  int dim = 128, kv_heads = 2, group = 4, q_len = 1, page_size = 16;
  std::vector<int> lengths = {17, 1000};
  int window = 0;       // attention window (mask only)
  int ring_window = 0;  // > 0: a sliding-window layer (ring of pages)
  float softcap = 0.0f;
  bool sinks = false;
  DType q_dtype = DType::bf16, out = DType::f32;
  std::string name() const {
    std::string s(kv_type_name(k));
    s += '/';
    s += kv_type_name(v);
    for (auto [label, value] : {std::pair{" D", dim},
                                {" kvh", kv_heads},
                                {" g", group},
                                {" q", q_len},
                                {" window", window},
                                {" ring", ring_window}}) {
      s += label;
      s += std::to_string(value);
    }
    s += " len";
    for (int l : lengths) {
      s += ' ';
      s += std::to_string(l);
    }
    if (softcap > 0) s += " softcap";
    if (sinks) s += " sinks";
    return s;
  }
};

// Unit roundoffs of the GPU path (docs/kv_cache.md, "Numerics"): q and K values enter S = Q K^T
// as f16 (bf16 for bf16 caches), P and V values enter P V as bf16 (TurboQuant and bf16 caches) or
// f16 (f16 and fp8 caches); TurboQuant centroids are rounded to those types.
struct Roundoffs {
  double q, k, p, v;
};
Roundoffs roundoffs(KvType type) {
  const double f16 = std::ldexp(1.0, -11), bf16 = std::ldexp(1.0, -8);
  switch (type) {
    case KvType::bf16:
      return {bf16, 0, bf16, 0};
    case KvType::f16:
    case KvType::fp8:
      return {f16, 0, f16, 0};
    default:
      return {f16, f16, bf16, bf16};
  }
}

struct Prepared {
  test::CpuGpu p;
  std::unique_ptr<KvCache> cpu, gpu;
  KvStep cpu_step, gpu_step;
  Buffer q_cpu, q_gpu, sinks_cpu, sinks_gpu;
  int q_heads = 0;
};

std::vector<float> normals(int64_t n, uint64_t seed, float scale) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> d;
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = scale * d(rng);
  return v;
}

// Both caches get the same steps: a dummy sequence takes the first pages and is freed once the
// real ones hold some, so later pages come back in reverse (out of order); then each sequence
// gets its prefix, and a last step appends its q_len new tokens.
void prepare(const Case& c, Prepared& s) {
  const int batch = static_cast<int>(c.lengths.size());
  s.q_heads = c.kv_heads * c.group;
  KvCacheConfig cfg;
  cfg.kv_heads = c.kv_heads;
  cfg.head_dim = c.dim;
  cfg.page_size = c.page_size;
  int64_t pages = 8;
  for (int l : c.lengths) pages += (l + c.page_size - 1) / c.page_size + 1;
  cfg.num_pages = pages;
  cfg.max_sequences = batch + 1;
  cfg.max_query_tokens = std::max(c.q_len, 1);
  cfg.layers = {{c.k, c.v, c.ring_window}};
  s.cpu = std::make_unique<KvCache>(cfg, s.p.cpu);
  s.gpu = std::make_unique<KvCache>(cfg, s.p.gpu);
  uint64_t seed = 1000;
  auto append = [&](const std::vector<int>& seqs, const std::vector<int>& counts, bool last) {
    const KvStep cs = s.cpu->plan(seqs, counts);
    const KvStep gs = s.gpu->plan(seqs, counts);
    const int64_t tokens = std::accumulate(counts.begin(), counts.end(), int64_t{0});
    if (tokens > 0) {
      const int64_t n = tokens * c.kv_heads * c.dim;
      // Keys with a shared offset and a few large channels, like real ones; plain values.
      std::vector<float> k = normals(n, seed++, 1.0f), v = normals(n, seed++, 1.0f);
      for (int64_t i = 0; i < n; ++i) {
        if (i % c.dim == 3) k[static_cast<size_t>(i)] = 8.0f * k[static_cast<size_t>(i)] + 2.0f;
      }
      const Shape shape{tokens, c.kv_heads, c.dim};
      Buffer kc = Buffer::from_host(std::span<const float>(k), shape, DType::f32, s.p.cpu);
      Buffer vc = Buffer::from_host(std::span<const float>(v), shape, DType::f32, s.p.cpu);
      s.cpu->append(0, kc, vc, cs);
      s.gpu->append(0, s.p.to_gpu(kc), s.p.to_gpu(vc), gs);
    }
    if (last) {
      s.cpu_step = cs;
      s.gpu_step = gs;
    }
  };
  const int dummy = s.cpu->add_sequence();
  ASSERT_EQ(s.gpu->add_sequence(), dummy);
  append({dummy}, {3 * c.page_size}, false);
  std::vector<int> seqs;
  for (int b = 0; b < batch; ++b) {
    seqs.push_back(s.cpu->add_sequence());
    ASSERT_EQ(s.gpu->add_sequence(), seqs.back());
  }
  std::vector<int> first(static_cast<size_t>(batch)), rest(static_cast<size_t>(batch), c.q_len);
  for (int b = 0; b < batch; ++b)
    first[static_cast<size_t>(b)] = std::min(c.lengths[static_cast<size_t>(b)] - c.q_len, 5);
  append(seqs, first, false);
  s.cpu->free_sequence(dummy);
  s.gpu->free_sequence(dummy);
  for (int b = 0; b < batch; ++b)
    first[static_cast<size_t>(b)] =
        c.lengths[static_cast<size_t>(b)] - c.q_len - first[static_cast<size_t>(b)];
  append(seqs, first, false);
  append(seqs, rest, true);
  s.q_cpu = test::random_buffer({batch, c.q_len, s.q_heads, c.dim}, c.q_dtype, 77, s.p.cpu);
  s.q_gpu = s.p.to_gpu(s.q_cpu);
  if (c.sinks) {
    std::vector<float> sk = normals(s.q_heads, 5, 2.0f);
    s.sinks_cpu = Buffer::from_host(std::span<const float>(sk), {s.q_heads}, DType::f32, s.p.cpu);
    s.sinks_gpu = s.p.to_gpu(s.sinks_cpu);
  }
}

// The bound on |gpu - reference| for every output element (module comment of this file and
// docs/kv_cache.md): a logit error of at most ds moves the weights by a factor within e^{+-ds},
// which moves the output by at most (e^{2 ds} - 1) sum p|v - o| / l; the P and V roundings add
// (u_p + u_v) sum p|v| / l. TurboQuant outputs are un-rotated by an orthogonal matrix, so each
// output element is bounded by the 2-norm of the rotated-domain bounds.
std::vector<double> error_bounds(const Case& c, const Prepared& s) {
  const KvLayerStorage& layer = s.cpu->layer(0);
  const Roundoffs u = roundoffs(c.k);
  const bool tq = kv_type_is_tq(c.k);
  const int D = c.dim, P = c.page_size, batch = static_cast<int>(c.lengths.size());
  const std::vector<double> q = test::to_f64(s.q_cpu, s.p.cpu);
  const std::vector<int32_t> table = s.cpu_step.page_table_of(0).to_host<int32_t>(s.p.cpu);
  const int width = static_cast<int>(s.cpu_step.page_table_of(0).dim(1));
  std::vector<double> bounds(q.size());
  std::vector<float> kv(static_cast<size_t>(D)), qf(static_cast<size_t>(D)),
      qr(static_cast<size_t>(D));
  const double scale = 1.0 / std::sqrt(static_cast<double>(D));
  const int window = c.ring_window > 0 ? c.ring_window : c.window;
  for (int b = 0; b < batch; ++b) {
    const int len = c.lengths[static_cast<size_t>(b)];
    for (int i = 0; i < c.q_len; ++i) {
      const int pos = len - c.q_len + i;
      const int first = window > 0 ? std::max(0, pos - window + 1) : 0;
      for (int h = 0; h < s.q_heads; ++h) {
        const int64_t row = (int64_t{b} * c.q_len + i) * s.q_heads + h;
        for (int j = 0; j < D; ++j) qf[j] = static_cast<float>(q[static_cast<size_t>(row * D + j)]);
        if (tq)
          tq::reference::rotate(qf.data(), qr.data(), D);
        else
          qr = qf;
        std::vector<double> logits, vals;
        double ds = 0, m = -INFINITY;
        for (int t = first; t <= pos; ++t) {
          const int64_t n = layer.ring_pages > 0 ? (t / P) % layer.ring_pages : t / P;
          const int64_t slot = int64_t{table[static_cast<size_t>(b * width + n)]} * P + t % P;
          cpu::load_cached_vector(layer.k, slot, h / c.group, kv.data());
          double dot = 0, mag = 0;
          for (int j = 0; j < D; ++j) {
            dot += double{qr[j]} * kv[j];
            mag += std::fabs(double{qr[j]} * kv[j]);
          }
          double sl = dot * scale;
          if (c.softcap > 0) sl = c.softcap * std::tanh(sl / c.softcap);
          // q and k roundings, f32 accumulation over D terms, tanhf's few ulps.
          ds = std::max(ds, (u.q + u.k + std::ldexp(1.0, -16)) * mag * scale +
                                (c.softcap > 0 ? c.softcap * std::ldexp(1.0, -21) : 0.0));
          logits.push_back(sl);
          m = std::max(m, sl);
          cpu::load_cached_vector(layer.v, slot, h / c.group, kv.data());
          vals.insert(vals.end(), kv.begin(), kv.end());
        }
        double l = 0;
        for (double& x : logits) {
          x = std::exp(x - m);
          l += x;
        }
        if (c.sinks) l += std::exp(s.sinks_cpu.data_as<const float>()[h] - m);
        std::vector<double> o(static_cast<size_t>(D), 0.0), A(o), C(o), bnd(o);
        for (size_t t = 0; t < logits.size(); ++t)
          for (int j = 0; j < D; ++j) o[j] += logits[t] * vals[t * D + j] / l;
        for (size_t t = 0; t < logits.size(); ++t)
          for (int j = 0; j < D; ++j) {
            A[j] += logits[t] * std::fabs(vals[t * D + j]) / l;
            C[j] += logits[t] * std::fabs(vals[t * D + j] - o[j]) / l;
          }
        if (c.sinks) {
          const double w = std::exp(s.sinks_cpu.data_as<const float>()[h] - m) / l;
          for (int j = 0; j < D; ++j) C[j] += w * std::fabs(o[j]);
        }
        for (int j = 0; j < D; ++j)
          bnd[j] = (u.p + u.v + std::ldexp(1.0, -16)) * A[j] + std::expm1(2 * ds) * C[j] + 1e-6;
        double norm = 0, onorm = 0;
        for (int j = 0; j < D; ++j) {
          norm += bnd[j] * bnd[j];
          onorm += o[j] * o[j];
        }
        for (int j = 0; j < D; ++j) {
          double e = tq ? std::sqrt(norm) + std::ldexp(1.0, -18) * std::sqrt(onorm) : bnd[j];
          bounds[static_cast<size_t>(row * D + j)] = e;
        }
      }
    }
  }
  return bounds;
}

// Runs both, checks the cache bytes, the bound and determinism; returns the worst error/bound.
double check_case(const Case& c) {
  Prepared s;
  prepare(c, s);
  if (::testing::Test::HasFatalFailure()) return 0;
  const KvLayerStorage& lc = s.cpu->layer(0);
  const KvLayerStorage& lg = s.gpu->layer(0);
  // A ring's last page takes the writes a long append pushes out before they land, in any
  // order: it is never read, so it is left out of the comparison.
  const int64_t pages = lc.k.num_pages() - (lc.ring_pages > 0 ? 1 : 0);
  for (const auto& [g, r] : {std::pair{&lg.k, &lc.k}, std::pair{&lg.v, &lc.v}}) {
    EXPECT_TRUE(
        test::same_bits(g->data.slice(0, 0, pages), r->data.slice(0, 0, pages), s.p.gpu, s.p.cpu))
        << c.name() << ": cache store";
    if (kv_type_is_tq(r->type)) {
      EXPECT_TRUE(test::same_bits(g->scales.slice(0, 0, pages), r->scales.slice(0, 0, pages),
                                  s.p.gpu, s.p.cpu))
          << c.name() << ": cache scales";
    } else if (r->type == KvType::fp8) {
      EXPECT_TRUE(test::same_bits(g->scales, r->scales, s.p.gpu, s.p.cpu)) << c.name();
    }
  }
  const Shape shape = s.q_cpu.shape();
  Buffer out_cpu = Buffer::empty(shape, c.out, s.p.cpu);
  Buffer out_gpu = Buffer::empty(shape, c.out, s.p.gpu);
  Buffer out_gpu2 = Buffer::empty(shape, c.out, s.p.gpu);
  test::poison(out_gpu, s.p.gpu);
  DecodeAttentionParams params;
  params.scale = 1.0f / std::sqrt(static_cast<float>(c.dim));
  params.softcap = c.softcap;
  params.window = c.window;
  DecodeAttentionParams pc = params, pg = params;
  pc.sinks = s.sinks_cpu;
  pg.sinks = s.sinks_gpu;
  s.cpu->attend(0, s.q_cpu, out_cpu, pc, s.cpu_step);
  s.gpu->attend(0, s.q_gpu, out_gpu, pg, s.gpu_step);
  s.gpu->attend(0, s.q_gpu, out_gpu2, pg, s.gpu_step);
  s.p.gpu.synchronize();
  s.p.cpu.synchronize();
  EXPECT_TRUE(test::same_bits(out_gpu2, out_gpu, s.p.gpu, s.p.gpu))
      << c.name() << ": not deterministic";
  const std::vector<double> got = test::to_f64(out_gpu, s.p.gpu);
  const std::vector<double> want = test::to_f64(out_cpu, s.p.cpu);
  std::vector<double> bound = error_bounds(c, s);
  double worst = 0;
  size_t worst_at = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    double b = bound[i];
    if (c.out == DType::bf16) b += std::ldexp(1.0, -8) * std::fabs(want[i]) + 1e-30;
    const double r = std::isfinite(got[i]) ? std::fabs(got[i] - want[i]) / b : INFINITY;
    if (r > worst) {
      worst = r;
      worst_at = i;
    }
  }
  EXPECT_LE(worst, 1.0) << c.name() << ": element " << worst_at << " gpu " << got[worst_at]
                        << " reference " << want[worst_at] << " bound " << bound[worst_at];
  return worst;
}

std::vector<KvType> formats_k() {
  return {KvType::bf16, KvType::f16, KvType::fp8, KvType::tq4, KvType::tq4,
          KvType::tq3,  KvType::tq2, KvType::tq8, KvType::tq5, KvType::tq6};
}
std::vector<KvType> formats_v() {
  return {KvType::bf16, KvType::f16, KvType::fp8, KvType::tq4, KvType::tq3,
          KvType::tq3,  KvType::tq2, KvType::tq8, KvType::tq6, KvType::tq5};
}

}  // namespace

TEST(GpuDecodeAttention, EveryFormatAndHeadDim) {
  MLXN_REQUIRE_CUDA();
  const auto ks = formats_k(), vs = formats_v();
  double worst = 0;
  for (int dim : {64, 128, 256, 512}) {
    for (size_t f = 0; f < ks.size(); ++f) {
      Case c;
      c.k = ks[f];
      c.v = vs[f];
      c.dim = dim;
      c.lengths = {17, 300};
      worst = std::max(worst, check_case(c));
    }
  }
  std::printf("decode attention, every format and head_dim: worst error / bound %.3f\n", worst);
}

TEST(GpuDecodeAttention, GqaRatiosAndQueryTokens) {
  MLXN_REQUIRE_CUDA();
  for (KvType t : {KvType::bf16, KvType::tq4}) {
    for (int group : {1, 4, 8, 16}) {
      for (int q_len : {1, 2, 8}) {
        Case c;
        c.k = c.v = t;
        c.group = group;
        c.q_len = q_len;
        c.lengths = {40, 129};
        c.q_dtype = q_len == 2 ? DType::f32 : DType::bf16;
        check_case(c);
      }
    }
  }
}

TEST(GpuDecodeAttention, LengthsMixedInOneBatch) {
  MLXN_REQUIRE_CUDA();
  for (KvType t : {KvType::bf16, KvType::fp8, KvType::tq4, KvType::tq3}) {
    Case c;
    c.k = c.v = t;
    c.lengths = {1, 17, 1000, 4097};
    c.page_size = t == KvType::fp8 ? 64 : 16;
    c.out = t == KvType::tq4 ? DType::bf16 : DType::f32;
    check_case(c);
  }
}

TEST(GpuDecodeAttention, LongContext) {
  MLXN_REQUIRE_CUDA();
  for (KvType t : {KvType::bf16, KvType::tq4}) {
    Case c;
    c.k = c.v = t;
    c.kv_heads = 1;
    c.lengths = {131072};
    c.page_size = 256;
    const double worst = check_case(c);
    std::printf("decode attention, %s at 131072 tokens: worst error / bound %.3f\n",
                std::string(kv_type_name(t)).c_str(), worst);
  }
}

TEST(GpuDecodeAttention, WindowSoftcapSinksRing) {
  MLXN_REQUIRE_CUDA();
  for (KvType t : {KvType::bf16, KvType::f16, KvType::tq4}) {
    Case c;
    c.k = c.v = t;
    c.lengths = {40, 1000};
    c.window = 33;  // smaller than both lengths... and larger than the first below
    check_case(c);
    c.lengths = {20, 1000};
    c.window = 500;
    check_case(c);
    c.window = 0;
    c.softcap = 5.0f;
    c.q_dtype = DType::f16;
    check_case(c);
    c.softcap = 0.0f;
    c.sinks = true;
    check_case(c);
    c.sinks = false;
    c.ring_window = 100;  // the ring wraps many times over 1000 tokens
    c.q_len = 4;
    c.lengths = {1000, 57};
    check_case(c);
  }
}

TEST(GpuDecodeAttention, BadLengthsAndPagesRaise) {
  MLXN_REQUIRE_CUDA();
  const test::CpuGpu p;
  KvLayerStorage layer;
  layer.k = KvStore::allocate(KvType::tq4, 4, 1, 16, 64, p.gpu);
  layer.v = KvStore::allocate(KvType::tq4, 4, 1, 16, 64, p.gpu);
  layer.page_ids = test::CpuGpu::i32({0, 1, 2, 3}, p.gpu);
  Buffer q = test::random_buffer({1, 1, 2, 64}, DType::bf16, 1, p.gpu);
  Buffer out = Buffer::empty({1, 1, 2, 64}, DType::f32, p.gpu);
  DecodeAttentionParams params;
  params.scale = 0.125f;
  const Buffer table = test::CpuGpu::i32({0, 1}, p.gpu).reshape({1, 2});
  EXPECT_TRUE(test::throws_error(
      [&] {
        decode_attention(q, layer, table, test::CpuGpu::i32({0}, p.gpu), out, params, p.gpu);
        p.gpu.synchronize();
      },
      "[decode_attention]", {"out of range"}));
  EXPECT_TRUE(test::throws_error(
      [&] {
        decode_attention(q, layer, table, test::CpuGpu::i32({33}, p.gpu), out, params, p.gpu);
        p.gpu.synchronize();
      },
      "[decode_attention]", {"out of range"}));
  const Buffer bad_table = test::CpuGpu::i32({0, 7}, p.gpu).reshape({1, 2});
  EXPECT_TRUE(test::throws_error(
      [&] {
        decode_attention(q, layer, bad_table, test::CpuGpu::i32({20}, p.gpu), out, params, p.gpu);
        p.gpu.synchronize();
      },
      "[decode_attention]", {"index 7 out of range"}));
  // The stream is usable afterwards.
  decode_attention(q, layer, table, test::CpuGpu::i32({20}, p.gpu), out, params, p.gpu);
  p.gpu.synchronize();
}
