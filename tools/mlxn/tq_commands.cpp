#include "tq_commands.h"

#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <vector>

#include "mlxn/mlxn.h"
#include "turboquant/codebook.h"
#include "turboquant/quality.h"
#include "turboquant/reference.h"

namespace mlxn::cli {

namespace {

constexpr int kBits[] = {2, 3, 4, 5, 6, 8};
// The design contract's "v1 must reach" relative-MSE column.
double contract_target(int bits) {
  switch (bits) {
    case 2:
      return 0.1187;
    case 3:
      return 0.0349;
    case 4:
      return 0.00960;
    case 5:
      return 0.00253;
    case 6:
      return 0.00065;
    default:
      return 0.000063;
  }
}

std::vector<char> read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error("tq", "cannot open " + path);
  return std::vector<char>(std::istreambuf_iterator<char>(in), {});
}

void write_file(const std::string& path, const void* data, size_t bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(static_cast<const char*>(data), static_cast<std::streamsize>(bytes));
  if (!out) throw Error("tq", "cannot write " + path);
}

// GPU encode throughput on a 32K-token x 8-head x 128 bf16 K+V prefill, when a GPU is present.
void print_gpu_encode_speed() {
  if (cuda_device_count() == 0) {
    std::printf("GPU encode speed: no CUDA device (%s)\n", cuda_unavailable_reason().c_str());
    return;
  }
  const Stream s(Device::cuda(0));
  const int64_t tokens = 32768;
  const int heads = 8, dim = 128, page = 64;
  TqCache k = TqCache::allocate(tokens / page, heads, page, dim, 4, s);
  TqCache v = TqCache::allocate(tokens / page, heads, page, dim, 4, s);
  Buffer kx = Buffer::empty({tokens, heads, dim}, DType::bf16, s);
  Buffer vx = Buffer::empty({tokens, heads, dim}, DType::bf16, s);
  fill_random(kx, {Distribution::normal, 1, 0, 1}, s);
  fill_random(vx, {Distribution::normal, 2, 0, 1}, s);
  std::vector<int32_t> pos(tokens), pages(tokens / page);
  for (int64_t i = 0; i < tokens; ++i) pos[static_cast<size_t>(i)] = static_cast<int32_t>(i);
  for (size_t i = 0; i < pages.size(); ++i) pages[i] = static_cast<int32_t>(i);
  Buffer positions = Buffer::from_host(std::span<const int32_t>(pos), {tokens}, DType::i32, s);
  Buffer table = Buffer::from_host(std::span<const int32_t>(pages), {tokens / page}, DType::i32, s);
  for (int i = 0; i < 3; ++i) tq_encode_kv(kx, vx, positions, table, k, v, s);
  Event start(s.device()), stop(s.device());
  start.record(s);
  for (int i = 0; i < 10; ++i) tq_encode_kv(kx, vx, positions, table, k, v, s);
  stop.record(s);
  s.synchronize();
  const double us = 1000.0 * start.elapsed_ms(stop) / 10;
  const double bytes = 2.0 * tokens * heads * (dim * 2 + dim * 4 / 8 + 2);
  std::printf(
      "GPU encode (%s): 32K tokens x 8 heads x D128 bf16 K+V -> tq4 in %.1f us (%.0f GB/s)\n",
      device_properties(s.device()).name.c_str(), us, bytes / (us * 1e3));
}

}  // namespace

