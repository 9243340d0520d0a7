// TurboQuant encode and dequantize on the GPU, against the device-copy ceiling.
//  - prefill encode: 32K tokens x 8 kv-heads x D 128, bf16 K and V -> tq4 (and tq3) in one launch,
//    by the automatic choice and by each of the two encoders; smaller batches by both encoders
//    (where the automatic choice switches between them)
//  - decode-step encode: 1 token x 8 heads x 32 layers, one launch per layer (eager and as a graph)
//  - dequantize that cache back to bf16, rotated and original domain
// Bytes: inputs read once + payloads and scales written once (dequantize: the reverse).
#include <cstdio>
#include <numeric>

#include "harness.h"
#include "turboquant/encode_job.h"

using namespace mlxn;
using namespace mlxn::bench;

namespace {

Buffer iota_i32(int64_t n, bool reversed, const Stream& s) {
  std::vector<int32_t> v(static_cast<size_t>(n));
  std::iota(v.begin(), v.end(), 0);
  if (reversed) std::reverse(v.begin(), v.end());
  return Buffer::from_host(std::span<const int32_t>(v), {n}, DType::i32, s);
}

double cache_bytes(int64_t vectors, int dim, int bits) {
  return static_cast<double>(vectors) * (dim * bits / 8.0 + 2.0);
}

}  // namespace

