#include "model_options.h"

#include <CLI/CLI.hpp>
#include <cstdio>

#include "core/text.h"
#include "mlxn/core/error.h"

namespace mlxn::cli {

using text::cat;

Device pick_device(const std::string& name, const char* op) {
  if (name == "cpu") return Device::cpu();
  if (name == "cuda") {
    if (cuda_device_count() == 0) {
      throw Error(op, cat("--device cuda: no CUDA device is usable (", cuda_unavailable_reason(),
                          "); use --device cpu"));
    }
    return Device::cuda(0);
  }
  if (name.empty()) return cuda_device_count() > 0 ? Device::cuda(0) : Device::cpu();
  throw Error(op, cat("--device ", text::in_quotes(name), " unknown (cpu or cuda)"));
}

CLI::Validator kv_type_validator() {
  return CLI::Validator(
      [](std::string& name) -> std::string {
        try {
          (void)parse_kv_type(name);
          return {};
        } catch (const Error& e) {
          return e.what();
        }
      },
      "TYPE");
}

model::KvPolicy kv_policy(const KvArgs& args) {
  model::KvPolicy p;
  if (!args.both.empty()) p.k = p.v = parse_kv_type(args.both);
  if (!args.k.empty()) p.k = parse_kv_type(args.k);
  if (!args.v.empty()) p.v = parse_kv_type(args.v);
  p.boundary_layers = args.boundary;
  p.boundary_type = KvType::bf16;
  return p;
}

std::string kv_policy_name(const model::KvPolicy& p) {
  std::string name = p.k == p.v ? std::string(kv_type_name(p.k))
                                : cat("K ", kv_type_name(p.k), " / V ", kv_type_name(p.v));
  if (p.boundary_layers > 0) {
    name += cat(" (first and last ", p.boundary_layers, " layer", p.boundary_layers == 1 ? "" : "s",
                " ", kv_type_name(p.boundary_type), ")");
  }
  return name;
}

KvFootprint kv_footprint(const KvCacheConfig& config) {
  // The cache is linear in its page pool: what a pool of no pages takes does not grow with the
  // context, and one page more adds a page of every full-attention layer.
  KvCacheConfig c = config;
  c.num_pages = 0;
  KvFootprint f;
  f.page_size = c.page_size;
  f.fixed_bytes = KvCache::required_bytes(c);
  c.num_pages = 1;
  f.page_bytes = KvCache::required_bytes(c) - f.fixed_bytes;
  for (const KvLayerConfig& l : c.layers) ++(l.window > 0 ? f.window_layers : f.full_layers);
  return f;
}

std::string byte_size(double bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int unit = 0;
  while (bytes >= 1024 && unit < 4) bytes /= 1024, ++unit;
  char text[32];
  std::snprintf(text, sizeof(text), unit == 0 ? "%.0f %s" : "%.2f %s", bytes, units[unit]);
  return text;
}

}  // namespace mlxn::cli
