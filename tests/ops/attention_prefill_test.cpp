// Prefill attention, kv_gather and the cached prefill on the CPU backend: the reference against a
// naive double-precision attention written here (an explicit masked score matrix, normalised row
// by row), and the properties that tie the entry points together: chunking, variable-length
// batches, GQA, windows, sinks, fully masked rows, bad offsets and bad arguments.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <utility>
#include <vector>

#include "backend/cpu/kv_cache.h"
#include "mlxn/core/float_types.h"
#include "mlxn/ops/attention.h"
#include "mlxn/ops/kv_cache.h"
#include "mlxn/ops/memory.h"
#include "mlxn/ops/turboquant.h"
#include "portable/turboquant.h"
#include "support/support.h"

using namespace mlxn;
using mlxn::test::error_of;
using mlxn::test::throws_error;

namespace {

const Stream& S() { return test::cpu_stream(); }

constexpr double kInf = std::numeric_limits<double>::infinity();

Buffer i32(const std::vector<int32_t>& values, Shape shape = {}) {
  if (shape.empty()) shape = {static_cast<int64_t>(values.size())};
  return Buffer::from_host(std::span<const int32_t>(values), shape, DType::i32, S());
}

Buffer f32(const std::vector<float>& values) {
  return Buffer::from_host(std::span<const float>(values), {static_cast<int64_t>(values.size())},
                           DType::f32, S());
}

// A buffer of `dtype` holding `values`, which that dtype must represent exactly.
Buffer from_f64(const std::vector<double>& values, const Shape& shape, DType dtype) {
  std::vector<float> f(values.size());
  for (size_t i = 0; i < values.size(); ++i) f[i] = static_cast<float>(values[i]);
  Buffer b32 = Buffer::from_host(std::span<const float>(f), shape, DType::f32, S());
  if (dtype == DType::f32) return b32;
  Buffer b = Buffer::empty(shape, dtype, S());
  cast(b32, b, S());
  const auto back = test::to_f64(b, S());
  EXPECT_EQ(back, values) << "values not exact in " << dtype_name(dtype);
  return b;
}

// a rows, then b rows: [a.dim(0) + b.dim(0), ...].
Buffer concat_rows(const Buffer& a, const Buffer& b) {
  Shape shape = a.shape();
  shape[0] += b.dim(0);
  Buffer out = Buffer::empty(shape, a.dtype(), S());
  if (a.dim(0) > 0) copy(a, out.slice(0, 0, a.dim(0)), S());
  if (b.dim(0) > 0) copy(b, out.slice(0, a.dim(0), shape[0]), S());
  return out;
}

double max_abs(const std::vector<double>& x) {
  double m = 0;
  for (double v : x) m = std::max(m, std::fabs(v));
  return m;
}

std::vector<int32_t> offsets(const std::vector<int>& lengths) {
  std::vector<int32_t> cu = {0};
  for (int n : lengths) cu.push_back(cu.back() + n);
  return cu;
}

// ---- the naive computation ----------------------------------------------------------------------

struct Spec {
  Spec(double scale_ = 0.125, bool causal_ = true, double softcap_ = 0, int window_ = 0,
       std::vector<double> sinks_ = {})
      : scale(scale_),
        causal(causal_),
        softcap(softcap_),
        window(window_),
        sinks(std::move(sinks_)) {}
  double scale;
  bool causal;
  double softcap;
  int window;
  std::vector<double> sinks;  // per q head; empty: none
};

// A variable-length batch as f64 host arrays: q [total_q, QH, D], k and v [total_k, KH, D].
struct Dense {
  std::vector<double> q, k, v;
  std::vector<int32_t> cu_q, cu_k;
  int q_heads = 0, kv_heads = 0, dim = 0;
};

struct Result {
  std::vector<double> out;  // [total_q, QH, D]
  std::vector<double> lse;  // [QH, total_q]
};

// Textbook attention in double. For each sequence and head: the score matrix S[i][j] =
// scale * q_i . k_j (softcapped), -inf where key j is masked for query i (query i sits at
// position len_k - len_q + i), then each row normalised together with the sink logit. Scale,
// softcap and sinks are taken as the f32 values the library receives.
Result naive_prefill(const Dense& d, const Spec& spec) {
  Spec s = spec;
  s.scale = static_cast<float>(s.scale);
  s.softcap = static_cast<float>(s.softcap);
  for (double& x : s.sinks) x = static_cast<float>(x);
  const int QH = d.q_heads, KH = d.kv_heads, D = d.dim, group = QH / KH;
  const int64_t total_q = static_cast<int64_t>(d.q.size()) / (QH * D);
  Result r{std::vector<double>(d.q.size(), 0.0),
           std::vector<double>(static_cast<size_t>(QH * total_q), -kInf)};
  for (size_t b = 0; b + 1 < d.cu_q.size(); ++b) {
    const int64_t q0 = d.cu_q[b], len_q = d.cu_q[b + 1] - q0;
    const int64_t k0 = d.cu_k[b], len_k = d.cu_k[b + 1] - k0;
    for (int h = 0; h < QH; ++h) {
      const int kvh = h / group;
      std::vector<double> score(static_cast<size_t>(len_q * len_k), -kInf);
      for (int64_t i = 0; i < len_q; ++i) {
        const int64_t pos = len_k - len_q + i;
        for (int64_t j = 0; j < len_k; ++j) {
          const bool visible = (!s.causal || j <= pos) && (s.window == 0 || pos - j < s.window);
          if (!visible) continue;
          double dot = 0;
          for (int e = 0; e < D; ++e)
            dot += d.q[((q0 + i) * QH + h) * D + e] * d.k[((k0 + j) * KH + kvh) * D + e];
          double l = s.scale * dot;
          if (s.softcap > 0) l = s.softcap * std::tanh(l / s.softcap);
          score[i * len_k + j] = l;
        }
      }
      for (int64_t i = 0; i < len_q; ++i) {
        const double sink = s.sinks.empty() ? -kInf : s.sinks[h];
        double m = sink;
        for (int64_t j = 0; j < len_k; ++j) m = std::max(m, score[i * len_k + j]);
        if (m == -kInf) continue;  // nothing to attend to: zeros, lse -inf
        double z = std::exp(sink - m);
        for (int64_t j = 0; j < len_k; ++j) z += std::exp(score[i * len_k + j] - m);
        double* o = &r.out[((q0 + i) * QH + h) * D];
        for (int64_t j = 0; j < len_k; ++j) {
          const double w = std::exp(score[i * len_k + j] - m) / z;
          for (int e = 0; e < D; ++e) o[e] += w * d.v[((k0 + j) * KH + kvh) * D + e];
        }
        r.lse[h * total_q + q0 + i] = m + std::log(z);
      }
    }
  }
  return r;
}

// ---- running the library --------------------------------------------------------------------

struct Batch {
  Buffer q, k, v, cu_q, cu_k;
  Dense host;
  int64_t total_q = 0, total_k = 0;
};

Batch make_batch(const std::vector<int>& len_q, const std::vector<int>& len_k, int q_heads,
                 int kv_heads, int dim, DType dtype, uint64_t seed) {
  Batch b;
  b.host.cu_q = offsets(len_q);
  b.host.cu_k = offsets(len_k);
  b.total_q = b.host.cu_q.back();
  b.total_k = b.host.cu_k.back();
  b.q = test::random_buffer({b.total_q, q_heads, dim}, dtype, seed, S());
  b.k = test::random_buffer({b.total_k, kv_heads, dim}, dtype, seed + 1, S());
  b.v = test::random_buffer({b.total_k, kv_heads, dim}, dtype, seed + 2, S());
  b.cu_q = i32(b.host.cu_q);
  b.cu_k = i32(b.host.cu_k);
  b.host.q = test::to_f64(b.q, S());
  b.host.k = test::to_f64(b.k, S());
  b.host.v = test::to_f64(b.v, S());
  b.host.q_heads = q_heads;
  b.host.kv_heads = kv_heads;
  b.host.dim = dim;
  return b;
}

PrefillAttentionParams params_of(const Spec& s) {
  PrefillAttentionParams p;
  p.scale = static_cast<float>(s.scale);
  p.causal = s.causal;
  p.softcap = static_cast<float>(s.softcap);
  p.window = s.window;
  if (!s.sinks.empty()) {
    std::vector<float> f(s.sinks.size());
    for (size_t i = 0; i < f.size(); ++i) f[i] = static_cast<float>(s.sinks[i]);
    p.sinks = f32(f);
  }
  return p;
}

struct Outcome {
  Buffer out, lse;
  Result host;
};

// prefill_attention into poisoned out and lse, synchronised.
Outcome run_prefill(const Buffer& q, const Buffer& k, const Buffer& v, const Buffer& cu_q,
                    const Buffer& cu_k, const Spec& s, DType out_dtype, int64_t max_q_len = 0) {
  const int64_t total_q = q.dim(0), q_heads = q.dim(1);
  Outcome r;
  r.out = Buffer::empty(q.shape(), out_dtype, S());
  r.lse = Buffer::empty({q_heads, total_q}, DType::f32, S());
  test::poison(r.out, S());
  test::poison(r.lse, S());
  PrefillAttentionParams p = params_of(s);
  p.lse = r.lse;
  p.max_q_len = max_q_len;
  prefill_attention(q, k, v, cu_q, cu_k, r.out, p, S());
  S().synchronize();
  r.host.out = test::to_f64(r.out, S());
  r.host.lse = test::to_f64(r.lse, S());
  return r;
}

Outcome run_batch(const Batch& b, const Spec& s, DType out_dtype) {
  return run_prefill(b.q, b.k, b.v, b.cu_q, b.cu_k, s, out_dtype);
}

// The reference and the naive computation both sum in double over the same exact inputs (they
// differ by ~1e-16 relative to max|v|); the library then rounds to f32 and to the output dtype,
// at most one unit roundoff of each: 2 u(out) relative, and half a subnormal step near zero.
test::Tolerance out_tolerance(DType out, double vmax) {
  return {1e-12 * vmax + test::smallest_normal(out) * test::unit_roundoff(out),
          2 * test::unit_roundoff(out)};
}
// lse is stored as f32: one rounding of a double that matches the naive one to ~1e-15.
constexpr test::Tolerance kLseTolerance = {1e-12, 0x1p-23};

void expect_matches_naive(const Batch& b, const Spec& s, DType out_dtype) {
  const Outcome got = run_batch(b, s, out_dtype);
  const Result want = naive_prefill(b.host, s);
  EXPECT_TRUE(test::all_close(got.host.out, want.out, out_tolerance(out_dtype, max_abs(b.host.v)),
                              got.out.shape()));
  EXPECT_TRUE(test::all_close(got.host.lse, want.lse, kLseTolerance, got.lse.shape()));
}

}  // namespace

