// Prefill attention on the GPU, bf16 in and out, 32 query / 8 kv heads (GQA):
//  - prefill_attention over dense variable-length K/V: head_dim 64, 128, 256, 512; L (query =
//    key length) 1K, 4K, 16K; batch 1 and 4 (four sequences of L in one varlen call); causal and
//    non-causal. head_dim 512 at 16K is timed at batch 1 only: batch 4 there would take about
//    as long as the rest of the bench together (a "skipped" line names those cases).
//  - chunked prefill of one sequence over its paged cache: prefix 16K, chunks of 512 and 2048,
//    head_dim 128; prefill_attention_cached over a bf16 and a tq4 layer (pages of 64 slots,
//    scattered by a shuffled page table, filled by kv_append from random bf16 K/V), and
//    prefill_attention over the same keys densely. Printed: tq4 / bf16 (target <= 1.3) and the
//    staging cost, cached bf16 minus dense.
// FLOPs: 4·L²·D·q_heads per sequence (two matmuls), halved for causal; a cached chunk of L after
// a prefix P counts 4·D·q_heads·(L·P + L(L+1)/2), the (query, key) pairs it sees. Bytes: q, k, v
// read once and out written once (cached: the prefix as stored, plus the chunk).
// Peer: PyTorch SDPA, its flash and cuDNN backends each on its own, on [batch, heads, L, D] bf16
// (bench/peers/torch_attention_prefill.py, same case names); scripts/bench_summary.py pairs the
// lines by name and prints our speed over each backend's (_vs_torch_flash, _vs_torch_cudnn:
// their µs / ours).
// Before timing, every head_dim is checked causal and non-causal on two short sequences against
// the CPU reference on copies of the inputs, each cache type likewise on a short chunk over a
// short cached prefix, and the long bf16 cached output against the dense one; a mismatch prints
// FAIL and exits 1. Like the peer, every run reads the same inputs (attention is compute-bound:
// each K/V block is read once per query block anyway). Both sides are timed as CUDA graph
// replays, as in the decode bench (eager time alongside for the cases under 2e11 FLOPs, where
// launch cost shows). Runs by the case's FLOPs, the same in the peer: 50 (warm-up 5), 20 (3)
// from 2e11, 10 (2) from 2e12.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <functional>
#include <numeric>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "harness.h"

using namespace mlxn;
using namespace mlxn::bench;

