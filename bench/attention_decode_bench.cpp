// Decode attention over the paged KV cache on the GPU, one query token per sequence:
//  shapes (q heads / kv heads / head_dim) 32/8/128, 64/8/128, 16/8/256, 16/2/512; batch 1 and 16;
//  context 4K, 32K, 128K; cache formats bf16, fp8, tq8, tq4, tq4/tq3 (K4 V3), tq3.
// Each case's peer is PyTorch SDPA in bf16 on the same shape
// (bench/peers/torch_attention_decode.py, case name in shape.peer_case). Bytes: what the format
// must read, K and V payloads plus their per-vector scales. The cache is filled by kv_append from
// random bf16 K/V (so TurboQuant codes are real encodings), pages scattered by a shuffled page
// table. Before timing, the first case of each (shape, format) is checked against the CPU reference
// on a copy of the cache. Like the peer, every run reads the same cache (at 4K and batch 1 it fits
// in the 50 MB L2 for both). Both sides are timed as CUDA graph replays, so host-side launch cost
// is left out on both.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numeric>
#include <random>

#include "harness.h"

using namespace mlxn;
using namespace mlxn::bench;

namespace {

struct Shape3 {
  int q_heads, kv_heads, dim;
};
struct Format {
  const char* name;
  KvType k, v;
};

constexpr int kPage = 64;

KvLayerStorage make_layer(const Format& f, int64_t pages, int kv_heads, int dim, const Stream& s) {
  KvLayerStorage l;
  l.k = KvStore::allocate(f.k, pages, kv_heads, kPage, dim, s);
  l.v = KvStore::allocate(f.v, pages, kv_heads, kPage, dim, s);
  std::vector<int32_t> ids(static_cast<size_t>(pages));
  std::iota(ids.begin(), ids.end(), 0);
  l.page_ids = Buffer::from_host(std::span<const int32_t>(ids), {pages}, DType::i32, s);
  return l;
}

// Writes every slot of every sequence, `chunk` tokens per kv_append.
void fill_layer(const KvLayerStorage& l, const std::vector<int32_t>& table, int batch,
                int64_t context, int kv_heads, int dim, const Stream& s) {
  const int64_t chunk = std::min<int64_t>(context, 32768);
  Buffer k = Buffer::empty({chunk, kv_heads, dim}, DType::bf16, s);
  Buffer v = Buffer::empty({chunk, kv_heads, dim}, DType::bf16, s);
  fill_random(k, {Distribution::normal, 1, 0, 1}, s);
  fill_random(v, {Distribution::normal, 2, 0, 1}, s);
  const int64_t width = context / kPage;
  std::vector<int32_t> slots(static_cast<size_t>(chunk));
  for (int b = 0; b < batch; ++b) {
    for (int64_t t0 = 0; t0 < context; t0 += chunk) {
      for (int64_t i = 0; i < chunk; ++i) {
        const int64_t t = t0 + i;
        slots[static_cast<size_t>(i)] = table[static_cast<size_t>(b * width + t / kPage)] * kPage +
                                        static_cast<int32_t>(t % kPage);
      }
      Buffer sl = Buffer::from_host(std::span<const int32_t>(slots), {chunk}, DType::i32, s);
      kv_append(k, v, sl, l, s, {b == 0 && t0 == 0, b == 0 && t0 == 0});
    }
  }
}

double read_bytes(const Format& f, int64_t vectors, int dim) {
  return static_cast<double>(vectors) *
         static_cast<double>(kv_vector_bytes(f.k, dim) + kv_vector_bytes(f.v, dim));
}

// A CPU copy of a GPU buffer (contiguous).
Buffer on_cpu(const Buffer& b, const Stream& gpu, const Stream& cpu) {
  Buffer h = Buffer::empty(b.shape(), b.dtype(), cpu);
  copy(b, h, gpu);
  return h;
}

// GPU output against the CPU reference on a copy of the cache: max |gpu - cpu| <= 2 % of the
// largest reference value (the GPU tests hold every case to a derived bound; this only keeps
// the bench from timing a broken kernel).
void validate_against_reference(const KvLayerStorage& l, const Buffer& q, const Buffer& table,
                                const Buffer& lengths, const Buffer& out,
                                const DecodeAttentionParams& params, const Stream& s,
                                const std::string& name) {
  Stream cpu(Device::cpu());
  KvLayerStorage lc = l;
  for (KvStore* st : {&lc.k, &lc.v}) {
    st->data = on_cpu(st->data, s, cpu);
    if (st->scales.defined()) st->scales = on_cpu(st->scales, s, cpu);
  }
  lc.page_ids = on_cpu(l.page_ids, s, cpu);
  Buffer qc = on_cpu(q, s, cpu), tc = on_cpu(table, s, cpu), lenc = on_cpu(lengths, s, cpu);
  Buffer ref = Buffer::empty(out.shape(), DType::f32, cpu);
  decode_attention(qc, lc, tc, lenc, ref, params, cpu);
  cpu.synchronize();
  const std::vector<float> got = out.to_host<float>(s), want = ref.to_host<float>(cpu);
  double worst = 0, peak = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    worst = std::max(worst, std::isfinite(got[i]) ? std::fabs(double{got[i]} - want[i]) : INFINITY);
    peak = std::max(peak, std::fabs(double{want[i]}));
  }
  validate(worst <= 0.02 * peak,
           name + ": max error " + std::to_string(worst) + " vs peak " + std::to_string(peak));
}

}  // namespace

