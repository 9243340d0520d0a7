// The paged KV cache on the CPU backend: type helpers, exact memory accounting, page management,
// and decode attention against a naive double-precision attention computed here from the values
// the cache holds (read back from its bytes through the documented layout).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>
#include <set>

#include "mlxn/ops/kv_cache.h"
#include "support/support.h"

using namespace mlxn;
using mlxn::test::cpu_stream;
using mlxn::test::error_of;
using mlxn::test::throws_error;

namespace {

const Stream& S() { return cpu_stream(); }

Buffer i32(const std::vector<int32_t>& values, Shape shape = {}) {
  if (shape.empty()) shape = {static_cast<int64_t>(values.size())};
  return Buffer::from_host(std::span<const int32_t>(values), shape, DType::i32, S());
}

Buffer f32(const std::vector<float>& values) {
  return Buffer::from_host(std::span<const float>(values), {static_cast<int64_t>(values.size())},
                           DType::f32, S());
}

// Row b of an i32 [batch, width] page table.
std::vector<int32_t> table_row(const Buffer& table, int64_t b) {
  const auto all = table.to_host<int32_t>(S());
  const int64_t w = table.dim(1);
  return {all.begin() + b * w, all.begin() + (b + 1) * w};
}

std::vector<uint8_t> raw_bytes(const Buffer& b) {
  std::vector<uint8_t> bytes(static_cast<size_t>(b.nbytes()));
  b.copy_to_host(bytes.data(), b.nbytes(), S());
  return bytes;
}

double max_abs(const std::vector<double>& x) {
  double m = 0;
  for (double v : x) m = std::max(m, std::fabs(v));
  return m;
}

double max_diff(const std::vector<double>& a, const std::vector<double>& b) {
  double m = 0;
  for (size_t i = 0; i < a.size(); ++i) m = std::max(m, std::fabs(a[i] - b[i]));
  return m;
}

// One sequence's keys and values as attention must see them: [len][kv_heads][dim].
struct HostSeq {
  int64_t len = 0;
  std::vector<double> k, v;
};

struct Naive {
  Naive(double scale_, double softcap_ = 0, int window_ = 0, std::vector<double> sinks_ = {})
      : scale(scale_), softcap(softcap_), window(window_), sinks(std::move(sinks_)) {}
  double scale;
  double softcap;
  int window;
  std::vector<double> sinks;  // empty: none
};

DecodeAttentionParams params_of(float scale, float softcap = 0.0f) {
  DecodeAttentionParams p;
  p.scale = scale;
  p.softcap = softcap;
  return p;
}

// Textbook attention in double: q [batch, q_len, q_heads, dim] -> [batch, q_len, q_heads, dim].
// Query i of sequence b sits at position len - q_len + i and sees keys max(0, pos - window + 1)
// .. pos; query head h reads kv-head h / (q_heads / kv_heads).
std::vector<double> naive_attention(const std::vector<double>& q, int q_len, int q_heads,
                                    const std::vector<HostSeq>& seqs, int kv_heads, int dim,
                                    const Naive& p) {
  const int group = q_heads / kv_heads;
  std::vector<double> out(q.size(), 0.0);
  for (size_t b = 0; b < seqs.size(); ++b) {
    const HostSeq& s = seqs[b];
    for (int i = 0; i < q_len; ++i) {
      const int64_t pos = s.len - q_len + i;
      const int64_t first = p.window > 0 ? std::max<int64_t>(0, pos - p.window + 1) : 0;
      for (int h = 0; h < q_heads; ++h) {
        const int kvh = h / group;
        const double* qv = &q[((b * q_len + i) * q_heads + h) * dim];
        std::vector<double> logits;
        double m = -std::numeric_limits<double>::infinity();
        for (int64_t t = first; t <= pos; ++t) {
          const double* k = &s.k[(t * kv_heads + kvh) * dim];
          double dot = 0;
          for (int j = 0; j < dim; ++j) dot += qv[j] * k[j];
          double l = dot * p.scale;
          if (p.softcap > 0) l = p.softcap * std::tanh(l / p.softcap);
          logits.push_back(l);
          m = std::max(m, l);
        }
        if (!p.sinks.empty()) m = std::max(m, p.sinks[h]);
        double denom = p.sinks.empty() ? 0.0 : std::exp(p.sinks[h] - m);
        double* o = &out[((b * q_len + i) * q_heads + h) * dim];
        for (int64_t t = first; t <= pos; ++t) {
          const double w = std::exp(logits[t - first] - m);
          denom += w;
          const double* v = &s.v[(t * kv_heads + kvh) * dim];
          for (int j = 0; j < dim; ++j) o[j] += w * v[j];
        }
        for (int j = 0; j < dim; ++j) o[j] /= denom;
      }
    }
  }
  return out;
}

// The first `len` tokens of a sequence whose logical page n is pages[n] (pages[n % ring_pages]
// for a ring), read back from a dense store's bytes: data [pages, kv_heads, page_size, dim]
// decoded from bf16 / f16 / e4m3, e4m3 times its head's f32 scale (an f32 product).
std::vector<double> read_dense(const KvStore& s, const std::vector<int32_t>& pages, int64_t len,
                               int ring_pages = 0) {
  const int H = s.kv_heads(), P = s.page_size(), D = s.dim;
  const std::vector<double> data = test::to_f64(s.data, S());
  std::vector<float> scales(static_cast<size_t>(H), 1.0f);
  if (s.type == KvType::fp8) scales = s.scales.to_host<float>(S());
  std::vector<double> out(static_cast<size_t>(len * H * D));
  for (int64_t t = 0; t < len; ++t) {
    const int64_t n = ring_pages > 0 ? (t / P) % ring_pages : t / P;
    const int64_t page = pages[static_cast<size_t>(n)];
    for (int h = 0; h < H; ++h)
      for (int j = 0; j < D; ++j) {
        const double x = data[static_cast<size_t>(((page * H + h) * P + t % P) * D + j)];
        out[static_cast<size_t>((t * H + h) * D + j)] =
            s.type == KvType::fp8 ? static_cast<double>(static_cast<float>(x) * scales[h]) : x;
      }
  }
  return out;
}

// The first `len` tokens of a sequence in a TurboQuant store, dequantized to the original domain
// by tq_dequantize (pages: the sequence's page-table row).
std::vector<double> read_tq(const KvStore& s, const std::vector<int32_t>& pages, int64_t len) {
  Buffer out = Buffer::empty({len, s.kv_heads(), s.dim}, DType::f32, S());
  test::poison(out, S());
  tq_dequantize(s.as_tq(), i32(pages), 0, out, TqDomain::original, S());
  return test::to_f64(out, S());
}

// A KvCache config with one layer.
KvCacheConfig one_layer(KvType k, KvType v, int kv_heads, int dim, int64_t num_pages,
                        int max_sequences = 2, int window = 0, int max_query_tokens = 8) {
  KvCacheConfig c;
  c.kv_heads = kv_heads;
  c.head_dim = dim;
  c.page_size = 16;
  c.num_pages = num_pages;
  c.max_sequences = max_sequences;
  c.max_query_tokens = max_query_tokens;
  c.layers = {KvLayerConfig{k, v, window}};
  return c;
}

// Appends `counts[b]` random tokens to sequences[b] of layer 0 in one step; returns the step.
// in_k / in_v receive the f32 inputs per sequence ([len][H][D], appended).
KvStep append_random(KvCache& cache, const std::vector<int>& sequences,
                     const std::vector<int>& counts, uint64_t seed,
                     std::vector<std::vector<double>>* in_k = nullptr,
                     std::vector<std::vector<double>>* in_v = nullptr) {
  const int H = cache.config().kv_heads, D = cache.config().head_dim;
  KvStep step = cache.plan(sequences, counts);
  const int64_t total = std::accumulate(counts.begin(), counts.end(), int64_t{0});
  Buffer k = test::random_buffer({total, H, D}, DType::f32, seed, S());
  Buffer v = test::random_buffer({total, H, D}, DType::f32, seed + 1000, S());
  cache.append(0, k, v, step);
  if (in_k) {
    const auto kh = test::to_f64(k, S()), vh = test::to_f64(v, S());
    int64_t t0 = 0;
    for (size_t b = 0; b < sequences.size(); ++b) {
      const size_t n = static_cast<size_t>(counts[b] * H * D),
                   off = static_cast<size_t>(t0 * H * D);
      (*in_k)[b].insert((*in_k)[b].end(), kh.begin() + off, kh.begin() + off + n);
      (*in_v)[b].insert((*in_v)[b].end(), vh.begin() + off, vh.begin() + off + n);
      t0 += counts[b];
    }
  }
  return step;
}

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

}  // namespace

// ---- type helpers, memory, pages --------------------------------------------------------------