// ---- prefill_attention against the naive computation -------------------------------------------

TEST(PrefillAttention, MatchesNaive) {
  const int QH = 4, KH = 2, D = 64;
  const double scale = 1.0 / 8.0;
  const std::vector<double> sinks = {2.5, -1.0, 0.0, 4.0};
  const struct {
    const char* name;
    std::vector<int> len_q, len_k;
    Spec spec;
  } kCases[] = {
      {"causal, prefixes", {5, 1, 17}, {5, 9, 40}, {scale}},
      {"non-causal, len_k < len_q and len_k = 0", {6, 3, 2}, {2, 11, 0}, {scale, false}},
      {"softcap", {7, 4}, {7, 30}, {3 * scale, true, 2.0}},
      {"sinks", {7, 4}, {7, 30}, {scale, true, 0, 0, sinks}},
      {"window", {9, 4}, {9, 30}, {scale, true, 0, 5}},
      {"window, softcap and sinks", {9, 4}, {20, 30}, {3 * scale, true, 1.5, 6, sinks}},
  };
  const std::pair<DType, DType> kTypes[] = {
      {DType::bf16, DType::f32}, {DType::f16, DType::f16}, {DType::bf16, DType::bf16}};
  uint64_t seed = 100;
  for (const auto& c : kCases) {
    for (auto [in, out] : kTypes) {
      SCOPED_TRACE(::testing::Message()
                   << c.name << " " << dtype_name(in) << " -> " << dtype_name(out));
      const Batch b = make_batch(c.len_q, c.len_k, QH, KH, D, in, seed += 10);
      expect_matches_naive(b, c.spec, out);
    }
  }
}

TEST(PrefillAttention, HeadDimGqaAndLengthSweep) {
  // Odd lengths (1, 7, 129) against the naive computation for every head_dim and GQA group of
  // 1, 4 and 8; fewer and shorter rows at the larger head_dims keep the suite fast.
  for (int D : {64, 128, 256, 512}) {
    const int KH = D <= 128 ? 2 : 1;
    std::vector<int> len_q, len_k;
    switch (D) {
      case 64:
        len_q = {1, 7, 129}, len_k = {1, 12, 129};
        break;
      case 128:
        len_q = {1, 7, 33}, len_k = {3, 7, 97};
        break;
      case 256:
        len_q = {1, 7, 20}, len_k = {1, 12, 20};
        break;
      default:
        len_q = {1, 7}, len_k = {5, 7};
    }
    for (int group : {1, 4, 8}) {
      SCOPED_TRACE(::testing::Message() << "D=" << D << " group=" << group);
      const Batch b = make_batch(len_q, len_k, KH * group, KH, D, DType::bf16,
                                 static_cast<uint64_t>(D * 10 + group));
      expect_matches_naive(b, {1.0 / std::sqrt(static_cast<double>(D))}, DType::f32);
    }
  }
}

TEST(PrefillAttention, LseIsStableForLargeLogits) {
  // Logits of several hundred: exp() overflows unless the maximum is taken out first.
  const Batch b = make_batch({5, 8}, {5, 21}, 4, 2, 64, DType::bf16, 300);
  for (double scale : {10.0, 40.0}) {
    SCOPED_TRACE(::testing::Message() << "scale " << scale);
    const Outcome got = run_batch(b, {scale}, DType::f32);
    const Result want = naive_prefill(b.host, {scale});
    EXPECT_GT(max_abs(want.lse), 100.0);
    EXPECT_TRUE(test::all_close(got.host.lse, want.lse, kLseTolerance, got.lse.shape()));
    EXPECT_TRUE(test::all_close(got.host.out, want.out,
                                out_tolerance(DType::f32, max_abs(b.host.v)), got.out.shape()));
  }
}

// ---- properties that relate calls to each other ------------------------------------------------

TEST(PrefillAttention, ChunkedEqualsWhole) {
  // A 129-token prompt at once, and as chunks [0, 37), [37, 100), [100, 129) where each chunk
  // attends to every token up to its end. The reference sums each row in the same order either
  // way, so the rows are bit-identical (and so are the lse columns).
  const int L = 129, QH = 8, KH = 2, D = 64;
  const Batch b = make_batch({L}, {L}, QH, KH, D, DType::bf16, 400);
  const Spec kSpecs[] = {{0.125}, {0.375, true, 5.0, 20, {1, -2, 0.5, 3, 0, 0, -1, 2}}};
  for (const Spec& s : kSpecs) {
    for (DType out : {DType::bf16, DType::f32}) {
      SCOPED_TRACE(::testing::Message() << "window " << s.window << " out " << dtype_name(out));
      const Outcome whole = run_batch(b, s, out);
      const std::vector<int> bounds = {0, 37, 100, L};
      for (size_t c = 0; c + 1 < bounds.size(); ++c) {
        const int lo = bounds[c], hi = bounds[c + 1];
        const Outcome part =
            run_prefill(b.q.slice(0, lo, hi), b.k.slice(0, 0, hi), b.v.slice(0, 0, hi),
                        i32({0, hi - lo}), i32({0, hi}), s, out);
        EXPECT_TRUE(test::same_bits(part.out, whole.out.slice(0, lo, hi), S(), S()))
            << "chunk " << lo << ".." << hi;
        EXPECT_TRUE(test::same_bits(part.lse, whole.lse.slice(1, lo, hi), S(), S()))
            << "chunk " << lo << ".." << hi;
      }
    }
  }
}