namespace {

constexpr int kQHeads = 32, kKvHeads = 8;
constexpr int kPage = 64;
constexpr double kEagerBelowFlops = 2e11;

const auto g_start = std::chrono::steady_clock::now();

// Progress on stderr: where the run's time goes.
void progress(const std::string& what) {
  std::fprintf(stderr, "%.1f s: %s\n",
               std::chrono::duration<double>(std::chrono::steady_clock::now() - g_start).count(),
               what.c_str());
}

// A failed check: FAIL on stdout and stderr, then the harness's validation error (exit 1).
void fail_unless(bool ok, const std::string& what) {
  if (ok) return;
  std::printf("FAIL %s\n", what.c_str());
  std::fflush(stdout);
  std::fprintf(stderr, "FAIL %s\n", what.c_str());
  validate(false, what);
}

struct Reps {
  int warmup, runs;
};
// Fewer runs for long cases (a 16K case runs for milliseconds; its spread is small).
Reps reps_for(double flops) {
  if (flops >= 2e12) return {2, 10};
  if (flops >= 2e11) return {3, 20};
  return {5, 50};
}

struct Timed {
  Timing timing;
  const char* mode = "graph";
  double eager_us = 0;  // 0: not timed
};

// `op` timed as a CUDA graph replay (eagerly when capture fails, noted in the mode).
Timed time_op(const Stream& s, const std::function<void()>& op, double flops,
              const std::string& name) {
  const Reps r = reps_for(flops);
  Timed t;
  std::optional<Graph> graph;
  try {
    graph.emplace(Graph::capture(s, op));
  } catch (const Error& e) {
    progress(name + ": graph capture failed, timed eagerly: " + e.what());
    s.synchronize();
    t.mode = "eager";
  }
  if (graph) {
    t.timing = time_device(
        s, [&](int) { graph->replay(s); }, r.warmup, r.runs);
  } else {
    t.timing = time_device(
        s, [&](int) { op(); }, r.warmup, r.runs);
  }
  if (flops < kEagerBelowFlops) {
    t.eager_us = time_device(
                     s, [&](int) { op(); }, r.warmup, r.runs)
                     .median_us;
  }
  return t;
}

Buffer random_bf16(Shape shape, uint64_t seed, const Stream& s) {
  Buffer b = Buffer::empty(std::move(shape), DType::bf16, s);
  fill_random(b, {Distribution::normal, seed, 0, 1}, s);
  return b;
}

Buffer i32_buffer(const std::vector<int32_t>& v, const Stream& s) {
  return Buffer::from_host(std::span<const int32_t>(v), {static_cast<int64_t>(v.size())},
                           DType::i32, s);
}

// A CPU copy of a GPU buffer (contiguous).
Buffer on_cpu(const Buffer& b, const Stream& gpu, const Stream& cpu) {
  Buffer h = Buffer::empty(b.shape(), b.dtype(), cpu);
  copy(b, h, gpu);
  return h;
}

std::vector<float> host_f32(const Buffer& b, const Stream& s) {
  if (b.dtype() == DType::f32) return b.to_host<float>(s);
  Buffer f = Buffer::empty(b.shape(), DType::f32, s);
  cast(b, f, s);
  return f.to_host<float>(s);
}

// Output [tokens, heads, dim] against a reference, one (token, head) vector at a time:
// max |got - want| <= 2e-2 * max |want| of that vector + 2e-3 * max |want| of the whole output.
// Why this bound for a bf16 output: the reference keeps f32 (its sums in f64); the kernel rounds
// its output to bf16 (2^-9 relative) and, like any flash-style kernel, multiplies V by
// probabilities rounded to bf16 (each off by at most 2^-9 relatively, with random signs), which
// moves an output by far less than 1 % of the values it averages. The bound is relative to each
// vector rather than to the whole output's peak because the peak comes from the first causal
// rows (a query that sees one key returns that value, ~3), while a row averaging hundreds of
// keys is ~0.1: 2 % of the peak (~0.06) is half of such a row. The small term of the peak covers
// rows that average to nearly zero. A wrong mask, a skipped key block or a wrong kv head
// moves a vector by a sizeable part of itself and fails.
void check_close(const std::vector<float>& got, const std::vector<float>& want, int heads, int dim,
                 const std::string& name) {
  double peak = 0;
  for (float w : want) peak = std::max(peak, std::fabs(double{w}));
  double worst = 0, worst_err = 0, worst_bound = 0;
  size_t worst_vec = 0;
  for (size_t v0 = 0; v0 < want.size(); v0 += static_cast<size_t>(dim)) {
    double vmax = 0;
    for (int j = 0; j < dim; ++j) vmax = std::max(vmax, std::fabs(double{want[v0 + j]}));
    const double bound = 2e-2 * vmax + 2e-3 * peak;
    for (int j = 0; j < dim; ++j) {
      const double g = got[v0 + j];
      const double err = std::isfinite(g) ? std::fabs(g - want[v0 + j]) : INFINITY;
      const double ratio = bound > 0 ? err / bound : (err > 0 ? INFINITY : 0);
      if (!(ratio <= worst)) {
        worst = ratio, worst_err = err, worst_bound = bound;
        worst_vec = v0 / static_cast<size_t>(dim);
      }
    }
  }
  const std::string at = "token " + std::to_string(worst_vec / static_cast<size_t>(heads)) +
                         " head " + std::to_string(worst_vec % static_cast<size_t>(heads));
  fail_unless(worst <= 1.0, name + ": max error " + std::to_string(worst_err) + " > bound " +
                                std::to_string(worst_bound) + " at " + at);
  progress("checked " + name + ": worst error " + std::to_string(worst_err) + " (" +
           std::to_string(100 * worst) + " % of its bound) at " + at);
}

// prefill_attention on two short sequences (160 and 41 tokens, q = k) against the CPU
// reference on copies of the inputs.
void check_dense(int dim, bool causal, const Stream& s, const Stream& cpu) {
  const std::vector<int32_t> cu = {0, 160, 201};
  const int64_t total = cu.back();
  Buffer q = random_bf16({total, kQHeads, dim}, 101, s);
  Buffer k = random_bf16({total, kKvHeads, dim}, 102, s);
  Buffer v = random_bf16({total, kKvHeads, dim}, 103, s);
  Buffer cu_b = i32_buffer(cu, s);
  Buffer out = Buffer::empty({total, kQHeads, dim}, DType::bf16, s);
  PrefillAttentionParams p;
  p.scale = 1.0f / std::sqrt(static_cast<float>(dim));
  p.causal = causal;
  prefill_attention(q, k, v, cu_b, cu_b, out, p, s);
  Buffer ref = Buffer::empty(out.shape(), DType::f32, cpu);
  Buffer cu_c = on_cpu(cu_b, s, cpu);
  prefill_attention(on_cpu(q, s, cpu), on_cpu(k, s, cpu), on_cpu(v, s, cpu), cu_c, cu_c, ref, p,
                    cpu);
  cpu.synchronize();
  check_close(host_f32(out, s), ref.to_host<float>(cpu), kQHeads, dim,
              "prefill_check_d" + std::to_string(dim) + (causal ? "_causal" : "_noncausal"));
}

// ---- chunked prefill over the paged cache ----------------------------------------------------

KvLayerStorage make_layer(KvType type, int64_t pages, int dim, const Stream& s) {
  KvLayerStorage l;
  l.k = KvStore::allocate(type, pages, kKvHeads, kPage, dim, s);
  l.v = KvStore::allocate(type, pages, kKvHeads, kPage, dim, s);
  std::vector<int32_t> ids(static_cast<size_t>(pages));
  std::iota(ids.begin(), ids.end(), 0);
  l.page_ids = i32_buffer(ids, s);
  return l;
}

// A shuffled page table of `pages` entries: logical page n is table[n].
std::vector<int32_t> shuffled_table(int64_t pages) {
  std::vector<int32_t> table(static_cast<size_t>(pages));
  std::iota(table.begin(), table.end(), 0);
  std::shuffle(table.begin(), table.end(), std::mt19937(7));
  return table;
}

// Writes positions [0, count) of the sequence from k[0:count], v[0:count].
void fill_prefix(const KvLayerStorage& l, const std::vector<int32_t>& table, const Buffer& k,
                 const Buffer& v, int64_t count, const Stream& s) {
  std::vector<int32_t> slots(static_cast<size_t>(count));
  for (int64_t t = 0; t < count; ++t)
    slots[static_cast<size_t>(t)] =
        table[static_cast<size_t>(t / kPage)] * kPage + static_cast<int32_t>(t % kPage);
  kv_append(k.slice(0, 0, count), v.slice(0, 0, count), i32_buffer(slots, s), l, s);
}

double chunk_flops(int64_t chunk, int64_t prefix, int dim) {
  const double pairs = static_cast<double>(chunk) * static_cast<double>(prefix) +
                       static_cast<double>(chunk) * static_cast<double>(chunk + 1) / 2;
  return 4.0 * dim * kQHeads * pairs;
}

// prefill_attention_cached of a 100-token chunk over a 700-token cached prefix, against the
// CPU reference on a copy of the cache.
void check_cached(KvType type, const Stream& s, const Stream& cpu) {
  const int dim = 128;
  const int64_t prefix = 700, chunk = 100;
  const int64_t pages = (prefix + chunk + kPage - 1) / kPage;
  const std::vector<int32_t> table = shuffled_table(pages);
  KvLayerStorage l = make_layer(type, pages, dim, s);
  Buffer k = random_bf16({prefix + chunk, kKvHeads, dim}, 111, s);
  Buffer v = random_bf16({prefix + chunk, kKvHeads, dim}, 112, s);
  fill_prefix(l, table, k, v, prefix, s);
  Buffer q = random_bf16({chunk, kQHeads, dim}, 113, s);
  Buffer tb = i32_buffer(table, s);
  Buffer out = Buffer::empty({chunk, kQHeads, dim}, DType::bf16, s);
  PrefillAttentionParams p;
  p.scale = 1.0f / std::sqrt(static_cast<float>(dim));
  const Buffer k_new = k.slice(0, prefix, prefix + chunk),
               v_new = v.slice(0, prefix, prefix + chunk);
  prefill_attention_cached(q, k_new, v_new, l, tb, prefix, out, p, s);
  KvLayerStorage lc = l;
  for (KvStore* st : {&lc.k, &lc.v}) {
    st->data = on_cpu(st->data, s, cpu);
    if (st->scales.defined()) st->scales = on_cpu(st->scales, s, cpu);
  }
  lc.page_ids = on_cpu(l.page_ids, s, cpu);
  Buffer ref = Buffer::empty(out.shape(), DType::f32, cpu);
  prefill_attention_cached(on_cpu(q, s, cpu), on_cpu(k_new, s, cpu), on_cpu(v_new, s, cpu), lc,
                           on_cpu(tb, s, cpu), prefix, ref, p, cpu);
  cpu.synchronize();
  check_close(host_f32(out, s), ref.to_host<float>(cpu), kQHeads, dim,
              std::string("prefill_check_cached_") + std::string(kv_type_name(type)));
}

void chunked_prefill(const std::string& only, double copy_gbps, const Stream& s,
                     const Stream& cpu) {
  const int dim = 128;
  const int64_t prefix = 16384;
  const std::vector<int64_t> chunks = {512, 2048};
  const std::vector<KvType> types = {KvType::bf16, KvType::tq4};
  const std::string base = "prefill_chunk_" + std::to_string(kQHeads) + "x" +
                           std::to_string(kKvHeads) + "x" + std::to_string(dim) + "_prefix" +
                           std::to_string(prefix) + "_c";
  std::vector<int64_t> selected;
  for (int64_t c : chunks) {
    const std::string n = base + std::to_string(c);
    // A chunk's three cases run together (its ratios need all of them).
    for (const char* suffix : {"_dense", "_bf16", "_tq4", "_tq4_over_bf16", "_staging"}) {
      if ((n + suffix).find(only) != std::string::npos) {
        selected.push_back(c);
        break;
      }
    }
  }
  if (selected.empty()) return;
  for (KvType t : types) check_cached(t, s, cpu);

  const int64_t max_chunk = *std::max_element(chunks.begin(), chunks.end());
  const int64_t pages = (prefix + max_chunk) / kPage;
  const std::vector<int32_t> table = shuffled_table(pages);
  Buffer tb = i32_buffer(table, s);
  // Keys and values of positions [0, prefix + max_chunk): the prefix goes into the cache, a
  // chunk's new tokens are the next rows.
  Buffer kd = random_bf16({prefix + max_chunk, kKvHeads, dim}, 21, s);
  Buffer vd = random_bf16({prefix + max_chunk, kKvHeads, dim}, 22, s);
  std::vector<KvLayerStorage> layers;
  for (KvType t : types) {
    layers.push_back(make_layer(t, pages, dim, s));
    fill_prefix(layers.back(), table, kd, vd, prefix, s);
  }
  s.synchronize();
  PrefillAttentionParams p;
  p.scale = 1.0f / std::sqrt(static_cast<float>(dim));
  p.causal = true;

  for (int64_t chunk : selected) {
    const std::string name = base + std::to_string(chunk);
    progress(name);
    Buffer q = random_bf16({chunk, kQHeads, dim}, 23, s);
    const Buffer k_new = kd.slice(0, prefix, prefix + chunk);
    const Buffer v_new = vd.slice(0, prefix, prefix + chunk);
    const Buffer k_all = kd.slice(0, 0, prefix + chunk), v_all = vd.slice(0, 0, prefix + chunk);
    Buffer cu_q = i32_buffer({0, static_cast<int32_t>(chunk)}, s);
    Buffer cu_k = i32_buffer({0, static_cast<int32_t>(prefix + chunk)}, s);
    const double flops = chunk_flops(chunk, prefix, dim);
    const double chunk_bytes =
        2.0 * static_cast<double>(chunk) * dim * (2.0 * kQHeads + 2.0 * kKvHeads);
    nlohmann::json shape = {{"q_heads", kQHeads}, {"kv_heads", kKvHeads}, {"dim", dim},
                            {"prefix", prefix},   {"chunk", chunk},       {"causal", true}};

    // The dense pass: prefill_attention over the same keys, the reference for the bf16 cache.
    PrefillAttentionParams pd = p;
    pd.max_q_len = chunk;
    Buffer out_dense = Buffer::empty({chunk, kQHeads, dim}, DType::bf16, s);
    const auto dense = [&] { prefill_attention(q, k_all, v_all, cu_q, cu_k, out_dense, pd, s); };
    dense();
    assert_finite(out_dense, name + "_dense", s);
    s.synchronize();
    const std::vector<float> want = host_f32(out_dense, s);
    Case cd;
    cd.name = name + "_dense";
    cd.shape = shape;
    cd.shape["cache"] = "dense";
    const Timed td = time_op(s, dense, flops, cd.name);
    cd.timing = td.timing;
    cd.shape["mode"] = td.mode;
    if (td.eager_us > 0) cd.shape["eager_us"] = td.eager_us;
    cd.flops = flops;
    cd.bytes = chunk_bytes + 2.0 * 2.0 * static_cast<double>(prefix) * kKvHeads * dim;
    emit(cd, copy_gbps);

    double cached_us[2] = {0, 0};
    for (size_t i = 0; i < types.size(); ++i) {
      const KvLayerStorage& l = layers[i];
      const std::string fmt(kv_type_name(types[i]));
      Buffer out = Buffer::empty({chunk, kQHeads, dim}, DType::bf16, s);
      const auto cached = [&] {
        prefill_attention_cached(q, k_new, v_new, l, tb, prefix, out, p, s);
      };
      cached();
      assert_finite(out, name + "_" + fmt, s);
      s.synchronize();
      // The bf16 cache holds the dense keys exactly: its output must match the dense pass.
      if (types[i] == KvType::bf16)
        check_close(host_f32(out, s), want, kQHeads, dim, name + "_bf16 against dense");
      Case c;
      c.name = name + "_" + fmt;
      c.shape = shape;
      c.shape["cache"] = fmt;
      c.shape["page_size"] = kPage;
      const Timed t = time_op(s, cached, flops, c.name);
      c.timing = t.timing;
      c.shape["mode"] = t.mode;
      if (t.eager_us > 0) c.shape["eager_us"] = t.eager_us;
      c.flops = flops;
      c.bytes = chunk_bytes + static_cast<double>(prefix) * kKvHeads *
                                  static_cast<double>(kv_vector_bytes(types[i], dim) * 2);
      emit(c, copy_gbps);
      cached_us[i] = t.timing.median_us;
    }
    const double ratio = cached_us[1] / cached_us[0];
    std::printf("%s\n", nlohmann::json({{"name", name + "_tq4_over_bf16"},
                                        {"ratio", ratio},
                                        {"target_max", 1.3},
                                        {"met", ratio <= 1.3},
                                        {"tq4_us", cached_us[1]},
                                        {"bf16_us", cached_us[0]}})
                            .dump()
                            .c_str());
    std::printf("%s\n", nlohmann::json({{"name", name + "_staging"},
                                        {"staging_us", cached_us[0] - td.timing.median_us},
                                        {"share_of_cached_bf16",
                                         (cached_us[0] - td.timing.median_us) / cached_us[0]},
                                        {"cached_bf16_us", cached_us[0]},
                                        {"dense_us", td.timing.median_us}})
                            .dump()
                            .c_str());
    std::fflush(stdout);
  }
}

}  // namespace