TEST(KvCache, TypeNamesRoundTrip) {
  const struct {
    KvType type;
    const char* name;
    int bits;
    bool tq;
  } kAll[] = {{KvType::bf16, "bf16", 16, false}, {KvType::f16, "f16", 16, false},
              {KvType::fp8, "fp8", 8, false},    {KvType::tq2, "tq2", 2, true},
              {KvType::tq3, "tq3", 3, true},     {KvType::tq4, "tq4", 4, true},
              {KvType::tq5, "tq5", 5, true},     {KvType::tq6, "tq6", 6, true},
              {KvType::tq8, "tq8", 8, true}};
  for (const auto& t : kAll) {
    EXPECT_EQ(kv_type_name(t.type), t.name);
    EXPECT_EQ(parse_kv_type(t.name), t.type) << t.name;
    EXPECT_EQ(kv_type_bits(t.type), t.bits) << t.name;
    EXPECT_EQ(kv_type_is_tq(t.type), t.tq) << t.name;
  }
  EXPECT_TRUE(throws_error([] { parse_kv_type("tq7"); }, "[kv_cache]", {"tq7", "bf16", "tq8"}));
  EXPECT_THROW(parse_kv_type(""), Error);
  EXPECT_THROW(parse_kv_type("bf16 "), Error);
  EXPECT_EQ(kv_vector_bytes(KvType::bf16, 128), 256);
  EXPECT_EQ(kv_vector_bytes(KvType::fp8, 128), 128);
  EXPECT_EQ(kv_vector_bytes(KvType::tq4, 128), 66);  // 64 payload + f16 scale
  EXPECT_EQ(kv_vector_bytes(KvType::tq3, 128), 50);  // 48 payload + f16 scale
}

namespace {
// Bytes of one cached vector from the documented layout (not from kv_vector_bytes).
int64_t layout_vector_bytes(KvType t, int dim) {
  switch (t) {
    case KvType::bf16:
    case KvType::f16:
      return 2 * dim;
    case KvType::f32:
      return 4 * dim;
    case KvType::fp8:
      return dim;  // the f32 scale is per (layer, head), counted separately
    case KvType::tq2:
      return dim * 2 / 8 + 2;
    case KvType::tq3:
      return dim * 3 / 8 + 2;
    case KvType::tq4:
      return dim * 4 / 8 + 2;
    case KvType::tq5:
      return dim * 5 / 8 + 2;
    case KvType::tq6:
      return dim * 6 / 8 + 2;
    case KvType::tq8:
      return dim + 2;
  }
  return -1;
}

// memory_bytes() against an independent sum over the documented layout.
void check_memory(const KvCacheConfig& c) {
  SCOPED_TRACE(::testing::Message() << c.layers.size() << " layers");
  KvCache cache(c, S());
  bool any_full = false;
  std::vector<int> windows;  // distinct, in first-seen order
  for (const auto& l : c.layers) {
    if (l.window == 0)
      any_full = true;
    else if (std::find(windows.begin(), windows.end(), l.window) == windows.end())
      windows.push_back(l.window);
  }
  auto ring_pages_of = [&](int window) {
    return ceil_div(window + c.max_query_tokens - 1, c.page_size);
  };
  auto pages_of = [&](int window) -> int64_t {
    return window == 0 ? c.num_pages : c.max_sequences * ring_pages_of(window) + 1;
  };
  int64_t expected = 0;
  for (size_t i = 0; i < c.layers.size(); ++i) {
    const auto& l = c.layers[i];
    const int64_t pages = pages_of(l.window);
    expected += pages * c.kv_heads * c.page_size *
                (layout_vector_bytes(l.k, c.head_dim) + layout_vector_bytes(l.v, c.head_dim));
    expected +=
        (l.k == KvType::fp8 ? 4 * c.kv_heads : 0) + (l.v == KvType::fp8 ? 4 * c.kv_heads : 0);
    const KvLayerStorage& s = cache.layer(static_cast<int>(i));
    EXPECT_EQ(s.k.num_pages(), pages) << "layer " << i;
    EXPECT_EQ(s.v.num_pages(), pages) << "layer " << i;
    EXPECT_EQ(s.window, l.window);
    EXPECT_EQ(s.ring_pages, l.window == 0 ? 0 : ring_pages_of(l.window)) << "layer " << i;
  }
  if (any_full) expected += 4 * c.num_pages;
  for (int w : windows) expected += 4 * pages_of(w);
  EXPECT_EQ(cache.memory_bytes(), expected);

  // The same total from the buffers themselves (page_ids shared within a group: counted once).
  int64_t from_buffers = 0;
  std::set<const void*> ids_seen;
  for (int i = 0; i < cache.num_layers(); ++i) {
    const KvLayerStorage& s = cache.layer(i);
    from_buffers += s.k.bytes() + s.v.bytes();
    EXPECT_EQ(s.k.bytes(), s.k.data.nbytes() + (s.k.scales.defined() ? s.k.scales.nbytes() : 0));
    if (ids_seen.insert(s.page_ids.allocation().get()).second) from_buffers += s.page_ids.nbytes();
  }
  EXPECT_EQ(ids_seen.size(), windows.size() + (any_full ? 1 : 0));
  EXPECT_EQ(cache.memory_bytes(), from_buffers);
  EXPECT_EQ(KvCache::required_bytes(c), cache.memory_bytes());
  EXPECT_NE(cache.memory_report().find("total: " + std::to_string(expected) + " B"),
            std::string::npos)
      << cache.memory_report();
}
}  // namespace

TEST(KvCache, MemoryIsExact) {
  for (KvType t : {KvType::bf16, KvType::f16, KvType::f32, KvType::fp8, KvType::tq2, KvType::tq3,
                   KvType::tq4, KvType::tq5, KvType::tq6, KvType::tq8})
    for (int dim : {64, 128, 256, 512})
      EXPECT_EQ(kv_vector_bytes(t, dim), layout_vector_bytes(t, dim));
  KvCacheConfig c;
  c.kv_heads = 2;
  c.head_dim = 128;
  c.page_size = 16;
  c.num_pages = 50;
  c.max_sequences = 3;
  c.max_query_tokens = 8;
  c.layers = {
      {KvType::bf16, KvType::bf16, 0},
      {KvType::fp8, KvType::fp8, 0, 0.5f, 0.25f},
      {KvType::tq4, KvType::tq3, 0},
      {KvType::tq4, KvType::tq4, 100},  // ring of ceil(107 / 16) = 7 pages, 3 * 7 + 1 pages
      {KvType::f16, KvType::f16, 100},  // same window: the same page group
      {KvType::tq2, KvType::tq8, 37},   // ring of ceil(44 / 16) = 3 pages, 3 * 3 + 1 pages
      {KvType::fp8, KvType::fp8, 37},
      {KvType::f32, KvType::f32, 0},
  };
  check_memory(c);
  // Only sliding-window layers: the full-attention pool (num_pages) is not allocated at all.
  KvCacheConfig w = one_layer(KvType::tq4, KvType::tq4, 4, 64, 1000, 2, 100, 1);
  w.page_size = 32;
  check_memory(w);
  KvCache wc(w, S());
  EXPECT_LT(wc.memory_bytes(), 1000 * 4 * 32 * 2 * kv_vector_bytes(KvType::tq4, 64));
}