TEST(PrefillAttention, VariableLengthBatchEqualsPerSequenceCalls) {
  const int QH = 4, KH = 2, D = 64;
  const struct {
    std::vector<int> len_q, len_k;
    bool causal;
  } kCases[] = {{{1, 7, 20, 0, 3}, {6, 7, 53, 4, 3}, true}, {{5, 2, 9}, {3, 0, 12}, false}};
  uint64_t seed = 500;
  for (const auto& c : kCases) {
    SCOPED_TRACE(::testing::Message() << "causal " << c.causal);
    const Batch b = make_batch(c.len_q, c.len_k, QH, KH, D, DType::f16, seed += 10);
    const Spec s{0.2, c.causal};
    const Outcome all = run_batch(b, s, DType::f32);
    for (size_t i = 0; i < c.len_q.size(); ++i) {
      const int q0 = b.host.cu_q[i], q1 = b.host.cu_q[i + 1];
      const int k0 = b.host.cu_k[i], k1 = b.host.cu_k[i + 1];
      if (q0 == q1) continue;
      const Outcome one =
          run_prefill(b.q.slice(0, q0, q1), b.k.slice(0, k0, k1), b.v.slice(0, k0, k1),
                      i32({0, q1 - q0}), i32({0, k1 - k0}), s, DType::f32);
      EXPECT_TRUE(test::same_bits(one.out, all.out.slice(0, q0, q1), S(), S())) << "sequence " << i;
      EXPECT_TRUE(test::same_bits(one.lse, all.lse.slice(1, q0, q1), S(), S())) << "sequence " << i;
    }
  }
}

TEST(PrefillAttention, GqaEqualsRepeatedKvHeads) {
  const int QH = 8, D = 64;
  for (int KH : {2, 1}) {  // groups of 4 and 8
    SCOPED_TRACE(::testing::Message() << "group " << QH / KH);
    const Batch b = make_batch({4, 11}, {9, 11}, QH, KH, D, DType::bf16, 600 + KH);
    // Every q head gets its own copy of its kv head: plain multi-head attention.
    std::vector<double> k_mha(static_cast<size_t>(b.total_k * QH * D)), v_mha(k_mha.size());
    for (int64_t t = 0; t < b.total_k; ++t)
      for (int h = 0; h < QH; ++h)
        for (int e = 0; e < D; ++e) {
          const size_t to = static_cast<size_t>((t * QH + h) * D + e);
          const size_t from = static_cast<size_t>((t * KH + h / (QH / KH)) * D + e);
          k_mha[to] = b.host.k[from];
          v_mha[to] = b.host.v[from];
        }
    const Buffer k = from_f64(k_mha, {b.total_k, QH, D}, DType::bf16);
    const Buffer v = from_f64(v_mha, {b.total_k, QH, D}, DType::bf16);
    const Spec s{0.125, true, 0, 0, {0, 1, 2, 3, -1, -2, -3, 4}};
    const Outcome gqa = run_batch(b, s, DType::bf16);
    const Outcome mha = run_prefill(b.q, k, v, b.cu_q, b.cu_k, s, DType::bf16);
    EXPECT_TRUE(test::same_bits(gqa.out, mha.out, S(), S()));
    EXPECT_TRUE(test::same_bits(gqa.lse, mha.lse, S(), S()));
  }
}

TEST(PrefillAttention, WindowLimits) {
  const int QH = 4, KH = 2, D = 64;
  const Batch b = make_batch({9, 30}, {9, 45}, QH, KH, D, DType::bf16, 700);
  // A window longer than every sequence masks nothing.
  const Outcome none = run_batch(b, {0.125}, DType::f32);
  for (int window : {45, 46, 1000}) {
    const Outcome wide = run_batch(b, {0.125, true, 0, window}, DType::f32);
    EXPECT_TRUE(test::same_bits(wide.out, none.out, S(), S())) << window;
    EXPECT_TRUE(test::same_bits(wide.lse, none.lse, S(), S())) << window;
  }
  // Window 1: each query sees only its own position, so out is that key's value exactly.
  const Spec one{0.125, true, 0, 1};
  const Outcome own = run_batch(b, one, DType::f32);
  const Result want = naive_prefill(b.host, one);
  for (size_t s = 0; s < 2; ++s) {
    const int64_t q0 = b.host.cu_q[s], len_q = b.host.cu_q[s + 1] - q0;
    const int64_t k0 = b.host.cu_k[s], len_k = b.host.cu_k[s + 1] - k0;
    for (int64_t i = 0; i < len_q; ++i)
      for (int h = 0; h < QH; ++h)
        for (int e = 0; e < D; ++e) {
          const int64_t key = k0 + len_k - len_q + i;
          ASSERT_EQ(own.host.out[((q0 + i) * QH + h) * D + e],
                    b.host.v[(key * KH + h / (QH / KH)) * D + e])
              << "sequence " << s << " row " << i << " head " << h;
        }
  }
  // Its lse is that one logit.
  EXPECT_TRUE(test::all_close(own.host.lse, want.lse, kLseTolerance, own.lse.shape()));
}

TEST(PrefillAttention, FullyMaskedRows) {
  // Non-causal sequences without keys: zero rows and lse -inf; with sinks, lse is the sink.
  const int QH = 4, KH = 2, D = 64;
  const Batch b = make_batch({3, 2, 4}, {0, 5, 0}, QH, KH, D, DType::bf16, 800);
  const std::vector<double> sinks = {1.5, -2.0, 0.0, 3.25};
  for (bool with_sinks : {false, true}) {
    SCOPED_TRACE(::testing::Message() << "sinks " << with_sinks);
    Spec s{0.125, false};
    if (with_sinks) s.sinks = sinks;
    const Outcome got = run_batch(b, s, DType::bf16);
    const Result want = naive_prefill(b.host, s);
    for (int64_t row : {0, 1, 2, 5, 6, 7, 8}) {
      for (int h = 0; h < QH; ++h) {
        for (int e = 0; e < D; ++e) ASSERT_EQ(got.host.out[(row * QH + h) * D + e], 0.0) << row;
        EXPECT_EQ(got.host.lse[h * b.total_q + row], with_sinks ? sinks[h] : -kInf) << row;
      }
    }
    // The sequence with keys is unaffected by its neighbours.
    EXPECT_TRUE(test::all_close(got.host.out, want.out,
                                out_tolerance(DType::bf16, max_abs(b.host.v)), got.out.shape()));
    EXPECT_TRUE(test::all_close(got.host.lse, want.lse, kLseTolerance, got.lse.shape()));
  }
}

TEST(PrefillAttention, SinksScaleTheOutputDown) {
  // A sink adds exp(sink) to the denominator only: out = out_no_sink * Z / (Z + exp(sink)) with
  // Z = exp(lse_no_sink), and lse = log(Z + exp(sink)).
  const int QH = 4, KH = 1, D = 128;
  const Batch b = make_batch({6, 13}, {6, 20}, QH, KH, D, DType::bf16, 900);
  const std::vector<double> sinks = {-3.0, 0.0, 2.0, 6.0};
  const Result plain = naive_prefill(b.host, {0.1});
  const Outcome got = run_batch(b, {0.1, true, 0, 0, sinks}, DType::f32);
  std::vector<double> want_out(plain.out.size()), want_lse(plain.lse.size());
  for (int64_t row = 0; row < b.total_q; ++row)
    for (int h = 0; h < QH; ++h) {
      const double lse0 = plain.lse[h * b.total_q + row];
      const double kept = 1.0 / (1.0 + std::exp(sinks[h] - lse0));
      want_lse[h * b.total_q + row] =
          std::max(lse0, sinks[h]) + std::log1p(std::exp(-std::fabs(lse0 - sinks[h])));
      double norm0 = 0, norm1 = 0;
      for (int e = 0; e < D; ++e) {
        const size_t i = static_cast<size_t>((row * QH + h) * D + e);
        want_out[i] = plain.out[i] * kept;
        norm0 += plain.out[i] * plain.out[i];
        norm1 += got.host.out[i] * got.host.out[i];
      }
      EXPECT_LT(norm1, norm0) << "row " << row << " head " << h;
    }
  EXPECT_TRUE(test::all_close(got.host.out, want_out, out_tolerance(DType::f32, max_abs(b.host.v)),
                              got.out.shape()));
  EXPECT_TRUE(test::all_close(got.host.lse, want_lse, kLseTolerance, got.lse.shape()));
}