// An optional argument keeps only the cases whose name contains it.
int main(int argc, char** argv) {
  try {
    const std::string only = argc > 1 ? argv[1] : "";
    if (!have_gpu()) return 1;
    Stream s(Device::cuda(0));
    const double copy_gbps = report_copy_ceiling(s);
    const Shape3 shapes[] = {{32, 8, 128}, {64, 8, 128}, {16, 8, 256}, {16, 2, 512}};
    const Format formats[] = {
        {"bf16", KvType::bf16, KvType::bf16}, {"fp8", KvType::fp8, KvType::fp8},
        {"tq8", KvType::tq8, KvType::tq8},    {"tq4", KvType::tq4, KvType::tq4},
        {"tq4v3", KvType::tq4, KvType::tq3},  {"tq3", KvType::tq3, KvType::tq3}};
    for (const Shape3& sh : shapes) {
      for (const Format& f : formats) {
        bool validated = false;
        for (int batch : {1, 16}) {
          for (int64_t context : {4096, 32768, 131072}) {
            const std::string peer = "decode_" + std::to_string(sh.q_heads) + "x" +
                                     std::to_string(sh.kv_heads) + "x" + std::to_string(sh.dim) +
                                     "_b" + std::to_string(batch) + "_ctx" +
                                     std::to_string(context);
            const std::string name = peer + "_" + f.name;
            if (name.find(only) == std::string::npos) continue;
            const int64_t width = context / kPage, pages = batch * width;
            KvLayerStorage l = make_layer(f, pages, sh.kv_heads, sh.dim, s);
            std::vector<int32_t> table(static_cast<size_t>(pages));
            std::iota(table.begin(), table.end(), 0);
            std::shuffle(table.begin(), table.end(), std::mt19937(7));
            fill_layer(l, table, batch, context, sh.kv_heads, sh.dim, s);
            Buffer tb =
                Buffer::from_host(std::span<const int32_t>(table), {batch, width}, DType::i32, s);
            std::vector<int32_t> lens(static_cast<size_t>(batch), static_cast<int32_t>(context));
            Buffer lengths =
                Buffer::from_host(std::span<const int32_t>(lens), {batch}, DType::i32, s);
            Buffer q = Buffer::empty({batch, 1, sh.q_heads, sh.dim}, DType::bf16, s);
            fill_random(q, {Distribution::normal, 3, 0, 1}, s);
            Buffer out = Buffer::empty({batch, 1, sh.q_heads, sh.dim}, DType::f32, s);
            DecodeAttentionParams params;
            params.scale = 1.0f / std::sqrt(static_cast<float>(sh.dim));
            params.max_length = context;
            decode_attention(q, l, tb, lengths, out, params, s);
            s.synchronize();
            if (!validated) {
              validate_against_reference(l, q, tb, lengths, out, params, s, name);
              validated = true;
            }
            for (float x : out.to_host<float>(s))
              validate(std::isfinite(x), name + ": non-finite output");
            Case c;
            c.name = name;
            c.shape = {{"q_heads", sh.q_heads}, {"kv_heads", sh.kv_heads}, {"dim", sh.dim},
                       {"batch", batch},        {"context", context},      {"format", f.name},
                       {"page_size", kPage},    {"peer_case", peer}};
            // Timed as a CUDA graph replay (as a decode step runs), and eagerly for reference.
            const int runs = context * batch > 500000 ? 20 : 50;
            const Graph graph =
                Graph::capture(s, [&] { decode_attention(q, l, tb, lengths, out, params, s); });
            c.timing = time_device(
                s, [&](int) { graph.replay(s); }, 5, runs);
            const Timing eager = time_device(
                s, [&](int) { decode_attention(q, l, tb, lengths, out, params, s); }, 5, runs);
            c.shape["eager_us"] = eager.median_us;
            c.bytes = read_bytes(f, int64_t{batch} * context * sh.kv_heads, sh.dim);
            emit(c, copy_gbps);
          }
        }
      }
    }
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "attention_decode bench failed: %s\n", e.what());
    return 1;
  }
}