TEST(KvCache, PagesAreTakenAndReturned) {
  const int P = 16;
  KvCache cache(one_layer(KvType::bf16, KvType::bf16, 1, 64, 10, 2), S());
  EXPECT_EQ(cache.free_pages(), 10);
  const int a = cache.add_sequence();
  EXPECT_EQ(cache.length(a), 0);
  int64_t len = 0;
  for (int n : {5, 11, 1, 8, 0, 40}) {
    const int64_t before = cache.free_pages();
    KvStep step = cache.plan(std::vector<int>{a}, std::vector<int>{n});
    len += n;
    EXPECT_EQ(cache.length(a), len);
    EXPECT_EQ(cache.free_pages(), 10 - ceil_div(len, P)) << "after " << len;
    EXPECT_LE(cache.free_pages(), before);
    EXPECT_EQ(step.max_length, len);
    EXPECT_EQ(step.lengths.to_host<int32_t>(S()), std::vector<int32_t>{static_cast<int32_t>(len)});
    // Slots of the new tokens: page_table[p / P] * P + p % P.
    const auto row = table_row(step.page_table_of(0), 0);
    EXPECT_EQ(static_cast<int64_t>(row.size()), ceil_div(len, P));
    const auto slots = step.slots_of(0).to_host<int32_t>(S());
    ASSERT_EQ(static_cast<int>(slots.size()), n);
    for (int i = 0; i < n; ++i) {
      const int64_t p = len - n + i;
      EXPECT_EQ(slots[i], row[p / P] * P + p % P) << "position " << p;
    }
  }
  EXPECT_EQ(len, 65);  // 5 pages
  const int b = cache.add_sequence();
  EXPECT_NE(a, b);
  cache.plan(std::vector<int>{b}, std::vector<int>{60});  // 4 pages
  EXPECT_EQ(cache.free_pages(), 1);
  {
    // Every page is held by at most one sequence, and the held ones are exactly the missing ones.
    KvStep step = cache.plan(std::vector<int>{a, b}, std::vector<int>{0, 0});
    std::set<int32_t> held;
    for (int r = 0; r < 2; ++r) {
      const auto row = table_row(step.page_table_of(0), r);
      for (int n = 0; n < ceil_div(cache.length(r == 0 ? a : b), P); ++n) {
        EXPECT_TRUE(held.insert(row[n]).second) << "page " << row[n] << " shared";
        EXPECT_GE(row[n], 0);
        EXPECT_LT(row[n], 10);
      }
    }
    EXPECT_EQ(static_cast<int64_t>(held.size()), 10 - cache.free_pages());
  }
  // Too many pages: throws and changes nothing, also for the sequence that would have fit.
  EXPECT_TRUE(throws_error([&] { cache.plan(std::vector<int>{a}, std::vector<int>{32}); },
                           "[kv_cache]", {"out of cache pages"}));
  EXPECT_TRUE(throws_error(
      [&] {
        cache.plan(std::vector<int>{b, a}, std::vector<int>{4, 32});
      },
      "[kv_cache]", {"out of cache pages"}));
  EXPECT_EQ(cache.length(a), 65);
  EXPECT_EQ(cache.length(b), 60);
  EXPECT_EQ(cache.free_pages(), 1);
  // Two sequences together needing more than is free (each alone would fit).
  EXPECT_THROW(cache.plan(std::vector<int>{a, b}, std::vector<int>{16, 5}), Error);
  EXPECT_EQ(cache.free_pages(), 1);
  EXPECT_EQ(cache.length(a), 65);
  EXPECT_EQ(cache.length(b), 60);
  // Bad plans.
  EXPECT_THROW(cache.plan(std::vector<int>{a, a}, std::vector<int>{1, 1}), Error);
  EXPECT_THROW(cache.plan(std::vector<int>{a}, std::vector<int>{-1}), Error);
  EXPECT_THROW(cache.plan(std::vector<int>{a}, std::vector<int>{1, 1}), Error);
  EXPECT_THROW(cache.plan(std::vector<int>{}, std::vector<int>{}), Error);
  EXPECT_THROW(cache.plan(std::vector<int>{7}, std::vector<int>{1}), Error);
  EXPECT_EQ(cache.length(a), 65);
  // max_sequences is 2.
  EXPECT_TRUE(throws_error([&] { cache.add_sequence(); }, "[kv_cache]"));
  // Freeing returns every page; the freed sequence is unusable.
  cache.free_sequence(a);
  EXPECT_EQ(cache.free_pages(), 6);
  EXPECT_THROW(cache.length(a), Error);
  EXPECT_THROW(cache.plan(std::vector<int>{a}, std::vector<int>{1}), Error);
  EXPECT_THROW(cache.free_sequence(a), Error);
  cache.free_sequence(b);
  EXPECT_EQ(cache.free_pages(), 10);
  // The pool is whole again: one sequence can take all of it, and not one page more.
  const int c = cache.add_sequence();
  EXPECT_EQ(cache.length(c), 0);
  cache.plan(std::vector<int>{c}, std::vector<int>{160});
  EXPECT_EQ(cache.free_pages(), 0);
  EXPECT_THROW(cache.plan(std::vector<int>{c}, std::vector<int>{1}), Error);
  EXPECT_EQ(cache.length(c), 160);
}

namespace {
struct Fp8Append {
  std::vector<double> k, v;    // the inputs
  std::vector<int32_t> pages;  // the sequence's page-table row
};
// Appends 24 random tokens to a fresh sequence of a one-layer fp8 cache.
Fp8Append append_fp8(KvCache& cache) {
  const int seq = cache.add_sequence();
  std::vector<std::vector<double>> k(1), v(1);
  const KvStep step = append_random(cache, {seq}, {24}, 501, &k, &v);
  return {k[0], v[0], table_row(step.page_table_of(0), 0)};
}

// Checks that every stored fp8 value of the first `tokens` slots (one sequence, pages 0.. in
// the order the cache handed them out) is e4m3(x / scale[h]), saturating; returns how many
// saturated.
int check_fp8_store(const KvStore& s, const std::vector<int32_t>& pages,
                    const std::vector<double>& x, int64_t tokens) {
  const int H = s.kv_heads(), D = s.dim;
  const auto scales = s.scales.to_host<float>(S());
  const auto stored = read_dense(s, pages, tokens);
  int saturated = 0;
  for (int64_t e = 0; e < tokens * H * D; ++e) {
    const float scale = scales[static_cast<size_t>(e / D % H)];
    const uint8_t code = float_bits::f32_to_f8e4m3(static_cast<float>(x[e]) / scale);
    EXPECT_EQ(stored[e], static_cast<double>(float_bits::f8e4m3_to_f32(code) * scale)) << e;
    saturated += std::fabs(x[e]) / scale > 448.0;
  }
  return saturated;
}
}  // namespace

TEST(KvCache, Fp8ConfiguredScalesAreKept) {
  const int H = 2, D = 64;
  KvCacheConfig c = one_layer(KvType::fp8, KvType::fp8, H, D, 4);
  c.layers[0].k_fp8_scale = 0.005f;  // |x| > 2.24 saturates: a few percent of normal samples
  c.layers[0].v_fp8_scale = 0.02f;
  KvCache cache(c, S());
  const auto [k, v, row] = append_fp8(cache);
  EXPECT_EQ(cache.layer(0).k.scales.to_host<float>(S()), std::vector<float>(H, 0.005f));
  EXPECT_EQ(cache.layer(0).v.scales.to_host<float>(S()), std::vector<float>(H, 0.02f));
  EXPECT_GT(check_fp8_store(cache.layer(0).k, row, k, 24), 0);  // saturation was exercised
  EXPECT_EQ(check_fp8_store(cache.layer(0).v, row, v, 24), 0);
}

TEST(KvCache, Fp8ConfiguredScaleSurvivesCalibrationOfTheOther) {
  // K has a configured scale, V is calibrated from the first tokens: K's scale must stay.
  const int H = 2, D = 64;
  KvCacheConfig c = one_layer(KvType::fp8, KvType::fp8, H, D, 4);
  c.layers[0].k_fp8_scale = 0.005f;
  c.layers[0].v_fp8_scale = 0.0f;
  KvCache cache(c, S());
  const Fp8Append in = append_fp8(cache);
  const std::vector<double>& v = in.v;
  EXPECT_EQ(cache.layer(0).k.scales.to_host<float>(S()), std::vector<float>(H, 0.005f));
  const auto vs = cache.layer(0).v.scales.to_host<float>(S());
  for (int h = 0; h < H; ++h) {
    double amax = 0;
    for (int64_t e = h * D; e < static_cast<int64_t>(v.size()); e += H * D)
      for (int j = 0; j < D; ++j) amax = std::max(amax, std::fabs(v[e + j]));
    EXPECT_EQ(vs[h], static_cast<float>(amax) / 448.0f) << h;
  }
}

// ---- decode attention against the naive computation --------------------------------------------