TEST(PrefillAttention, Deterministic) {
  const Batch b = make_batch({7, 19}, {12, 19}, 8, 2, 128, DType::bf16, 1000);
  const Spec s{0.09, true, 4.0, 9, {0, 1, 2, 3, 4, 5, 6, 7}};
  const Outcome a = run_batch(b, s, DType::bf16);
  const Outcome c = run_batch(b, s, DType::bf16);
  EXPECT_TRUE(test::same_bits(a.out, c.out, S(), S()));
  EXPECT_TRUE(test::same_bits(a.lse, c.lse, S(), S()));
}

// ---- bad offsets (found while running) and bad arguments (refused at the call) -----------------

TEST(PrefillAttention, BadOffsetsAreReportedAndZeroTheirRows) {
  const int QH = 4, KH = 2, D = 64;
  const Batch b = make_batch({4, 6}, {5, 15}, QH, KH, D, DType::bf16, 1100);  // total 10 / 20
  const Spec s{0.125};
  const Outcome good = run_batch(b, s, DType::f32);
  const struct {
    const char* name;
    std::vector<int32_t> cu_q, cu_k;
    int64_t max_q_len;
    std::vector<int64_t> zero_rows;  // rows of the bad sequence
  } kCases[] = {
      {"keys decrease", {0, 4, 10}, {0, 5, 3}, 0, {4, 10}},
      {"queries end past total_q", {0, 4, 11}, {0, 5, 20}, 0, {4, 10}},
      {"keys end past total_k", {0, 4, 10}, {0, 5, 21}, 0, {4, 10}},
      {"negative first offset", {-1, 4, 10}, {0, 5, 20}, 0, {0, 4}},
      {"causal with len_k < len_q", {0, 4, 10}, {0, 5, 8}, 0, {4, 10}},
      {"len_q above max_q_len", {0, 4, 10}, {0, 5, 20}, 5, {4, 10}},
  };
  for (const auto& c : kCases) {
    SCOPED_TRACE(c.name);
    Buffer out = Buffer::empty(b.q.shape(), DType::f32, S());
    Buffer lse = Buffer::empty({QH, b.total_q}, DType::f32, S());
    test::poison(out, S());
    test::poison(lse, S());
    PrefillAttentionParams p = params_of(s);
    p.lse = lse;
    p.max_q_len = c.max_q_len;
    prefill_attention(b.q, b.k, b.v, i32(c.cu_q), i32(c.cu_k), out, p, S());
    EXPECT_TRUE(throws_error([] { S().synchronize(); }, "[prefill_attention] index",
                             {"out of range", "cu_seqlens"}));
    const auto o = test::to_f64(out, S());
    const auto l = test::to_f64(lse, S());
    for (int64_t row = 0; row < b.total_q; ++row) {
      const bool zero = row >= c.zero_rows[0] && row < c.zero_rows[1];
      for (int h = 0; h < QH; ++h) {
        for (int e = 0; e < D; ++e) {
          const size_t i = static_cast<size_t>((row * QH + h) * D + e);
          ASSERT_EQ(o[i], zero ? 0.0 : good.host.out[i]) << "row " << row;
        }
        EXPECT_EQ(l[h * b.total_q + row], zero ? -kInf : good.host.lse[h * b.total_q + row]);
      }
    }
  }
  EXPECT_EQ(error_of([] { S().synchronize(); }), "no error");
}

TEST(PrefillAttention, BadArgumentsAreRefused) {
  const int QH = 4, KH = 2, D = 64, T = 6;
  const Batch b = make_batch({2, 4}, {3, 4}, QH, KH, D, DType::bf16, 1200);
  const Buffer out = Buffer::empty({T, QH, D}, DType::f32, S());
  const Spec s{0.125};
  // Runs prefill_attention with one argument replaced.
  struct Args {
    Buffer q, k, v, cu_q, cu_k, out;
    PrefillAttentionParams p;
  };
  const Args good{b.q, b.k, b.v, b.cu_q, b.cu_k, out, params_of(s)};
  auto call = [](const Args& a) {
    prefill_attention(a.q, a.k, a.v, a.cu_q, a.cu_k, a.out, a.p, S());
  };
  call(good);
  auto with = [&](auto change) {
    Args a = good;
    change(a);
    return [a, call] { call(a); };
  };
  const char* kOp = "[prefill_attention]";
  auto rnd = [](Shape shape, DType dtype) { return test::random_buffer(shape, dtype, 1, S()); };

  EXPECT_TRUE(throws_error(with([](Args& a) { a.q = Buffer(); }), kOp, {"q", "undefined"}));
  EXPECT_TRUE(throws_error(with([&](Args& a) {
                             a.q = Buffer::empty({T, QH, D}, DType::i32, S());
                           }),
                           kOp, {"q must be bf16, f16 or f32"}));
  // f32 is the CPU reference's: then k and v must be f32 too.
  EXPECT_TRUE(throws_error(with([&](Args& a) {
                             a.q = rnd({T, QH, D}, DType::f32);
                           }),
                           kOp, {"must have q's dtype f32"}));
  EXPECT_TRUE(throws_error(with([&](Args& a) {
                             a.k = rnd({10, KH, D}, DType::f16);
                           }),
                           kOp, {"k must have q's dtype"}));
  EXPECT_TRUE(throws_error(with([&](Args& a) {
                             a.v = rnd({10, KH, D}, DType::f16);
                           }),
                           kOp, {"v must have q's dtype"}));
  EXPECT_TRUE(throws_error(with([&](Args& a) {
                             a.out = Buffer::empty({T, QH, D}, DType::f8e4m3, S());
                           }),
                           kOp, {"out must be bf16, f16 or f32"}));
  EXPECT_TRUE(throws_error(with([&](Args& a) {
                             a.q = rnd({T, QH * D}, DType::bf16);
                           }),
                           kOp, {"q must be [total_q, q_heads, head_dim]"}));
  EXPECT_TRUE(throws_error(with([&](Args& a) {
                             a.k = rnd({10, KH * D}, DType::bf16);
                           }),
                           kOp, {"k must be [total_k, kv_heads, head_dim]"}));
  EXPECT_TRUE(throws_error(with([&](Args& a) {
                             a.v = rnd({9, KH, D}, DType::bf16);
                           }),
                           kOp, {"k", "v", "differ in shape"}));
  EXPECT_TRUE(throws_error(with([&](Args& a) {
                             a.q = rnd({T, QH, 96}, DType::bf16);
                             a.k = a.v = rnd({10, KH, 96}, DType::bf16);
                             a.out = Buffer::empty({T, QH, 96}, DType::f32, S());
                           }),
                           kOp, {"head_dim 96"}));
  EXPECT_TRUE(throws_error(with([&](Args& a) {
                             a.k = a.v = rnd({10, KH, 128}, DType::bf16);
                           }),
                           kOp, {"k head_dim 128"}));
  EXPECT_TRUE(throws_error(with([&](Args& a) {
                             a.k = a.v = rnd({10, 3, D}, DType::bf16);
                           }),
                           kOp, {"q_heads 4", "kv_heads 3"}));
  EXPECT_TRUE(throws_error(with([&](Args& a) {
                             a.out = Buffer::empty({T, QH + 1, D}, DType::f32, S());
                           }),
                           kOp, {"out", "differ in shape"}));
  EXPECT_TRUE(throws_error(with([&](Args& a) {
                             a.cu_q = f32({0, 2, 6});
                           }),
                           kOp, {"cu_seqlens_q must be i32"}));
  EXPECT_TRUE(throws_error(with([&](Args& a) {
                             a.cu_k = i32({0, 3, 7, 7}, {2, 2});
                           }),
                           kOp, {"cu_seqlens_k must be i32"}));
  EXPECT_TRUE(throws_error(with([&](Args& a) {
                             a.cu_k = i32({0, 3, 7, 7});
                           }),
                           kOp, {"cu_seqlens_q", "cu_seqlens_k", "batch + 1"}));
  EXPECT_TRUE(throws_error(with([&](Args& a) {
                             a.cu_q = i32({0});
                             a.cu_k = i32({0});
                           }),
                           kOp, {"batch >= 1"}));
  for (float scale : {0.0f, -1.0f, std::numeric_limits<float>::infinity(),
                      std::numeric_limits<float>::quiet_NaN()}) {
    EXPECT_TRUE(throws_error(with([&](Args& a) { a.p.scale = scale; }), kOp, {"scale"})) << scale;
  }
  for (float softcap : {-1.0f, std::numeric_limits<float>::infinity()}) {
    EXPECT_TRUE(throws_error(with([&](Args& a) { a.p.softcap = softcap; }), kOp, {"softcap"}))
        << softcap;
  }
  EXPECT_TRUE(throws_error(with([](Args& a) { a.p.window = -1; }), kOp, {"window -1"}));
  EXPECT_TRUE(throws_error(with([](Args& a) {
                             a.p.window = 5;
                             a.p.causal = false;
                           }),
                           kOp, {"window 5", "causal"}));
  EXPECT_TRUE(throws_error(with([](Args& a) { a.p.max_q_len = -1; }), kOp, {"max_q_len"}));
  EXPECT_TRUE(throws_error(with([](Args& a) { a.p.sinks = f32({1, 2, 3}); }), kOp, {"sinks"}));
  EXPECT_TRUE(throws_error(with([](Args& a) { a.p.sinks = Buffer::empty({QH}, DType::bf16, S()); }),
                           kOp, {"sinks"}));
  EXPECT_TRUE(throws_error(with([](Args& a) {
                             a.p.lse = Buffer::empty({T, QH}, DType::f32, S());
                           }),
                           kOp, {"lse"}));
  EXPECT_TRUE(throws_error(with([](Args& a) {
                             a.p.lse = Buffer::empty({QH, T}, DType::bf16, S());
                           }),
                           kOp, {"lse"}));
  // Views that are not contiguous.
  EXPECT_TRUE(throws_error(with([&](Args& a) {
                             a.q = rnd({2 * T, QH, D}, DType::bf16).slice(0, 0, 2 * T, 2);
                           }),
                           kOp, {"q", "contiguous"}));
  EXPECT_TRUE(throws_error(with([&](Args& a) {
                             a.v = rnd({KH, 7, D}, DType::bf16).transpose(0, 1);
                           }),
                           kOp, {"v", "contiguous"}));
  EXPECT_TRUE(throws_error(with([&](Args& a) {
                             a.out = Buffer::empty({T, D, QH}, DType::f32, S()).transpose(1, 2);
                           }),
                           kOp, {"out", "contiguous"}));
  EXPECT_TRUE(throws_error(with([&](Args& a) {
                             a.p.lse = Buffer::empty({T, QH}, DType::f32, S()).transpose(0, 1);
                           }),
                           kOp, {"lse", "contiguous"}));
  // Outputs that share memory with inputs or with each other.
  EXPECT_TRUE(throws_error(with([](Args& a) { a.out = a.q; }), kOp, {"out and q overlap"}));
  {
    const Buffer qkv = rnd({3, T, KH, D}, DType::bf16);  // MHA: q, k, v of one shape
    EXPECT_TRUE(throws_error(with([&](Args& a) {
                               a.q = qkv.select(0, 0);
                               a.k = qkv.select(0, 1);
                               a.v = qkv.select(0, 2);
                               a.cu_k = i32({0, 2, 6});
                               a.out = qkv.select(0, 1);
                             }),
                             kOp, {"out and k overlap"}));
  }
  {
    const Buffer block = Buffer::empty({T * QH * D + QH * T}, DType::f32, S());
    EXPECT_TRUE(throws_error(
        with([&](Args& a) {
          a.out = block.slice(0, 0, T * QH * D).reshape({T, QH, D});
          a.p.lse = block.slice(0, T * QH * D - 1, T * QH * D - 1 + QH * T).reshape({QH, T});
        }),
        kOp, {"lse and out overlap"}));
  }
  EXPECT_EQ(error_of([] { S().synchronize(); }), "no error");
}

