// What the commands that run a model share: the device to run on, the KV-cache policy from type
// names, and the cache's size from the library's own layout (KvCache::required_bytes).
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

#include "mlxn/core/device.h"
#include "mlxn/model/runner.h"
#include "mlxn/ops/kv_cache.h"

namespace CLI {
class Validator;
}

namespace mlxn::cli {

// "cpu" or "cuda" (the first CUDA device); "" picks cuda when a CUDA device is usable, else the
// CPU. Throws Error("[<op>] ...") for cuda without a usable device, naming why.
Device pick_device(const std::string& name, const char* op);

// Accepts the names parse_kv_type accepts (bf16, f16, fp8, tq2 .. tq8; f32 on the CPU).
CLI::Validator kv_type_validator();

struct KvArgs {
  std::string both;  // --kv: K and V
  std::string k, v;  // --kv-k, --kv-v (default: bf16, or --kv)
  int boundary = 0;  // --kv-boundary: the first and last N layers keep bf16
};
// The cache policy the names ask for. Throws Error("[kv_cache] ...") for an unknown name.
model::KvPolicy kv_policy(const KvArgs& args);
// "bf16", "K tq4 / V tq3", "tq4 (first and last 2 layers bf16)".
std::string kv_policy_name(const model::KvPolicy& policy);

// How a cache configuration's bytes grow with the context, from KvCache::required_bytes.
struct KvFootprint {
  int page_size = 0;
  int64_t page_bytes = 0;   // one page of every full-attention layer, K and V, page-table entry
  int64_t fixed_bytes = 0;  // independent of the context: sliding-window rings, fp8 scales
  int full_layers = 0;
  int window_layers = 0;
  // Bytes a token adds on the full-attention layers (0 when every layer slides).
  double bytes_per_token() const { return static_cast<double>(page_bytes) / page_size; }
  // The cache bytes that sequences holding `pages` pages in all use, rings included.
  int64_t bytes_for_pages(int64_t pages) const { return fixed_bytes + pages * page_bytes; }
};
// `config.num_pages` is ignored; fixed_bytes covers config.max_sequences sequences.
KvFootprint kv_footprint(const KvCacheConfig& config);

// Wall-clock seconds from `start` to now (the commands time host loops that synchronise).
inline double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// "512 B", "1.50 KiB", "2.25 MiB", "16.00 GiB".
std::string byte_size(double bytes);

}  // namespace mlxn::cli