TEST(DecodeAttention, DenseMatchesNaive) {
  const int H = 2, QH = 8;
  for (KvType type : {KvType::bf16, KvType::f16, KvType::f32, KvType::fp8}) {
    for (int D : {64, 128}) {
      for (int q_len : {1, 3}) {
        SCOPED_TRACE(::testing::Message()
                     << kv_type_name(type) << " D=" << D << " q_len=" << q_len);
        KvCache cache(one_layer(type, type, H, D, 16), S());
        const std::vector<int> seqs = {cache.add_sequence(), cache.add_sequence()};
        std::vector<std::vector<double>> in_k(2), in_v(2);
        // Three steps (the last one appends the query tokens): lengths 17 and 40.
        append_random(cache, seqs, {9, 20}, 11 * D + q_len, &in_k, &in_v);
        append_random(cache, seqs, {8 - q_len, 20 - q_len}, 13 * D + q_len, &in_k, &in_v);
        KvStep step = append_random(cache, seqs, {q_len, q_len}, 17 * D + q_len, &in_k, &in_v);
        ASSERT_EQ(cache.length(seqs[0]), 17);
        ASSERT_EQ(cache.length(seqs[1]), 40);

        const KvLayerStorage& layer = cache.layer(0);
        std::vector<HostSeq> stored(2);
        for (int b = 0; b < 2; ++b) {
          const auto row = table_row(step.page_table_of(0), b);
          stored[b].len = cache.length(seqs[b]);
          stored[b].k = read_dense(layer.k, row, stored[b].len);
          stored[b].v = read_dense(layer.v, row, stored[b].len);
        }
        // The stored values are the inputs converted to the cache type, in the right slots.
        std::vector<float> k_scale(H, 1.0f), v_scale(H, 1.0f);
        if (type == KvType::fp8) {
          k_scale = layer.k.scales.to_host<float>(S());
          v_scale = layer.v.scales.to_host<float>(S());
          // Calibrated from the first step's tokens (9 + 20 of them): amax / 448 per head.
          for (int h = 0; h < H; ++h) {
            double ak = 0, av = 0;
            for (int b = 0; b < 2; ++b)
              for (int t = 0; t < (b == 0 ? 9 : 20); ++t)
                for (int j = 0; j < D; ++j) {
                  ak = std::max(ak, std::fabs(in_k[b][(t * H + h) * D + j]));
                  av = std::max(av, std::fabs(in_v[b][(t * H + h) * D + j]));
                }
            EXPECT_EQ(k_scale[h], static_cast<float>(ak) / 448.0f);
            EXPECT_EQ(v_scale[h], static_cast<float>(av) / 448.0f);
          }
        }
        auto expected_stored = [&](double x, float scale) -> double {
          switch (type) {
            case KvType::bf16:
              return test::round_to(x, DType::bf16);
            case KvType::f16:
              return test::round_to(x, DType::f16);
            case KvType::f32:
              return test::round_to(x, DType::f32);
            default: {
              const uint8_t code = float_bits::f32_to_f8e4m3(static_cast<float>(x) / scale);
              return static_cast<double>(float_bits::f8e4m3_to_f32(code) * scale);
            }
          }
        };
        for (int b = 0; b < 2; ++b)
          for (size_t e = 0; e < in_k[b].size(); ++e) {
            const int h = static_cast<int>(e / D % H);
            ASSERT_EQ(stored[b].k[e], expected_stored(in_k[b][e], k_scale[h])) << b << " " << e;
            ASSERT_EQ(stored[b].v[e], expected_stored(in_v[b][e], v_scale[h])) << b << " " << e;
          }

        const DType q_dtype = type == KvType::bf16 || type == KvType::f32 ? DType::f32
                              : type == KvType::f16                       ? DType::f16
                                                                          : DType::bf16;
        Buffer q = test::random_buffer({2, q_len, QH, D}, q_dtype, 23 * D + q_len, S());
        Buffer out = Buffer::empty({2, q_len, QH, D}, DType::f32, S());
        test::poison(out, S());
        const float scale = 1.0f / std::sqrt(static_cast<float>(D));
        cache.attend(0, q, out, params_of(scale), step);
        const auto got = test::to_f64(out, S());
        const auto want = naive_attention(test::to_f64(q, S()), q_len, QH, stored, H, D,
                                          {static_cast<double>(scale)});
        // Both sides accumulate in double over the same values; the library rounds once to f32
        // (2^-24 relative to |out| <= max|v|). 1e-6 * max|v| leaves a 16x margin.
        const double vmax = std::max(max_abs(stored[0].v), max_abs(stored[1].v));
        EXPECT_TRUE(test::all_close(got, want, {1e-6 * vmax, 0.0}, out.shape()));

        // bf16 output: within one bf16 rounding (2^-8 relative) of the same result.
        Buffer out16 = Buffer::empty({2, q_len, QH, D}, DType::bf16, S());
        test::poison(out16, S());
        cache.attend(0, q, out16, params_of(scale), step);
        EXPECT_TRUE(
            test::all_close(test::to_f64(out16, S()), want, {1e-6 * vmax, 0x1p-8}, out.shape()));
      }
    }
  }
}

TEST(DecodeAttention, TurboQuantMatchesDequantizedNaive) {
  const int H = 2, QH = 8, q_len = 2;
  const std::pair<KvType, KvType> kTypes[] = {
      {KvType::tq4, KvType::tq4}, {KvType::tq4, KvType::tq3}, {KvType::tq2, KvType::tq8}};
  for (auto [kt, vt] : kTypes) {
    for (int D : {64, 128}) {
      SCOPED_TRACE(::testing::Message()
                   << kv_type_name(kt) << "/" << kv_type_name(vt) << " D=" << D);
      KvCache cache(one_layer(kt, vt, H, D, 16), S());
      const std::vector<int> seqs = {cache.add_sequence(), cache.add_sequence()};
      append_random(cache, seqs, {15, 38 - q_len}, 31 * D + static_cast<int>(kt));
      KvStep step = append_random(cache, seqs, {q_len, q_len}, 37 * D + static_cast<int>(vt));
      std::vector<HostSeq> deq(2);
      for (int b = 0; b < 2; ++b) {
        const auto row = table_row(step.page_table_of(0), b);
        deq[b].len = cache.length(seqs[b]);
        deq[b].k = read_tq(cache.layer(0).k, row, deq[b].len);
        deq[b].v = read_tq(cache.layer(0).v, row, deq[b].len);
        // Every token was written: no vector decodes to zeros.
        for (int64_t t = 0; t < deq[b].len * H; ++t)
          ASSERT_NE(max_abs(std::vector<double>(deq[b].v.begin() + t * D,
                                                deq[b].v.begin() + (t + 1) * D)),
                    0.0);
      }
      Buffer q = test::random_buffer({2, q_len, QH, D}, DType::f32, 41 * D, S());
      Buffer out = Buffer::empty({2, q_len, QH, D}, DType::f32, S());
      test::poison(out, S());
      const float scale = 1.0f / std::sqrt(static_cast<float>(D));
      cache.attend(0, q, out, params_of(scale), step);
      const auto got = test::to_f64(out, S());
      const auto want =
          naive_attention(test::to_f64(q, S()), q_len, QH, deq, H, D, {static_cast<double>(scale)});
      // The library works in the rotated domain in double; the dequantized vectors here went
      // through an f32 inverse rotation (log2(D) rounded stages), so logits and values carry
      // ~1e-6 relative error: 2e-5 * max|v| bounds the output difference.
      const double vmax = std::max(max_abs(deq[0].v), max_abs(deq[1].v));
      EXPECT_TRUE(test::all_close(got, want, {2e-5 * vmax, 0.0}, out.shape()));
    }
  }
}

TEST(DecodeAttention, WindowSoftcapSinks) {
  const int H = 2, QH = 8, D = 64, q_len = 3;
  KvCache cache(one_layer(KvType::bf16, KvType::bf16, H, D, 8), S());
  const std::vector<int> seqs = {cache.add_sequence(), cache.add_sequence()};
  append_random(cache, seqs, {40 - q_len, 9 - q_len}, 51);
  KvStep step = append_random(cache, seqs, {q_len, q_len}, 52);
  std::vector<HostSeq> stored(2);
  for (int b = 0; b < 2; ++b) {
    const auto row = table_row(step.page_table_of(0), b);
    stored[b].len = cache.length(seqs[b]);
    stored[b].k = read_dense(cache.layer(0).k, row, stored[b].len);
    stored[b].v = read_dense(cache.layer(0).v, row, stored[b].len);
  }
  Buffer q = test::random_buffer({2, q_len, QH, D}, DType::f32, 53, S());
  const auto qv = test::to_f64(q, S());
  // Logits of a few units so that a softcap of 2 matters.
  const float scale = 3.0f / std::sqrt(static_cast<float>(D));
  const std::vector<float> sinks = {2.5f, -1.0f, 0.0f, 4.0f, 1.0f, -3.0f, 6.0f, 0.5f};
  const std::vector<double> sinks_d(sinks.begin(), sinks.end());
  // Same argument as DenseMatchesNaive: one f32 rounding of a double result.
  const double tol = 1e-6 * std::max(max_abs(stored[0].v), max_abs(stored[1].v));

  auto run = [&](int window, float softcap, bool with_sinks) {
    DecodeAttentionParams p;
    p.scale = scale;
    p.softcap = softcap;
    p.window = window;
    if (with_sinks) p.sinks = f32(sinks);
    Buffer out = Buffer::empty({2, q_len, QH, D}, DType::f32, S());
    test::poison(out, S());
    cache.attend(0, q, out, p, step);
    return test::to_f64(out, S());
  };
  auto naive = [&](int window, double softcap, bool with_sinks) {
    return naive_attention(qv, q_len, QH, stored, H, D,
                           {scale, softcap, window, with_sinks ? sinks_d : std::vector<double>{}});
  };
  const auto plain = run(0, 0, false);
  ASSERT_TRUE(test::all_close(plain, naive(0, 0, false), {tol, 0}, {2, q_len, QH, D}));
  const struct {
    int window;
    float softcap;
    bool sinks;
    bool changes;  // the feature must move the output (else the comparison proves little)
  } kCases[] = {{5, 0, false, true},  {1, 0, false, true}, {50, 0, false, false},
                {0, 2, false, true},  {0, 0, true, true},  {5, 2, true, true},
                {9, 0.5f, true, true}};
  for (const auto& c : kCases) {
    SCOPED_TRACE(::testing::Message()
                 << "window " << c.window << " softcap " << c.softcap << " sinks " << c.sinks);
    const auto got = run(c.window, c.softcap, c.sinks);
    EXPECT_TRUE(
        test::all_close(got, naive(c.window, c.softcap, c.sinks), {tol, 0}, {2, q_len, QH, D}));
    if (c.changes)
      EXPECT_GT(max_diff(got, plain), 1000 * tol);
    else
      EXPECT_LE(max_diff(got, plain), tol);
  }
}