// ---- kv_gather ------------------------------------------------------------------------------

namespace {

constexpr int kPage = 16;

// A layer of `num_pages` pages over `type` (K and V alike).
KvLayerStorage make_layer(KvType type, int64_t num_pages, int kv_heads, int dim, int window = 0,
                          int ring_pages = 0) {
  KvLayerStorage l;
  l.k = KvStore::allocate(type, num_pages, kv_heads, kPage, dim, S());
  l.v = KvStore::allocate(type, num_pages, kv_heads, kPage, dim, S());
  std::vector<int32_t> ids(static_cast<size_t>(num_pages));
  std::iota(ids.begin(), ids.end(), 0);
  l.page_ids = i32(ids);
  l.window = window;
  l.ring_pages = ring_pages;
  return l;
}

// Global slots of positions [start, start + count) of a sequence with this page-table row.
Buffer slots_of(const std::vector<int32_t>& table, int64_t start, int64_t count,
                int ring_pages = 0) {
  std::vector<int32_t> slots;
  for (int64_t p = start; p < start + count; ++p) {
    const int64_t n = ring_pages > 0 ? (p / kPage) % ring_pages : p / kPage;
    slots.push_back(static_cast<int32_t>(table[static_cast<size_t>(n)] * kPage + p % kPage));
  }
  return i32(slots);
}

// kv_gather into a poisoned [count, kv_heads, dim] buffer of `dtype`.
Buffer gather(const KvStore& store, const Buffer& table, int ring_pages, int64_t start,
              int64_t count, DType dtype) {
  Buffer out = Buffer::empty({count, store.kv_heads(), store.dim}, dtype, S());
  test::poison(out, S());
  kv_gather(store, table, ring_pages, start, out, S());
  return out;
}

}  // namespace

TEST(KvGather, ReadsWhatWasStored) {
  const int H = 2, D = 64, NP = 6;
  const std::vector<int32_t> table = {4, 1, 3};
  for (KvType type : {KvType::bf16, KvType::f16, KvType::fp8, KvType::tq4}) {
    SCOPED_TRACE(kv_type_name(type));
    KvLayerStorage layer = make_layer(type, NP, H, D);
    const Buffer k = test::random_buffer({48, H, D}, DType::f32, 1300, S());
    kv_append(k, k, slots_of(table, 0, 48), layer, S(), {true, true});
    // The values attention must see, independently of kv_gather: the input rounded to the
    // store's type, fp8 decoded times its head's scale, TurboQuant decoded by tq_dequantize.
    std::vector<double> stored;
    if (kv_type_is_tq(type)) {
      Buffer deq = Buffer::empty({48, H, D}, DType::f32, S());
      tq_dequantize(layer.k.as_tq(), i32(table), 0, deq, TqDomain::rotated, S());
      stored = test::to_f64(deq, S());
    } else {
      stored = test::to_f64(k, S());
      const auto scales =
          type == KvType::fp8 ? layer.k.scales.to_host<float>(S()) : std::vector<float>(H, 1.0f);
      for (size_t i = 0; i < stored.size(); ++i) {
        const float x = static_cast<float>(stored[i]);
        const int h = static_cast<int>(i / D % H);
        stored[i] = type == KvType::bf16 ? test::round_to(x, DType::bf16)
                    : type == KvType::f16
                        ? test::round_to(x, DType::f16)
                        : static_cast<double>(
                              float_bits::f8e4m3_to_f32(float_bits::f32_to_f8e4m3(x / scales[h])) *
                              scales[h]);
      }
    }
    for (DType dtype : {DType::f32, DType::bf16, DType::f16}) {
      const int64_t start = 5, count = 40;
      const auto got = test::to_f64(gather(layer.k, i32(table), 0, start, count, dtype), S());
      S().synchronize();
      std::vector<double> want(stored.begin() + start * H * D,
                               stored.begin() + (start + count) * H * D);
      for (double& x : want) x = test::round_to(x, dtype);
      EXPECT_EQ(got, want) << dtype_name(dtype);
    }
  }
}