int main() {
  try {
    if (!have_gpu()) return 1;
    Stream s(Device::cuda(0));
    Stream cpu(Device::cpu());
    const double copy_gbps = report_copy_ceiling(s);

    const int64_t tokens = 32768;
    const int heads = 8, dim = 128, page = 64;
    const int64_t pages = tokens / page;
    Buffer k = Buffer::empty({tokens, heads, dim}, DType::bf16, s);
    Buffer v = Buffer::empty({tokens, heads, dim}, DType::bf16, s);
    fill_random(k, {Distribution::normal, 1, 0, 1}, s);
    fill_random(v, {Distribution::normal, 2, 0, 1}, s);
    Buffer positions = iota_i32(tokens, false, s);
    Buffer table = iota_i32(pages, true, s);  // pages in reverse: a real page table is scattered

    for (int bits : {4, 3}) {
      TqCache kc = TqCache::allocate(pages, heads, page, dim, bits, s);
      TqCache vc = TqCache::allocate(pages, heads, page, dim, bits, s);
      // Checks the first 256 tokens of the K cache against the CPU reference.
      const auto validate_cache = [&](const char* what) {
        const int64_t check = 256;
        Buffer hk = Buffer::empty({check, heads, dim}, DType::bf16, cpu);
        copy(k.slice(0, 0, check), hk, s);
        TqCache hc = TqCache::allocate(check / page, heads, page, dim, bits, cpu);
        Buffer hpos = Buffer::empty({check}, DType::i32, cpu);
        copy(positions.slice(0, 0, check), hpos, s);
        Buffer htable = iota_i32(check / page, false, cpu);
        tq_encode(hk, hpos, htable, hc, cpu);
        Buffer hd = Buffer::empty({check, heads, dim}, DType::f32, cpu);
        tq_dequantize(hc, htable, 0, hd, TqDomain::rotated, cpu);
        Buffer gd = Buffer::empty({check, heads, dim}, DType::f32, s);
        tq_dequantize(kc, table, 0, gd, TqDomain::rotated, s);
        Buffer gd_host = Buffer::empty({check, heads, dim}, DType::f32, cpu);
        copy(gd, gd_host, s);
        validate(gd_host.to_host<uint32_t>(cpu) == hd.to_host<uint32_t>(cpu), what);
      };
      tq_encode_kv(k, v, positions, table, kc, vc, s);
      validate_cache("encode matches the CPU reference");
      const std::string tag = "tq" + std::to_string(bits);
      const nlohmann::json shape = {
          {"tokens", tokens}, {"kv_heads", heads}, {"dim", dim}, {"bits", bits}};
      const double encode_bytes =
          2.0 * tokens * heads * dim * 2 + 2 * cache_bytes(tokens * heads, dim, bits);
      emit({"encode_prefill_kv_bf16_" + tag, shape,
            time_device(
                s, [&](int) { tq_encode_kv(k, v, positions, table, kc, vc, s); }, 3, 30),
            encode_bytes, 0},
           copy_gbps);
      // Each encoder on the same batch and on smaller ones (the automatic choice's threshold).
      for (const int64_t n : {tokens, int64_t{4096}, int64_t{1024}, int64_t{128}}) {
        if (bits != 4 && n != tokens) continue;
        const nlohmann::json sub = {
            {"tokens", n}, {"kv_heads", heads}, {"dim", dim}, {"bits", bits}};
        Buffer kn = k.slice(0, 0, n), vn = v.slice(0, 0, n), pn = positions.slice(0, 0, n);
        const double bytes =
            4.0 * static_cast<double>(n * heads * dim) + 2 * cache_bytes(n * heads, dim, bits);
        for (const auto& [encoder, name] : {std::pair{tq::Encoder::lane_groups, "lane_groups"},
                                            std::pair{tq::Encoder::rows, "rows"}}) {
          tq::ForceEncoder force(encoder);
          if (n == tokens) {
            fill(kc.payload, 0.0, s);
            tq_encode_kv(kn, vn, pn, table, kc, vc, s);
            validate_cache(name);
          }
          emit({std::string("encode_kv_bf16_") + tag + "_" + name + "_" + std::to_string(n) +
                    "_tokens",
                sub,
                time_device(
                    s, [&](int) { tq_encode_kv(kn, vn, pn, table, kc, vc, s); }, 3, 30),
                bytes, 0},
               copy_gbps);
        }
      }
      Buffer out = Buffer::empty({tokens, heads, dim}, DType::bf16, s);
      const double dequant_bytes =
          cache_bytes(tokens * heads, dim, bits) + tokens * heads * dim * 2.0;
      for (TqDomain domain : {TqDomain::rotated, TqDomain::original}) {
        emit({std::string("dequantize_bf16_") +
                  (domain == TqDomain::rotated ? "rotated_" : "original_") + tag,
              shape,
              time_device(
                  s, [&](int) { tq_dequantize(kc, table, 0, out, domain, s); }, 3, 30),
              dequant_bytes, 0},
             copy_gbps);
      }
    }

    // Decode step: one new token per layer, 32 layers, K and V in one launch per layer.
    const int layers = 32;
    std::vector<TqCache> kcs, vcs;
    for (int l = 0; l < layers; ++l) {
      kcs.push_back(TqCache::allocate(pages, heads, page, dim, 4, s));
      vcs.push_back(TqCache::allocate(pages, heads, page, dim, 4, s));
    }
    Buffer step_k = k.slice(0, 0, 1), step_v = v.slice(0, 0, 1);
    Buffer step_pos = positions.slice(0, 1000, 1001);
    auto step = [&] {
      for (int l = 0; l < layers; ++l)
        tq_encode_kv(step_k, step_v, step_pos, table, kcs[l], vcs[l], s);
    };
    const nlohmann::json step_shape = {
        {"tokens", 1}, {"kv_heads", heads}, {"dim", dim}, {"bits", 4}, {"layers", layers}};
    const Timing eager = time_device(
        s, [&](int) { step(); }, 3, 30);
    emit({"encode_decode_step_32_layers_eager", step_shape, eager, 0, 0});
    Graph g = Graph::capture(s, step);
    const Timing replay = time_device(
        s, [&](int) { g.replay(s); }, 3, 30);
    emit({"encode_decode_step_32_layers_graph", step_shape, replay, 0, 0});
    std::printf("%s\n", nlohmann::json({{"name", "encode_decode_step_per_layer"},
                                        {"eager_us", eager.median_us / layers},
                                        {"graph_us", replay.median_us / layers}})
                            .dump()
                            .c_str());
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "mlxn_bench_turboquant: %s\n", e.what());
    return 1;
  }
}