TEST(DecodeAttention, SlidingRingWraps) {
  const int H = 2, QH = 4, D = 64, P = 16;
  for (auto [window, mqt] : {std::pair{20, 1}, std::pair{30, 4}}) {
    SCOPED_TRACE(::testing::Message() << "window " << window << " max_query_tokens " << mqt);
    const int q_len = mqt;
    const int64_t ring = ceil_div(window + mqt - 1, P);
    KvCache cache(one_layer(KvType::bf16, KvType::bf16, H, D, 0, 2, window, mqt), S());
    const KvLayerStorage& layer = cache.layer(0);
    ASSERT_EQ(layer.ring_pages, ring);
    ASSERT_EQ(layer.k.num_pages(), 2 * ring + 1);
    const int a = cache.add_sequence(), b = cache.add_sequence();
    std::vector<std::vector<double>> in_k(2), in_v(2);
    std::vector<std::vector<double>> ka(1), va(1), kb(1), vb(1);
    // Sequence a: one token per step; sequence b: long appends that overrun the ring.
    uint64_t seed = 1;
    for (int t = 0; t < 100 - q_len; ++t) {
      KvStep s = append_random(cache, {a}, {1}, 100 + seed++, &ka, &va);
      EXPECT_LE(s.page_table_of(0).dim(1), ring);
    }
    for (int n : {50, 30, 20 - q_len}) {
      const int64_t start = cache.length(b);
      KvStep s = append_random(cache, {b}, {n}, 100 + seed++, &kb, &vb);
      // A token that this append pushes out of the ring again is written outside the ring (the
      // spare page); the others land at their ring slot, each ring slot written at most once
      // per step (no two writes of one launch race for a slot).
      const auto row = table_row(s.page_table_of(0), 0);
      const auto slots = s.slots_of(0).to_host<int32_t>(S());
      std::set<int32_t> ring_slots;
      for (int i = 0; i < n; ++i) {
        const int64_t p = start + i;
        if (p >= start + n - ring * P) {
          EXPECT_EQ(slots[i], row[(p / P) % ring] * P + p % P) << "position " << p;
          EXPECT_TRUE(ring_slots.insert(slots[i]).second) << "slot " << slots[i] << " twice";
        } else {
          EXPECT_EQ(std::count(row.begin(), row.end(), slots[i] / P), 0) << "position " << p;
          EXPECT_LT(slots[i], layer.k.num_pages() * P);
        }
      }
    }
    KvStep step = append_random(cache, {a, b}, {q_len, q_len}, 100 + seed++, &in_k, &in_v);
    for (int i = 0; i < 2; ++i) {
      auto& k = i == 0 ? ka[0] : kb[0];
      auto& v = i == 0 ? va[0] : vb[0];
      k.insert(k.end(), in_k[i].begin(), in_k[i].end());
      v.insert(v.end(), in_v[i].begin(), in_v[i].end());
    }
    ASSERT_EQ(cache.length(a), 100);
    ASSERT_EQ(cache.length(b), 100);
    // Each sequence holds exactly `ring` pages, distinct, none of them the spare page.
    ASSERT_EQ(step.page_table_of(0).dim(1), ring);
    std::set<int32_t> pages;
    for (int r = 0; r < 2; ++r)
      for (int32_t p : table_row(step.page_table_of(0), r)) {
        EXPECT_TRUE(pages.insert(p).second) << "page " << p << " held twice";
        EXPECT_GE(p, 0);
        EXPECT_LT(p, 2 * ring);
      }
    std::vector<HostSeq> host(2);
    for (int i = 0; i < 2; ++i) {
      host[i].len = 100;
      host[i].k = i == 0 ? ka[0] : kb[0];
      host[i].v = i == 0 ? va[0] : vb[0];
      for (double& x : host[i].k) x = test::round_to(x, DType::bf16);
      for (double& x : host[i].v) x = test::round_to(x, DType::bf16);
      // The ring holds the last ring * P tokens where the documented addressing says.
      const auto row = table_row(step.page_table_of(0), i);
      const auto held = read_dense(layer.k, row, 100, static_cast<int>(ring));
      for (int64_t t = 100 - ring * P; t < 100; ++t)
        for (int j = 0; j < H * D; ++j)
          ASSERT_EQ(held[t * H * D + j], host[i].k[t * H * D + j]) << "seq " << i << " token " << t;
    }
    Buffer q = test::random_buffer({2, q_len, QH, D}, DType::f32, 77, S());
    Buffer out = Buffer::empty({2, q_len, QH, D}, DType::f32, S());
    test::poison(out, S());
    const float scale = 1.0f / std::sqrt(static_cast<float>(D));
    cache.attend(0, q, out, params_of(scale), step);  // the layer's window applies
    const auto want =
        naive_attention(test::to_f64(q, S()), q_len, QH, host, H, D, {scale, 0, window});
    const double tol = 1e-6 * std::max(max_abs(host[0].v), max_abs(host[1].v));  // as above
    EXPECT_TRUE(test::all_close(test::to_f64(out, S()), want, {tol, 0}, out.shape()));
  }
}

TEST(DecodeAttention, SlidingRingAttendsWhileFilling) {
  const int H = 2, QH = 4, D = 64, window = 20;
  KvCache cache(one_layer(KvType::bf16, KvType::bf16, H, D, 0, 2, window, 1), S());
  const int a = cache.add_sequence();
  std::vector<std::vector<double>> ka(1), va(1);
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  for (int len = 1; len <= 40; ++len) {
    KvStep step = append_random(cache, {a}, {1}, 600 + len, &ka, &va);
    if (len != 1 && len != 15 && len != 16 && len != 17 && len != 33 && len != 40) continue;
    SCOPED_TRACE(::testing::Message() << "length " << len);
    std::vector<HostSeq> host(1);
    host[0].len = len;
    host[0].k = ka[0];
    host[0].v = va[0];
    for (double& x : host[0].k) x = test::round_to(x, DType::bf16);
    for (double& x : host[0].v) x = test::round_to(x, DType::bf16);
    Buffer q = test::random_buffer({1, 1, QH, D}, DType::f32, 700 + len, S());
    Buffer out = Buffer::empty({1, 1, QH, D}, DType::f32, S());
    test::poison(out, S());
    const std::string error = error_of([&] {
      cache.attend(0, q, out, params_of(scale), step);
      S().synchronize();
    });
    ASSERT_EQ(error, "no error");
    const auto want = naive_attention(test::to_f64(q, S()), 1, QH, host, H, D, {scale, 0, window});
    EXPECT_TRUE(test::all_close(test::to_f64(out, S()), want, {1e-6 * max_abs(host[0].v), 0},
                                out.shape()));  // as in DenseMatchesNaive
  }
}