int run_tq_eval(const TqEvalOptions& options) {
  const int64_t vectors = options.quick ? 2000 : options.vectors;
  std::vector<int> dims = {128};
  if (!options.quick) dims = {64, 128, 256, 512};
  std::printf("TurboQuant quality (CPU reference, %lld vectors per case)\n",
              static_cast<long long>(vectors));
  std::printf("%4s %4s %9s %10s %10s %10s %10s %9s %8s %8s %5s\n", "bits", "D", "vs bf16",
              "gaussian", "heavy", "biased", "Lloyd-Max", "target", "ip rms", "ip bias", "ok");
  int failures = 0;
  for (int bits : kBits) {
    for (int dim : dims) {
      tq::QualityOptions o{bits, dim, tq::VectorSet::gaussian, vectors, 5, true};
      const tq::Quality g = tq::measure_quality(o);
      o.set = tq::VectorSet::heavy_tailed;
      const tq::Quality h = tq::measure_quality(o);
      o.set = tq::VectorSet::biased;
      const tq::Quality b = tq::measure_quality(o);
      const double target = contract_target(bits);
      const bool ok =
          g.relative_mse <= target && h.relative_mse <= target && b.relative_mse <= 3 * target;
      failures += ok ? 0 : 1;
      const double ratio = 2.0 * dim / (static_cast<double>(tq::payload_bytes(dim, bits)) + 2.0);
      std::printf("%4d %4d %8.2fx %10.6f %10.6f %10.6f %10.6f %9.6f %8.4f %+8.4f %5s\n", bits, dim,
                  ratio, g.relative_mse, h.relative_mse, b.relative_mse, tq::lloyd_max_mse(bits),
                  target, g.inner_product_rms, g.inner_product_bias, ok ? "yes" : "NO");
    }
  }
  const int64_t keys = options.quick ? 1024 : 4096;
  std::printf(
      "\nattention output error, D=128, %lld keys with 4 dominant (K and V at the same bits):\n",
      static_cast<long long>(keys));
  for (int bits : kBits) {
    std::printf("  tq%d: %.4f\n", bits, tq::attention_output_error(bits, 128, keys));
  }
  std::printf("\n");
  print_gpu_encode_speed();
  std::printf("%d passed, %d failed\n", static_cast<int>(std::size(kBits) * dims.size()) - failures,
              failures);
  return failures == 0 ? 0 : 1;
}

int run_tq_encode(int bits, int dim, const std::string& in_path, const std::string& out_path) {
  tq::require_bits(bits, "tq encode");
  tq::require_dim(dim, "tq encode");
  const std::vector<char> raw = read_file(in_path);
  const size_t row = static_cast<size_t>(dim) * sizeof(float);
  if (raw.size() % row != 0) {
    throw Error("tq encode", in_path + " holds " + std::to_string(raw.size()) +
                                 " bytes, not a whole number of " + std::to_string(dim) +
                                 "-float vectors");
  }
  const size_t n = raw.size() / row;
  const auto payload_row = static_cast<size_t>(tq::payload_bytes(dim, bits));
  std::vector<uint8_t> out(n * (payload_row + 2));
  std::vector<float> x(static_cast<size_t>(dim));
  size_t non_finite = 0;
  for (size_t i = 0; i < n; ++i) {
    std::memcpy(x.data(), raw.data() + i * row, row);
    uint16_t scale = 0;
    if (!tq::reference::encode(x.data(), dim, bits, out.data() + i * payload_row, &scale))
      ++non_finite;
    std::memcpy(out.data() + n * payload_row + 2 * i, &scale, 2);
  }
  write_file(out_path, out.data(), out.size());
  std::printf("encoded %zu vectors (dim %d, %d bits): %zu payload bytes + %zu scale bytes\n", n,
              dim, bits, n * payload_row, 2 * n);
  if (non_finite) {
    std::fprintf(stderr, "tq encode: %zu vectors held NaN/Inf and were stored as zeros\n",
                 non_finite);
    return 1;
  }
  return 0;
}

int run_tq_decode(int bits, int dim, const std::string& in_path, const std::string& out_path,
                  bool rotated) {
  tq::require_bits(bits, "tq decode");
  tq::require_dim(dim, "tq decode");
  const std::vector<char> raw = read_file(in_path);
  const auto payload_row = static_cast<size_t>(tq::payload_bytes(dim, bits));
  if (raw.size() % (payload_row + 2) != 0) {
    throw Error("tq decode", in_path + " holds " + std::to_string(raw.size()) +
                                 " bytes, not a whole number of " + std::to_string(payload_row) +
                                 "+2-byte vectors");
  }
  const size_t n = raw.size() / (payload_row + 2);
  std::vector<float> out(n * static_cast<size_t>(dim));
  const auto* bytes = reinterpret_cast<const uint8_t*>(raw.data());
  for (size_t i = 0; i < n; ++i) {
    uint16_t scale;
    std::memcpy(&scale, bytes + n * payload_row + 2 * i, 2);
    float* dst = out.data() + i * static_cast<size_t>(dim);
    if (rotated) {
      tq::reference::decode_rotated(bytes + i * payload_row, scale, dim, bits, dst);
    } else {
      tq::reference::decode_original(bytes + i * payload_row, scale, dim, bits, dst);
    }
  }
  write_file(out_path, out.data(), out.size() * sizeof(float));
  std::printf("decoded %zu vectors to %s (%s domain)\n", n, out_path.c_str(),
              rotated ? "rotated" : "original");
  return 0;
}

}  // namespace mlxn::cli