// An optional argument keeps only the cases whose name contains it.
int main(int argc, char** argv) {
  try {
    const std::string only = argc > 1 ? argv[1] : "";
    if (!have_gpu()) return 1;
    Stream s(Device::cuda(0));
    Stream cpu(Device::cpu());
    const double copy_gbps = report_copy_ceiling(s);

    for (int dim : {64, 128, 256, 512}) {
      bool checked = false;
      for (int64_t L : {1024, 4096, 16384}) {
        for (int batch : {1, 4}) {
          for (bool causal : {true, false}) {
            const std::string name = "prefill_" + std::to_string(kQHeads) + "x" +
                                     std::to_string(kKvHeads) + "x" + std::to_string(dim) + "_L" +
                                     std::to_string(L) + "_b" + std::to_string(batch) +
                                     (causal ? "_causal" : "_noncausal");
            if (name.find(only) == std::string::npos) continue;
            if (dim == 512 && L > 4096 && batch > 1) {
              std::printf("%s\n", nlohmann::json({{"name", name},
                                                  {"skipped",
                                                   "head_dim 512 at 16K is timed at batch 1 only "
                                                   "(bench run time)"}})
                                      .dump()
                                      .c_str());
              std::fflush(stdout);
              continue;
            }
            if (!checked) {
              check_dense(dim, true, s, cpu);
              check_dense(dim, false, s, cpu);
              checked = true;
            }
            progress(name);
            const int64_t total = batch * L;
            Buffer q = random_bf16({total, kQHeads, dim}, 1, s);
            Buffer k = random_bf16({total, kKvHeads, dim}, 2, s);
            Buffer v = random_bf16({total, kKvHeads, dim}, 3, s);
            std::vector<int32_t> cu(static_cast<size_t>(batch) + 1);
            for (int b = 0; b <= batch; ++b)
              cu[static_cast<size_t>(b)] = static_cast<int32_t>(b * L);
            Buffer cu_b = i32_buffer(cu, s);
            Buffer out = Buffer::empty({total, kQHeads, dim}, DType::bf16, s);
            PrefillAttentionParams p;
            p.scale = 1.0f / std::sqrt(static_cast<float>(dim));
            p.causal = causal;
            p.max_q_len = L;
            const auto op = [&] { prefill_attention(q, k, v, cu_b, cu_b, out, p, s); };
            op();
            assert_finite(out, name, s);
            s.synchronize();

            Case c;
            c.name = name;
            c.shape = {{"q_heads", kQHeads}, {"kv_heads", kKvHeads}, {"dim", dim}, {"L", L},
                       {"batch", batch},     {"causal", causal}};
            const double flops = 4.0 * static_cast<double>(L) * static_cast<double>(L) * dim *
                                 kQHeads * batch * (causal ? 0.5 : 1.0);
            const Timed t = time_op(s, op, flops, name);
            c.timing = t.timing;
            c.shape["mode"] = t.mode;
            if (t.eager_us > 0) c.shape["eager_us"] = t.eager_us;
            c.flops = flops;
            c.bytes = 2.0 * static_cast<double>(total) * dim * (2.0 * kQHeads + 2.0 * kKvHeads);
            emit(c, copy_gbps);
          }
        }
      }
    }
    chunked_prefill(only, copy_gbps, s, cpu);
    progress("done");
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "attention_prefill bench failed: %s\n", e.what());
    return 1;
  }
}