TEST(DecodeAttention, MixedLayersShareOneStep) {
  // A full-attention bf16 layer and a sliding-window TurboQuant layer planned by the same steps:
  // each layer uses its own group's slots and page table.
  const int H = 2, QH = 4, D = 64, P = 16, q_len = 2, window = 20;
  KvCacheConfig c = one_layer(KvType::bf16, KvType::bf16, H, D, 12, 2, 0, q_len);
  c.layers.push_back({KvType::tq4, KvType::tq4, window});
  KvCache cache(c, S());
  const int64_t ring = ceil_div(window + q_len - 1, P);
  ASSERT_EQ(cache.layer(1).ring_pages, ring);
  const std::vector<int> seqs = {cache.add_sequence(), cache.add_sequence()};
  std::vector<std::vector<double>> in_k(2), in_v(2);
  KvStep step;
  uint64_t seed = 300;
  for (const std::vector<int>& counts :
       {std::vector<int>{30, 45}, std::vector<int>{q_len, q_len}, std::vector<int>{q_len, q_len}}) {
    step = cache.plan(seqs, counts);
    const int64_t total = counts[0] + counts[1];
    Buffer k = test::random_buffer({total, H, D}, DType::f32, seed++, S());
    Buffer v = test::random_buffer({total, H, D}, DType::f32, seed++, S());
    cache.append(0, k, v, step);
    cache.append(1, k, v, step);
    const auto kh = test::to_f64(k, S()), vh = test::to_f64(v, S());
    const size_t split = static_cast<size_t>(counts[0] * H * D);
    in_k[0].insert(in_k[0].end(), kh.begin(), kh.begin() + split);
    in_k[1].insert(in_k[1].end(), kh.begin() + split, kh.end());
    in_v[0].insert(in_v[0].end(), vh.begin(), vh.begin() + split);
    in_v[1].insert(in_v[1].end(), vh.begin() + split, vh.end());
  }
  ASSERT_EQ(cache.length(seqs[1]), 49);
  EXPECT_EQ(cache.free_pages(), 12 - 3 - 4);  // only the full-attention layer's pages
  EXPECT_EQ(step.page_table_of(1).dim(1), ring);
  Buffer q = test::random_buffer({2, q_len, QH, D}, DType::f32, 399, S());
  const auto qv = test::to_f64(q, S());
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));

  // Layer 0: all keys, the inputs rounded to bf16.
  std::vector<HostSeq> dense(2), ring_host(2);
  for (int b = 0; b < 2; ++b) {
    dense[b].len = ring_host[b].len = cache.length(seqs[b]);
    dense[b].k = in_k[b];
    dense[b].v = in_v[b];
    for (double& x : dense[b].k) x = test::round_to(x, DType::bf16);
    for (double& x : dense[b].v) x = test::round_to(x, DType::bf16);
  }
  Buffer out = Buffer::empty({2, q_len, QH, D}, DType::f32, S());
  test::poison(out, S());
  cache.attend(0, q, out, params_of(scale), step);
  const double tol0 = 1e-6 * std::max(max_abs(dense[0].v), max_abs(dense[1].v));  // see Dense
  EXPECT_TRUE(test::all_close(test::to_f64(out, S()),
                              naive_attention(qv, q_len, QH, dense, H, D, {scale}), {tol0, 0},
                              out.shape()));

  // Layer 1: the ring's slots dequantized in ring order; position p sits at ring slot
  // (p / P % ring) * P + p % P. Only the last `window` positions are needed.
  for (int b = 0; b < 2; ++b) {
    const auto row = table_row(step.page_table_of(1), b);
    const auto k_ring = read_tq(cache.layer(1).k, row, ring * P);
    const auto v_ring = read_tq(cache.layer(1).v, row, ring * P);
    const int64_t len = ring_host[b].len;
    ring_host[b].k.assign(static_cast<size_t>(len * H * D), 0.0);
    ring_host[b].v.assign(static_cast<size_t>(len * H * D), 0.0);
    for (int64_t p = len - window - q_len + 1; p < len; ++p) {
      const int64_t r = (p / P % ring) * P + p % P;
      std::copy_n(k_ring.begin() + r * H * D, H * D, ring_host[b].k.begin() + p * H * D);
      std::copy_n(v_ring.begin() + r * H * D, H * D, ring_host[b].v.begin() + p * H * D);
      // The ring holds the right token: its dequantization is near the input (TurboQuant 4-bit
      // relative MSE is ~0.01, so the cosine is well above 0.9).
      double dot = 0, n1 = 0, n2 = 0;
      for (int j = 0; j < H * D; ++j) {
        const double x = in_k[b][p * H * D + j], y = ring_host[b].k[p * H * D + j];
        dot += x * y;
        n1 += x * x;
        n2 += y * y;
      }
      EXPECT_GT(dot / std::sqrt(n1 * n2), 0.9) << "sequence " << b << " position " << p;
    }
  }
  test::poison(out, S());
  cache.attend(1, q, out, params_of(scale), step);  // the layer's window applies
  const double tol1 = 2e-5 * std::max(max_abs(ring_host[0].v), max_abs(ring_host[1].v));  // see TQ
  EXPECT_TRUE(test::all_close(test::to_f64(out, S()),
                              naive_attention(qv, q_len, QH, ring_host, H, D, {scale, 0, window}),
                              {tol1, 0}, out.shape()));
}

TEST(DecodeAttention, PagesOutOfOrder) {
  const int H = 2, QH = 6, D = 64, P = 16, NP = 8, q_len = 2;
  const std::vector<std::vector<int32_t>> pages = {{6, 1, 7, 3, 0}, {5, 2, 4}};
  const std::vector<int64_t> lens = {70, 40};
  for (auto [kt, vt] : {std::pair{KvType::bf16, KvType::bf16}, std::pair{KvType::f16, KvType::f16},
                        std::pair{KvType::tq4, KvType::tq3}}) {
    SCOPED_TRACE(::testing::Message() << kv_type_name(kt) << "/" << kv_type_name(vt));
    KvLayerStorage layer;
    layer.k = KvStore::allocate(kt, NP, H, P, D, S());
    layer.v = KvStore::allocate(vt, NP, H, P, D, S());
    std::vector<int32_t> ids(NP);
    std::iota(ids.begin(), ids.end(), 0);
    layer.page_ids = i32(ids);
    // Every token of both sequences in one append, in a shuffled order.
    std::vector<std::pair<int, int64_t>> tokens;
    for (int b = 0; b < 2; ++b)
      for (int64_t t = 0; t < lens[b]; ++t) tokens.push_back({b, t});
    std::shuffle(tokens.begin(), tokens.end(), std::mt19937(5));
    std::vector<int32_t> slots;
    for (auto [b, t] : tokens) slots.push_back(pages[b][t / P] * P + static_cast<int32_t>(t % P));
    const int64_t n = static_cast<int64_t>(tokens.size());
    Buffer k = test::random_buffer({n, H, D}, DType::bf16, 61, S());
    Buffer v = test::random_buffer({n, H, D}, DType::bf16, 62, S());
    kv_append(k, v, i32(slots), layer, S());
    const auto kh = test::to_f64(k, S()), vh = test::to_f64(v, S());
    std::vector<HostSeq> host(2);
    for (int b = 0; b < 2; ++b) {
      host[b].len = lens[b];
      host[b].k.resize(static_cast<size_t>(lens[b] * H * D));
      host[b].v.resize(static_cast<size_t>(lens[b] * H * D));
    }
    for (int64_t i = 0; i < n; ++i) {
      auto [b, t] = tokens[i];
      std::copy_n(kh.begin() + i * H * D, H * D, host[b].k.begin() + t * H * D);
      std::copy_n(vh.begin() + i * H * D, H * D, host[b].v.begin() + t * H * D);
    }
    // Dense: the bf16 inputs are stored (rounded to the store type), so the naive attention runs on
    // the inputs (checking write and read addressing together). TurboQuant: on the dequantized
    // vectors.
    for (int b = 0; b < 2; ++b) {
      if (kv_type_is_tq(kt)) {
        host[b].k = read_tq(layer.k, pages[b], lens[b]);
        host[b].v = read_tq(layer.v, pages[b], lens[b]);
      } else if (kt == KvType::f16) {  // a tiny bf16 input can round as an f16 subnormal
        for (double& x : host[b].k) x = test::round_to(x, DType::f16);
        for (double& x : host[b].v) x = test::round_to(x, DType::f16);
      }
    }
    const std::vector<int32_t> table = {6, 1, 7, 3, 0, 5, 2, 4, 0, 0};
    Buffer q = test::random_buffer({2, q_len, QH, D}, DType::bf16, 63, S());
    Buffer out = Buffer::empty({2, q_len, QH, D}, DType::f32, S());
    test::poison(out, S());
    const float scale = 1.0f / std::sqrt(static_cast<float>(D));
    decode_attention(q, layer, i32(table, {2, 5}),
                     i32({static_cast<int32_t>(lens[0]), static_cast<int32_t>(lens[1])}), out,
                     params_of(scale), S());
    const auto want = naive_attention(test::to_f64(q, S()), q_len, QH, host, H, D, {scale});
    // Dense: one f32 rounding (see DenseMatchesNaive); TurboQuant: f32 dequantization (see
    // TurboQuantMatchesDequantizedNaive).
    const double vmax = std::max(max_abs(host[0].v), max_abs(host[1].v));
    const double tol = (kv_type_is_tq(kt) ? 2e-5 : 1e-6) * vmax;
    EXPECT_TRUE(test::all_close(test::to_f64(out, S()), want, {tol, 0}, out.shape()));
  }
}

namespace {
// KvCache refuses K and V of different kinds; a KvLayerStorage built by hand may still hold
// them. kv_append and decode_attention must then either refuse it or compute the right thing.
void check_mixed_layer(std::initializer_list<std::pair<KvType, KvType>> types) {
  const int H = 2, QH = 4, D = 64, P = 16, NP = 2, len = 20;
  for (auto [kt, vt] : types) {
    SCOPED_TRACE(::testing::Message() << kv_type_name(kt) << "/" << kv_type_name(vt));
    KvLayerStorage layer;
    layer.k = KvStore::allocate(kt, NP, H, P, D, S());
    layer.v = KvStore::allocate(vt, NP, H, P, D, S());
    layer.page_ids = i32({0, 1});
    std::vector<int32_t> slots(len);
    std::iota(slots.begin(), slots.end(), 0);
    Buffer k = test::random_buffer({len, H, D}, DType::f32, 701, S());
    Buffer v = test::random_buffer({len, H, D}, DType::f32, 702, S());
    std::string error = error_of([&] {
      kv_append(k, v, i32(slots), layer, S());
      S().synchronize();
    });
    if (error != "no error") {
      EXPECT_TRUE(error.starts_with("[kv_append]")) << error;
      continue;
    }
    Buffer q = test::random_buffer({1, 1, QH, D}, DType::f32, 703, S());
    Buffer out = Buffer::empty({1, 1, QH, D}, DType::f32, S());
    test::poison(out, S());
    error = error_of([&] {
      decode_attention(q, layer, i32({0, 1}, {1, 2}), i32({len}), out, params_of(0.125f), S());
      S().synchronize();
    });
    if (error != "no error") {
      EXPECT_TRUE(error.starts_with("[decode_attention]")) << error;
      continue;
    }
    std::vector<HostSeq> host(1);
    host[0].len = len;
    const std::vector<int32_t> pages = {0, 1};
    host[0].k = kv_type_is_tq(kt) ? read_tq(layer.k, pages, len) : read_dense(layer.k, pages, len);
    host[0].v = kv_type_is_tq(vt) ? read_tq(layer.v, pages, len) : read_dense(layer.v, pages, len);
    const double tol = 2e-5 * max_abs(host[0].v);  // as TurboQuantMatchesDequantizedNaive
    EXPECT_TRUE(test::all_close(test::to_f64(out, S()),
                                naive_attention(test::to_f64(q, S()), 1, QH, host, H, D, {0.125}),
                                {tol, 0}, out.shape()));
  }
}
}  // namespace