TEST(KvGather, RingPagesWrap) {
  // A ring of 2 pages: position p lives on page table[(p / 16) % 2]; positions 16..47 are the
  // last 32 written, the earlier ones were overwritten.
  const int H = 2, D = 64, ring = 2;
  const std::vector<int32_t> table = {3, 0};
  KvLayerStorage layer = make_layer(KvType::bf16, 4, H, D, 20, ring);
  const Buffer k = test::random_buffer({48, H, D}, DType::bf16, 1400, S());
  for (int64_t p = 0; p < 48; p += 16)  // in order, as appends would land
    kv_append(k.slice(0, p, p + 16), k.slice(0, p, p + 16), slots_of(table, p, 16, ring), layer,
              S());
  const auto all = test::to_f64(k, S());
  const auto got = test::to_f64(gather(layer.k, i32(table), ring, 20, 27, DType::bf16), S());
  S().synchronize();
  EXPECT_EQ(got, std::vector<double>(all.begin() + 20 * H * D, all.begin() + 47 * H * D));
}

TEST(KvGather, BadPagesAreReportedAndReadAsZeros) {
  const int H = 1, D = 64, NP = 4;
  KvLayerStorage layer = make_layer(KvType::bf16, NP, H, D);
  const std::vector<int32_t> good_table = {2, 0, 3};
  const Buffer k = test::random_buffer({48, H, D}, DType::bf16, 1500, S());
  kv_append(k, k, slots_of(good_table, 0, 48), layer, S());
  const auto all = test::to_f64(k, S());
  // (table, start, count, rows expected to read as zeros)
  const struct {
    std::vector<int32_t> table;
    int64_t start, count, zero_lo, zero_hi;
    const char* message;
  } kCases[] = {
      {{2, NP, 3}, 0, 48, 16, 32, "[kv_gather] index 4 out of range"},
      {{2, 0, -1}, 10, 38, 22, 38, "[kv_gather] index -1 out of range"},
      {{2, 0, 3}, 40, 16, 8, 16, "[kv_gather] index 3 out of range"},  // past the table
  };
  for (const auto& c : kCases) {
    SCOPED_TRACE(c.message);
    const Buffer out = gather(layer.k, i32(c.table), 0, c.start, c.count, DType::f32);
    EXPECT_TRUE(throws_error([] { S().synchronize(); }, c.message, {"page_table"}));
    const auto got = test::to_f64(out, S());
    for (int64_t i = 0; i < c.count; ++i)
      for (int e = 0; e < D; ++e) {
        const bool zero = i >= c.zero_lo && i < c.zero_hi;
        ASSERT_EQ(got[i * D + e], zero ? 0.0 : all[(c.start + i) * D + e]) << "row " << i;
      }
  }
  EXPECT_EQ(error_of([] { S().synchronize(); }), "no error");
}

TEST(KvGather, BadArgumentsAreRefused) {
  const int H = 2, D = 64;
  KvLayerStorage layer = make_layer(KvType::bf16, 4, H, D);
  const Buffer table = i32({0, 1, 2});
  const char* kOp = "[kv_gather]";
  auto run = [&](const Buffer& t, int ring, int64_t start, const Buffer& out) {
    return [&layer, t, ring, start, out] { kv_gather(layer.k, t, ring, start, out, S()); };
  };
  const Buffer out = Buffer::empty({8, H, D}, DType::f32, S());
  run(table, 0, 0, out)();
  EXPECT_TRUE(throws_error(run(table, 0, -1, out), kOp, {"start -1"}));
  EXPECT_TRUE(throws_error(run(table, -1, 0, out), kOp, {"ring_pages -1"}));
  EXPECT_TRUE(throws_error(run(table, 4, 0, out), kOp, {"page_table has 3", "ring 4"}));
  EXPECT_TRUE(throws_error(run(f32({0, 1}), 0, 0, out), kOp, {"page_table must be i32"}));
  EXPECT_TRUE(throws_error(run(i32({0, 1, 2, 3}, {2, 2}), 0, 0, out), kOp, {"page_table"}));
  EXPECT_TRUE(throws_error(run(table, 0, 0, Buffer::empty({8, H, D}, DType::i32, S())), kOp,
                           {"out must be bf16, f16 or f32"}));
  EXPECT_TRUE(throws_error(run(table, 0, 0, Buffer::empty({8, H + 1, D}, DType::f32, S())), kOp,
                           {"out must be [count"}));
  EXPECT_TRUE(
      throws_error(run(table, 0, 0, Buffer::empty({8, D, H}, DType::f32, S()).transpose(1, 2)), kOp,
                   {"out", "contiguous"}));
  EXPECT_TRUE(throws_error(
      [&] {
        KvStore bad = layer.k;
        bad.dim = 32;
        kv_gather(bad, table, 0, 0, out, S());
      },
      kOp));
  EXPECT_EQ(error_of([] { S().synchronize(); }), "no error");
}

// ---- prefill_attention_cached ----------------------------------------------------------------

namespace {

// One prompt: q [N, QH, D], k / v [N, KH, D] (bf16).
struct Prompt {
  Buffer q, k, v;
  int64_t n = 0;
};

Prompt make_prompt(int64_t n, int q_heads, int kv_heads, int dim, uint64_t seed) {
  return {test::random_buffer({n, q_heads, dim}, DType::bf16, seed, S()),
          test::random_buffer({n, kv_heads, dim}, DType::bf16, seed + 1, S()),
          test::random_buffer({n, kv_heads, dim}, DType::bf16, seed + 2, S()), n};
}

// prefill_attention_cached of rows [lo, hi) of the prompt, over positions [0, lo) of `layer`.
Outcome run_cached(const Prompt& pr, int64_t lo, int64_t hi, const KvLayerStorage& layer,
                   const Buffer& table, const Spec& s, DType out_dtype) {
  Outcome r;
  r.out = Buffer::empty({hi - lo, pr.q.dim(1), pr.q.dim(2)}, out_dtype, S());
  r.lse = Buffer::empty({pr.q.dim(1), hi - lo}, DType::f32, S());
  test::poison(r.out, S());
  test::poison(r.lse, S());
  PrefillAttentionParams p = params_of(s);
  p.lse = r.lse;
  prefill_attention_cached(pr.q.slice(0, lo, hi), pr.k.slice(0, lo, hi), pr.v.slice(0, lo, hi),
                           layer, table, lo, r.out, p, S());
  S().synchronize();
  r.host.out = test::to_f64(r.out, S());
  r.host.lse = test::to_f64(r.lse, S());
  return r;
}

// What the cached path must compute for a TurboQuant layer, composed by hand from the public
// ops: the gathered rotated-domain prefix (its last `window - 1` positions on a window layer) and
// the rotated chunk in q's dtype, the rotated queries, an f32 output rotated back.
Buffer rotated_dense_expected(const Prompt& pr, int64_t lo, int64_t hi, const KvLayerStorage& layer,
                              const Buffer& table, const Spec& s) {
  const int64_t first = s.window > 0 ? std::max<int64_t>(0, lo - (s.window - 1)) : 0;
  const int64_t L = hi - lo;
  auto keys = [&](const KvStore& store, const Buffer& x) {
    Buffer prefix = gather(store, table, layer.ring_pages, first, lo - first, DType::bf16);
    Buffer chunk = Buffer::empty({L, x.dim(1), x.dim(2)}, DType::bf16, S());
    tq_rotate(x.slice(0, lo, hi), chunk, false, S());
    return concat_rows(prefix, chunk);
  };
  const Buffer k = keys(layer.k, pr.k), v = keys(layer.v, pr.v);
  const Buffer q = Buffer::empty({L, pr.q.dim(1), pr.q.dim(2)}, DType::bf16, S());
  tq_rotate(pr.q.slice(0, lo, hi), q, false, S());
  const Outcome rotated = run_prefill(q, k, v, i32({0, static_cast<int32_t>(L)}),
                                      i32({0, static_cast<int32_t>(hi - first)}), s, DType::f32);
  Buffer out = Buffer::empty(q.shape(), DType::f32, S());
  tq_rotate(rotated.out, out, true, S());
  return out;
}

// Root-mean-square of a - b over that of b.
double relative_rms(const std::vector<double>& a, const std::vector<double>& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    num += (a[i] - b[i]) * (a[i] - b[i]);
    den += b[i] * b[i];
  }
  return std::sqrt(num / den);
}

std::vector<double> rows_of(const std::vector<double>& x, int64_t row_size, int64_t lo,
                            int64_t hi) {
  return {x.begin() + lo * row_size, x.begin() + hi * row_size};
}

}  // namespace