TEST(DecodeAttention, HandBuiltMixedDenseLayerIsRefusedOrCorrect) {
  check_mixed_layer({{KvType::fp8, KvType::bf16}, {KvType::bf16, KvType::f16}});
}

TEST(DecodeAttention, HandBuiltMixedTqDenseLayerIsRefusedOrCorrect) {
  check_mixed_layer({{KvType::bf16, KvType::tq4}, {KvType::tq4, KvType::bf16}});
}

TEST(DecodeAttention, Deterministic) {
  const int H = 2, QH = 8, D = 128, q_len = 2;
  for (auto [kt, vt] :
       {std::pair{KvType::bf16, KvType::bf16}, std::pair{KvType::tq4, KvType::tq3}}) {
    KvCache cache(one_layer(kt, vt, H, D, 16), S());
    const std::vector<int> seqs = {cache.add_sequence(), cache.add_sequence()};
    append_random(cache, seqs, {15, 38}, 81);
    KvStep step = append_random(cache, seqs, {q_len, q_len}, 82);
    Buffer q = test::random_buffer({2, q_len, QH, D}, DType::bf16, 83, S());
    DecodeAttentionParams p;
    p.scale = 0.1f;
    p.softcap = 5.0f;
    p.sinks = test::random_buffer({QH}, DType::f32, 84, S());
    Buffer out1 = Buffer::empty({2, q_len, QH, D}, DType::f32, S());
    Buffer out2 = Buffer::empty({2, q_len, QH, D}, DType::f32, S());
    test::poison(out1, S());
    fill(out2, 0.0, S());
    cache.attend(0, q, out1, p, step);
    cache.attend(0, q, out2, p, step);
    EXPECT_TRUE(test::same_bits(out1, out2, S(), S())) << kv_type_name(kt);
    const auto o = test::to_f64(out1, S());
    EXPECT_TRUE(std::all_of(o.begin(), o.end(), [](double x) { return std::isfinite(x); }));
  }
}

// ---- errors ------------------------------------------------------------------------------------

TEST(DecodeAttention, Errors) {
  const int H = 2, D = 64, P = 16, NP = 4;
  KvLayerStorage layer;
  layer.k = KvStore::allocate(KvType::bf16, NP, H, P, D, S());
  layer.v = KvStore::allocate(KvType::bf16, NP, H, P, D, S());
  layer.page_ids = i32({0, 1, 2, 3});
  Buffer k = test::random_buffer({40, H, D}, DType::f32, 91, S());
  std::vector<int32_t> slots(40);
  std::iota(slots.begin(), slots.end(), 0);
  kv_append(k, k, i32(slots), layer, S());
  S().synchronize();
  const DecodeAttentionParams params = params_of(0.125f);
  auto q_of = [&](int64_t batch, int64_t q_len, int64_t q_heads) {
    return test::random_buffer({batch, q_len, q_heads, D}, DType::f32, 92, S());
  };
  auto out_of = [&](const Buffer& q, DType dtype = DType::f32) {
    return Buffer::empty(q.shape(), dtype, S());
  };
  // Attention then synchronisation: errors found on the device surface at the latter.
  auto attend = [&](const Buffer& q, const Buffer& table, const Buffer& lengths, const Buffer& out,
                    const DecodeAttentionParams& p) {
    decode_attention(q, layer, table, lengths, out, p, S());
    S().synchronize();
  };
  const Buffer q1 = q_of(1, 1, 4), q3 = q_of(1, 3, 4);
  const Buffer table = i32({0, 1, 2}, {1, 3});
  // Sanity: the good call works.
  attend(q3, table, i32({40}), out_of(q3), params);

  // Empty sequence, length below q_len, negative length, longer than the table.
  EXPECT_TRUE(throws_error([&] { attend(q1, table, i32({0}), out_of(q1), params); },
                           "[decode_attention] index", {"out of range", "lengths/page_table"}));
  EXPECT_TRUE(throws_error([&] { attend(q3, table, i32({2}), out_of(q3), params); },
                           "[decode_attention] index", {"out of range"}));
  EXPECT_TRUE(throws_error([&] { attend(q1, table, i32({-5}), out_of(q1), params); },
                           "[decode_attention] index", {"out of range"}));
  EXPECT_TRUE(throws_error([&] { attend(q1, table, i32({49}), out_of(q1), params); },
                           "[decode_attention]", {"out of range"}));
  // A page id outside [0, num_pages) among the pages the queries read.
  for (int32_t bad : {NP, -1, 1 << 20}) {
    EXPECT_TRUE(throws_error(
        [&] {
          attend(q1, i32({0, bad}, {1, 2}), i32({20}), out_of(q1), params);
        },
        "[decode_attention] index", {"out of range"}))
        << bad;
  }
  // Shapes and dtypes, refused at the call.
  const Buffer q9 = q_of(1, 9, 4);
  EXPECT_TRUE(throws_error([&] { attend(q9, table, i32({40}), out_of(q9), params); },
                           "[decode_attention]", {"q_len 9"}));
  const Buffer q0 = Buffer::empty({1, 0, 4, D}, DType::f32, S());
  EXPECT_THROW(attend(q0, table, i32({40}), out_of(q0), params), Error);
  const Buffer odd = q_of(1, 1, 3);  // 3 query heads over 2 kv heads
  EXPECT_TRUE(throws_error([&] { attend(odd, table, i32({40}), out_of(odd), params); },
                           "[decode_attention]", {"multiple"}));
  EXPECT_THROW(attend(q_of(1, 1, 4).reshape({1, 1, 2, 2 * D}), table, i32({40}),
                      Buffer::empty({1, 1, 2, 2 * D}, DType::f32, S()), params),
               Error);  // head_dim mismatch
  EXPECT_TRUE(throws_error([&] { attend(q1, table, i32({40}), out_of(q1, DType::f16), params); },
                           "[decode_attention]", {"output dtype"}));
  EXPECT_THROW(attend(q1, table, i32({40}), Buffer::empty({1, 1, 8, D}, DType::f32, S()), params),
               Error);  // out shape differs from q
  EXPECT_THROW(attend(q1, table, i32({40, 40}), out_of(q1), params), Error);
  EXPECT_THROW(attend(q1, i32({0, 1, 2, 0, 1, 2}, {2, 3}), i32({40}), out_of(q1), params), Error);
  EXPECT_THROW(attend(q_of(2, 1, 4), table, i32({40, 40}), out_of(q_of(2, 1, 4)), params), Error);
  EXPECT_THROW(attend(q1, i32({0, 1, 2}), i32({40}), out_of(q1), params), Error);  // rank-1 table
  EXPECT_THROW(attend(q1, table, i32({40}), out_of(q1), params_of(0.0f)), Error);
  EXPECT_THROW(attend(q1, table, i32({40}), out_of(q1), params_of(0.1f, -1.0f)), Error);
  {
    DecodeAttentionParams p = params;
    p.sinks = f32({1, 2, 3});  // not [q_heads]
    EXPECT_THROW(attend(q1, table, i32({40}), out_of(q1), p), Error);
  }
  // Nothing is left pending on the stream.
  EXPECT_EQ(error_of([] { S().synchronize(); }), "no error");
}

TEST(KvAppend, BadSlotIsReportedAndWritesNothing) {
  const int H = 2, D = 64, P = 16, NP = 4;
  KvLayerStorage layer;
  layer.k = KvStore::allocate(KvType::bf16, NP, H, P, D, S());
  layer.v = KvStore::allocate(KvType::bf16, NP, H, P, D, S());
  layer.page_ids = i32({0, 1, 2, 3});
  Buffer k = test::random_buffer({3, H, D}, DType::f32, 95, S());
  kv_append(k, k, i32({5, NP * P, 7}), layer, S(), {}, "layer 3");
  EXPECT_TRUE(
      throws_error([] { S().synchronize(); }, "[kv_append] index 64 out of range", {"layer 3"}));
  const auto data = test::to_f64(layer.k.data, S());
  const auto kv = test::to_f64(k, S());
  // Token 0 (slot 5) and token 2 (slot 7) landed; head 0 of page 0 is rows 0..15.
  for (int j = 0; j < D; ++j) {
    EXPECT_EQ(data[5 * D + j], test::round_to(kv[j], DType::bf16));
    EXPECT_EQ(data[7 * D + j], test::round_to(kv[(2 * H) * D + j], DType::bf16));
  }
  kv_append(k.slice(0, 0, 1), k.slice(0, 0, 1), i32({-1}), layer, S());
  EXPECT_TRUE(throws_error([] { S().synchronize(); }, "[kv_append] index -1 out of range"));
  // The same for TurboQuant stores.
  KvLayerStorage tq;
  tq.k = KvStore::allocate(KvType::tq4, NP, H, P, D, S());
  tq.v = KvStore::allocate(KvType::tq3, NP, H, P, D, S());
  tq.page_ids = i32({0, 1, 2, 3});
  kv_append(k, k, i32({5, NP * P, 7}), tq, S());
  EXPECT_TRUE(throws_error([] { S().synchronize(); }, "[", {"out of range"}));
  // Shape errors at the call.
  EXPECT_THROW(kv_append(k, k, i32({1, 2}), layer, S()), Error);
  EXPECT_THROW(
      kv_append(k.reshape({3, 1, 2 * D}), k.reshape({3, 1, 2 * D}), i32({1, 2, 3}), layer, S()),
      Error);
  EXPECT_EQ(error_of([] { S().synchronize(); }), "no error");
}