TEST(PrefillAttentionCached, Bf16CacheEqualsDenseAttention) {
  // A 61-token prompt prefilled in chunks [0, 23), [23, 44), [44, 61), each before its append,
  // over pages out of order: every chunk's rows equal the whole-prompt dense call's bit for bit
  // (the staged keys are the same bf16 values, summed in the same order).
  const int QH = 8, KH = 2, D = 64, N = 61;
  const std::vector<int32_t> table = {5, 2, 7, 0};
  const Prompt pr = make_prompt(N, QH, KH, D, 1600);
  const Spec kSpecs[] = {{0.125}, {0.25, true, 3.0, 0, {0, 1, 2, 3, -1, -2, -3, 0.5}}};
  for (const Spec& s : kSpecs) {
    SCOPED_TRACE(::testing::Message() << "softcap " << s.softcap);
    const KvLayerStorage layer = make_layer(KvType::bf16, 8, KH, D);
    const Outcome whole = run_prefill(pr.q, pr.k, pr.v, i32({0, N}), i32({0, N}), s, DType::bf16);
    const std::vector<int64_t> bounds = {0, 23, 44, N};
    for (size_t c = 0; c + 1 < bounds.size(); ++c) {
      const int64_t lo = bounds[c], hi = bounds[c + 1];
      const Outcome part = run_cached(pr, lo, hi, layer, i32(table), s, DType::bf16);
      EXPECT_TRUE(test::same_bits(part.out, whole.out.slice(0, lo, hi), S(), S())) << lo;
      EXPECT_TRUE(test::same_bits(part.lse, whole.lse.slice(1, lo, hi), S(), S())) << lo;
      kv_append(pr.k.slice(0, lo, hi), pr.v.slice(0, lo, hi), slots_of(table, lo, hi - lo), layer,
                S());
    }
  }
}

TEST(PrefillAttentionCached, Tq4CacheMatchesRotatedDenseAttention) {
  const int QH = 8, KH = 2, D = 64, prefix = 40, N = 63;
  const std::vector<int32_t> table = {3, 6, 1, 4};
  const Prompt pr = make_prompt(N, QH, KH, D, 1700);
  const KvLayerStorage layer = make_layer(KvType::tq4, 8, KH, D);
  kv_append(pr.k.slice(0, 0, prefix), pr.v.slice(0, 0, prefix), slots_of(table, 0, prefix), layer,
            S());
  const Spec s{0.125};
  const Outcome got = run_cached(pr, prefix, N, layer, i32(table), s, DType::f32);

  // 1. The documented composition of public ops, bit for bit.
  EXPECT_TRUE(test::same_bits(got.out, rotated_dense_expected(pr, prefix, N, layer, i32(table), s),
                              S(), S()));

  // 2. The naive attention over the rotated-domain values the library attends to (the decoded
  // prefix y_hat from tq_dequantize, the tq_rotate'd chunk and queries, all in q's dtype), its
  // output rotated back in double. The library rounds its output to f32 (2^-24) and rotates it
  // back in f32, log2(D) butterfly stages of one rounding each plus the scaling: per row the two
  // differ by at most (log2(D) + 2) 2^-24 of the row's 2-norm; twice that is the bound.
  Dense rot;
  {
    auto rotated_keys = [&](const KvStore& store, const Buffer& x) {
      Buffer prefix_rows = Buffer::empty({prefix, KH, D}, DType::bf16, S());
      tq_dequantize(store.as_tq(), i32(table), 0, prefix_rows, TqDomain::rotated, S());
      Buffer chunk = Buffer::empty({N - prefix, KH, D}, DType::bf16, S());
      tq_rotate(x.slice(0, prefix, N), chunk, false, S());
      return test::to_f64(concat_rows(prefix_rows, chunk), S());
    };
    rot.k = rotated_keys(layer.k, pr.k);
    rot.v = rotated_keys(layer.v, pr.v);
    Buffer q = Buffer::empty({N - prefix, QH, D}, DType::bf16, S());
    tq_rotate(pr.q.slice(0, prefix, N), q, false, S());
    rot.q = test::to_f64(q, S());
  }
  rot.cu_q = {0, N - prefix};
  rot.cu_k = {0, N};
  rot.q_heads = QH;
  rot.kv_heads = KH;
  rot.dim = D;
  std::vector<double> want = naive_prefill(rot, s).out;
  std::vector<double> bound(want.size());
  for (int64_t r = 0; r < (N - prefix) * QH; ++r) {
    std::vector<double> row(want.begin() + r * D, want.begin() + (r + 1) * D);
    mlxn::cpu::rotate_f64(row, /*inverse=*/true);
    double norm = 0;
    for (int e = 0; e < D; ++e) norm += row[e] * row[e];
    for (int e = 0; e < D; ++e) {
      want[r * D + e] = row[e];
      bound[r * D + e] = 2 * (std::log2(D) + 2) * 0x1p-24 * std::sqrt(norm);
    }
  }
  EXPECT_TRUE(test::all_within(got.host.out, want, bound, got.out.shape()));

  // 3. Against attention over the unquantized prefix, loosely: tq4 keeps each vector within a
  // relative RMS error of sqrt(0.0095) ~ 0.1 (docs/turboquant.md); through the softmax the
  // output's relative RMS error stays of that order (0.25 allows 2.5 times it), far below the
  // O(1) of a wrong prefix.
  Dense exact = rot;
  exact.q = test::to_f64(pr.q.slice(0, prefix, N), S());
  exact.k = test::to_f64(pr.k, S());
  exact.v = test::to_f64(pr.v, S());
  const Result unquantized = naive_prefill(exact, s);
  const double err = relative_rms(got.host.out, unquantized.out);
  EXPECT_LT(err, 0.25);
  // A prefix attended as zeros (what a missed gather would give) is far off.
  Dense no_prefix = exact;
  std::fill(no_prefix.k.begin(), no_prefix.k.begin() + prefix * KH * D, 0.0);
  std::fill(no_prefix.v.begin(), no_prefix.v.begin() + prefix * KH * D, 0.0);
  EXPECT_GT(relative_rms(naive_prefill(no_prefix, s).out, unquantized.out), 2 * err);
}

TEST(PrefillAttentionCached, WindowRingLayer) {
  // A window-20 layer whose sequence keeps a ring of 2 pages (32 slots, as KvCache sizes it):
  // chunks of 13, 11, 17 and 20 tokens, each attended before it is appended. bf16: bit-identical
  // to the whole-prompt dense call with the same window; tq4: the hand-composed rotated-domain
  // attention, and near the unquantized windowed attention.
  const int QH = 4, KH = 2, D = 64, N = 61, W = 20;
  const Prompt pr = make_prompt(N, QH, KH, D, 1800);
  const std::vector<int64_t> bounds = {0, 13, 24, 41, N};
  for (KvType type : {KvType::bf16, KvType::tq4}) {
    SCOPED_TRACE(kv_type_name(type));
    KvCacheConfig c;
    c.kv_heads = KH;
    c.head_dim = D;
    c.page_size = kPage;
    c.max_sequences = 1;
    c.max_query_tokens = 8;
    c.layers = {KvLayerConfig{type, type, W}};
    KvCache cache(c, S());
    ASSERT_EQ(cache.layer(0).ring_pages, 2);
    const int seq = cache.add_sequence();
    const Spec s{0.125, true, 0, W};
    const Outcome whole = run_prefill(pr.q, pr.k, pr.v, i32({0, N}), i32({0, N}), s, DType::f32);
    std::vector<double> got_all;
    for (size_t i = 0; i + 1 < bounds.size(); ++i) {
      const int64_t lo = bounds[i], hi = bounds[i + 1];
      SCOPED_TRACE(::testing::Message() << "chunk " << lo << ".." << hi);
      const KvStep step =
          cache.plan(std::vector<int>{seq}, std::vector<int>{static_cast<int>(hi - lo)});
      const Buffer table = step.page_table_of(0).select(0, 0);
      // params.window 0: the layer's window applies.
      const Outcome part = run_cached(pr, lo, hi, cache.layer(0), table, {0.125}, DType::f32);
      if (type == KvType::bf16) {
        EXPECT_TRUE(test::same_bits(part.out, whole.out.slice(0, lo, hi), S(), S()));
        EXPECT_TRUE(test::same_bits(part.lse, whole.lse.slice(1, lo, hi), S(), S()));
      } else {
        EXPECT_TRUE(test::same_bits(
            part.out, rotated_dense_expected(pr, lo, hi, cache.layer(0), table, s), S(), S()));
      }
      got_all.insert(got_all.end(), part.host.out.begin(), part.host.out.end());
      cache.append(0, pr.k.slice(0, lo, hi), pr.v.slice(0, lo, hi), step);
    }
    if (type == KvType::tq4) {
      // The loose figure of Tq4CacheMatchesRotatedDenseAttention, over the chunks with a prefix.
      EXPECT_LT(
          relative_rms(rows_of(got_all, QH * D, 13, N), rows_of(whole.host.out, QH * D, 13, N)),
          0.25);
    }
  }
}

TEST(PrefillAttentionCached, GraphReplayMatchesEagerCalls) {
  // The cached path allocates its staging and offsets on the stream without synchronising, so
  // it can be captured; a replay reads the current contents of q, k_new and v_new.
  const int QH = 4, KH = 2, D = 64, prefix = 21, L = 9;
  const std::vector<int32_t> table = {2, 0};
  for (KvType type : {KvType::bf16, KvType::tq4}) {
    SCOPED_TRACE(kv_type_name(type));
    const KvLayerStorage layer = make_layer(type, 4, KH, D);
    const Prompt pr = make_prompt(prefix + L, QH, KH, D, 2000);
    kv_append(pr.k.slice(0, 0, prefix), pr.v.slice(0, 0, prefix), slots_of(table, 0, prefix), layer,
              S());
    const Buffer q = Buffer::empty({L, QH, D}, DType::bf16, S());
    const Buffer k = Buffer::empty({L, KH, D}, DType::bf16, S());
    const Buffer v = Buffer::empty({L, KH, D}, DType::bf16, S());
    const Buffer out = Buffer::empty({L, QH, D}, DType::bf16, S());
    const Buffer page_table = i32(table);
    const PrefillAttentionParams p = params_of({0.125});
    Stream stream(Device::cpu());
    Graph graph = Graph::capture(stream, [&] {
      prefill_attention_cached(q, k, v, layer, page_table, prefix, out, p, stream);
    });
    for (uint64_t seed : {1, 2}) {
      for (const Buffer* b : {&q, &k, &v})
        copy(test::random_buffer(b->shape(), DType::bf16, 2100 + seed * 10 + b->dim(1), S()), *b,
             S());
      test::poison(out, S());
      graph.replay(stream);
      stream.synchronize();
      const Buffer eager = Buffer::empty({L, QH, D}, DType::bf16, S());
      prefill_attention_cached(q, k, v, layer, page_table, prefix, eager, p, S());
      S().synchronize();
      EXPECT_TRUE(test::same_bits(out, eager, S(), S())) << "replay " << seed;
    }
  }
}

TEST(PrefillAttentionCached, BadArgumentsAreRefused) {
  const int QH = 4, KH = 2, D = 64, L = 5;
  const KvLayerStorage layer = make_layer(KvType::bf16, 4, KH, D);
  const Prompt pr = make_prompt(L, QH, KH, D, 1900);
  const Buffer table = i32({0, 1});  // 32 positions
  struct Args {
    Buffer q, k, v, table, out;
    KvLayerStorage layer;
    int64_t prefix = 0;
    PrefillAttentionParams p;
  };
  Args good{pr.q,
            pr.k,
            pr.v,
            table,
            Buffer::empty({L, QH, D}, DType::f32, S()),
            layer,
            10,
            params_of({0.125})};
  auto call = [](const Args& a) {
    prefill_attention_cached(a.q, a.k, a.v, a.layer, a.table, a.prefix, a.out, a.p, S());
  };
  call(good);
  auto with = [&](auto change) {
    Args a = good;
    change(a);
    return [a, call] { call(a); };
  };
  const char* kOp = "[prefill_attention_cached]";
  auto rnd = [](Shape shape, DType dtype) { return test::random_buffer(shape, dtype, 2, S()); };
  EXPECT_TRUE(throws_error(with([](Args& a) { a.p.causal = false; }), kOp, {"causal"}));
  EXPECT_TRUE(throws_error(with([](Args& a) { a.prefix = -1; }), kOp, {"prefix_len -1"}));
  EXPECT_TRUE(throws_error(with([](Args& a) { a.prefix = 33; }), kOp, {"prefix_len 33"}));
  EXPECT_TRUE(throws_error(with([&](Args& a) {
                             a.q = Buffer::empty({L, QH, D}, DType::i32, S());
                           }),
                           kOp, {"q must be bf16, f16 or f32"}));
  // f32 is the CPU reference's: then k and v must be f32 too.
  EXPECT_TRUE(throws_error(with([&](Args& a) {
                             a.q = rnd({L, QH, D}, DType::f32);
                           }),
                           kOp, {"must have q's dtype f32"}));
  EXPECT_TRUE(throws_error(with([&](Args& a) {
                             a.k = rnd({L, KH, D}, DType::f16);
                           }),
                           kOp, {"k_new must have q's dtype"}));
  EXPECT_TRUE(throws_error(with([&](Args& a) {
                             a.v = rnd({L + 1, KH, D}, DType::bf16);
                           }),
                           kOp, {"v_new must be [L = 5"}));
  EXPECT_TRUE(throws_error(with([&](Args& a) {
                             a.k = rnd({L, KH + 1, D}, DType::bf16);
                           }),
                           kOp, {"k_new must be"}));
  EXPECT_TRUE(throws_error(with([&](Args& a) {
                             a.q = rnd({L, QH, 128}, DType::bf16);
                             a.out = Buffer::empty({L, QH, 128}, DType::f32, S());
                           }),
                           kOp, {"q must be [L, q_heads, 64]"}));
  EXPECT_TRUE(throws_error(with([&](Args& a) {
                             a.q = rnd({L, 3, D}, DType::bf16);
                             a.out = Buffer::empty({L, 3, D}, DType::f32, S());
                           }),
                           kOp, {"q_heads a multiple"}));
  EXPECT_TRUE(throws_error(with([&](Args& a) {
                             a.out = Buffer::empty({L, QH, D}, DType::i32, S());
                           }),
                           kOp, {"out must be"}));
  EXPECT_TRUE(throws_error(with([&](Args& a) {
                             a.out = Buffer::empty({L + 1, QH, D}, DType::f32, S());
                           }),
                           kOp, {"out", "differ in shape"}));
  EXPECT_TRUE(throws_error(with([](Args& a) { a.out = a.q; }), kOp, {"out and q overlap"}));
  EXPECT_TRUE(throws_error(with([](Args& a) {
                             a.table = i32({0, 1}, {1, 2});
                           }),
                           kOp, {"page_table"}));
  EXPECT_TRUE(throws_error(with([](Args& a) { a.p.sinks = f32({1}); }), kOp, {"sinks"}));
  EXPECT_TRUE(throws_error(with([](Args& a) { a.p.scale = 0; }), kOp, {"scale"}));
  EXPECT_TRUE(throws_error(with([](Args& a) { a.p.window = -2; }), kOp, {"window -2"}));
  EXPECT_TRUE(throws_error(with([](Args& a) { a.layer.k.dim = 32; }), kOp));
  // A window layer: params.window must be 0 or the layer's; the ring must hold window - 1.
  EXPECT_TRUE(throws_error(with([](Args& a) {
                             a.layer.window = 8;
                             a.p.window = 9;
                           }),
                           kOp, {"window 9", "layer's window 8"}));
  with([](Args& a) {
    a.layer.window = 8;
    a.p.window = 8;
  })();
  EXPECT_TRUE(throws_error(with([](Args& a) {
                             a.layer.window = 40;
                             a.layer.ring_pages = 1;
                             a.prefix = 100;
                           }),
                           kOp, {"ring of 16 slots"}));
  EXPECT_TRUE(throws_error(with([](Args& a) {
                             a.layer.window = 8;
                             a.layer.ring_pages = 3;
                           }),
                           kOp, {"page_table has 2 entries", "ring 3"}));
  EXPECT_EQ(error_of([] { S().synchronize(); }), "no error");
}