TEST(KvAppend, NonFiniteVectorIsStoredAsZeros) {
  const int H = 2, D = 64, P = 16, NP = 2;
  for (KvType type : {KvType::bf16, KvType::f16, KvType::fp8, KvType::tq4}) {
    SCOPED_TRACE(kv_type_name(type));
    KvLayerStorage layer;
    layer.k = KvStore::allocate(type, NP, H, P, D, S());
    layer.v = KvStore::allocate(type, NP, H, P, D, S());
    layer.page_ids = i32({0, 1});
    // First fill slots 3 and 20 with finite values, then overwrite them with token 1 bad in
    // (K, head 0): that vector must end up as zeros, not keep its old bytes.
    Buffer k = test::random_buffer({2, H, D}, DType::f32, 97, S());
    Buffer v = test::random_buffer({2, H, D}, DType::f32, 98, S());
    kv_append(k, v, i32({3, 20}), layer, S());
    S().synchronize();
    for (float bad : {NAN, INFINITY}) {
      Buffer k2 = test::random_buffer({2, H, D}, DType::f32, 99, S());
      fill(k2.slice(0, 1, 2).slice(1, 0, 1).slice(2, 5, 6), bad, S());
      kv_append(k2, v, i32({3, 20}), layer, S(), {}, "layer 7");
      EXPECT_TRUE(throws_error([] { S().synchronize(); }, "[", {"non-finite", "layer 7"}));
      // Rows are [pages, heads, page_size]: slot 20 = page 1, offset 4.
      const int64_t bad_row = (1 * H + 0) * P + 4, good_row = (1 * H + 1) * P + 4;
      const int64_t row_bytes = layer.k.data.nbytes() / (NP * H * P);
      const auto kb = raw_bytes(layer.k.data);
      auto row_is_zero = [&](const std::vector<uint8_t>& bytes, int64_t row) {
        return std::all_of(bytes.begin() + row * row_bytes, bytes.begin() + (row + 1) * row_bytes,
                           [](uint8_t x) { return x == 0; });
      };
      EXPECT_TRUE(row_is_zero(kb, bad_row));
      EXPECT_FALSE(row_is_zero(kb, good_row));                      // the other head of the token
      EXPECT_FALSE(row_is_zero(kb, (0 * H + 0) * P + 3));           // the other token
      EXPECT_FALSE(row_is_zero(raw_bytes(layer.v.data), bad_row));  // its V
      if (kv_type_is_tq(type)) {
        EXPECT_EQ(layer.k.scales.to_host<uint16_t>(S())[bad_row], 0);
      } else {
        const auto kv = test::to_f64(k2, S());  // the good head stores the new token
        const auto stored = test::to_f64(layer.k.data, S());
        const float s = type == KvType::fp8 ? layer.k.scales.to_host<float>(S())[1] : 1.0f;
        for (int j = 0; j < D; ++j) {
          const double x = kv[(1 * H + 1) * D + j];
          const double want = type == KvType::bf16  ? test::round_to(x, DType::bf16)
                              : type == KvType::f16 ? test::round_to(x, DType::f16)
                                                    : test::round_to(x / s, DType::f8e4m3);
          ASSERT_EQ(stored[good_row * D + j], want) << j;
        }
      }
    }
  }
}

TEST(KvAppend, F16SaturatesAndFp8CalibrationSkipsNonFinite) {
  const int H = 2, D = 64, P = 16;
  // Two tokens; head 0 all zeros, head 1: token 0 holds -3 (its largest |value|) and 1e5,
  // token 1 holds a NaN.
  std::vector<float> x(2 * H * D, 0.0f);
  for (int j = 0; j < D; ++j) x[(0 * H + 1) * D + j] = 0.5f;
  x[(0 * H + 1) * D + 3] = -3.0f;
  x[(1 * H + 1) * D + 7] = NAN;
  Buffer in = Buffer::from_host(std::span<const float>(x), {2, H, D}, DType::f32, S());
  KvLayerStorage fp8;
  fp8.k = KvStore::allocate(KvType::fp8, 1, H, P, D, S());
  fp8.v = KvStore::allocate(KvType::fp8, 1, H, P, D, S());
  fp8.page_ids = i32({0});
  kv_append(in, in, i32({0, 1}), fp8, S(), {true, true});
  EXPECT_TRUE(throws_error([] { S().synchronize(); }, "[kv_append] non-finite value nan"));
  // amax / 448 per head over the finite values; 1 where a head's amax is 0.
  EXPECT_EQ(fp8.k.scales.to_host<float>(S()), (std::vector<float>{1.0f, 3.0f / 448.0f}));
  EXPECT_EQ(fp8.v.scales.to_host<float>(S()), (std::vector<float>{1.0f, 3.0f / 448.0f}));
  const auto stored = test::to_f64(fp8.k.data, S());  // [1, H, P, D]: row (h * P + slot)
  EXPECT_EQ(stored[(1 * P + 0) * D + 3], -448.0);     // -3 / scale is the largest code
  EXPECT_EQ(stored[(1 * P + 0) * D + 0], test::round_to(0.5 / (3.0f / 448.0f), DType::f8e4m3));

  // f16 stores saturate at +-65504 instead of holding an infinity.
  std::vector<float> big(H * D, 1.0f);
  big[0] = 1e5f;
  big[1] = -1e9f;
  big[2] = 65504.0f;
  KvLayerStorage f16;
  f16.k = KvStore::allocate(KvType::f16, 1, H, P, D, S());
  f16.v = KvStore::allocate(KvType::f16, 1, H, P, D, S());
  f16.page_ids = i32({0});
  Buffer b = Buffer::from_host(std::span<const float>(big), {1, H, D}, DType::f32, S());
  kv_append(b, b, i32({5}), f16, S());
  S().synchronize();
  const auto h = test::to_f64(f16.k.data, S());
  EXPECT_EQ(h[5 * D + 0], 65504.0);
  EXPECT_EQ(h[5 * D + 1], -65504.0);
  EXPECT_EQ(h[5 * D + 2], 65504.0);
  EXPECT_EQ(h[5 * D + 3], 1.0);
}

TEST(KvCache, ConfigErrors) {
  KvCacheConfig good = one_layer(KvType::tq4, KvType::tq3, 2, 64, 8);
  auto build = [](const KvCacheConfig& c) { KvCache cache(c, S()); };
  EXPECT_NO_THROW(build(good));
  for (auto [k, v] : {std::pair{KvType::bf16, KvType::tq4}, std::pair{KvType::tq4, KvType::bf16},
                      std::pair{KvType::bf16, KvType::fp8}, std::pair{KvType::f16, KvType::bf16}}) {
    EXPECT_TRUE(throws_error([&] { build(one_layer(k, v, 2, 64, 8)); }, "[kv_cache]",
                             {kv_type_name(k), kv_type_name(v)}))
        << kv_type_name(k) << "/" << kv_type_name(v);
  }
  auto with = [&](auto change) {
    KvCacheConfig c = one_layer(KvType::bf16, KvType::bf16, 2, 64, 8);
    change(c);
    return c;
  };
  EXPECT_THROW(build(with([](KvCacheConfig& c) { c.page_size = 24; })), Error);
  EXPECT_THROW(build(with([](KvCacheConfig& c) { c.page_size = 8; })), Error);
  EXPECT_THROW(build(with([](KvCacheConfig& c) { c.head_dim = 96; })), Error);
  EXPECT_THROW(build(with([](KvCacheConfig& c) { c.num_pages = 0; })), Error);
  EXPECT_THROW(build(with([](KvCacheConfig& c) { c.max_query_tokens = 9; })), Error);
  EXPECT_THROW(build(with([](KvCacheConfig& c) { c.max_sequences = 0; })), Error);
  EXPECT_THROW(build(with([](KvCacheConfig& c) { c.layers.clear(); })), Error);
  EXPECT_THROW(build(with([](KvCacheConfig& c) { c.layers[0].window = -1; })), Error);
  KvCache cache(good, S());
  EXPECT_THROW(cache.layer(1), Error);
  EXPECT_THROW(cache.layer(-1), Error);
}
