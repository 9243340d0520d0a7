#include "harness.h"

#include <algorithm>
#include <cstdio>
#include <vector>

namespace mlxn::bench {

bool have_gpu() {
  if (cuda_device_count() > 0) return true;
  std::fprintf(stderr, "no CUDA device: %s\n", cuda_unavailable_reason().c_str());
  return false;
}

Timing time_device(const Stream& stream, const std::function<void(int)>& run, int warmup,
                   int runs) {
  for (int i = 0; i < warmup; ++i) run(i);
  stream.synchronize();
  std::vector<Event> starts, stops;
  for (int i = 0; i < runs; ++i) {
    starts.emplace_back(stream.device());
    stops.emplace_back(stream.device());
  }
  for (int i = 0; i < runs; ++i) {
    starts[i].record(stream);
    run(warmup + i);
    stops[i].record(stream);
  }
  stream.synchronize();
  std::vector<double> us;
  for (int i = 0; i < runs; ++i) us.push_back(1000.0 * starts[i].elapsed_ms(stops[i]));
  std::sort(us.begin(), us.end());
  Timing t;
  t.runs = runs;
  t.min_us = us.front();
  t.median_us = us[us.size() / 2];
  t.p90_us = us[us.size() * 9 / 10];
  return t;
}

int rotation_sets(int64_t bytes_per_set, Device device) {
  const int64_t l2 = device_properties(device).l2_cache_bytes;
  const int64_t sets = (4 * l2 + bytes_per_set - 1) / std::max<int64_t>(bytes_per_set, 1);
  return static_cast<int>(std::clamp<int64_t>(sets, 1, 64));
}

nlohmann::json emit(const Case& c, double ceiling_gbps) {
  nlohmann::json j;
  j["name"] = c.name;
  j["shape"] = c.shape;
  j["median_us"] = c.timing.median_us;
  j["min_us"] = c.timing.min_us;
  j["p90_us"] = c.timing.p90_us;
  j["runs"] = c.timing.runs;
  if (c.bytes > 0) {
    const double gbps = c.bytes / (c.timing.median_us * 1e3);
    j["bytes"] = c.bytes;
    j["GB/s"] = gbps;
    if (ceiling_gbps > 0) j["pct_of_copy"] = 100.0 * gbps / ceiling_gbps;
  }
  if (c.flops > 0) {
    j["flops"] = c.flops;
    j["TFLOP/s"] = c.flops / (c.timing.median_us * 1e6);
  }
  std::printf("%s\n", j.dump().c_str());
  std::fflush(stdout);
  return j;
}

double measure_copy_gbps(const Stream& stream) {
  const int64_t n = int64_t{1} << 28;
  Buffer src = Buffer::empty({n}, DType::f32, stream);
  Buffer dst = Buffer::empty({n}, DType::f32, stream);
  fill(src, 1.0, stream);
  const Timing t = time_device(
      stream, [&](int) { copy(src, dst, stream); }, 3, 20);
  return 8.0 * static_cast<double>(n) / (t.median_us * 1e3);
}

double report_copy_ceiling(const Stream& stream) {
  const double gbps = measure_copy_gbps(stream);
  std::printf("%s\n",
              nlohmann::json({{"name", "device_copy_ceiling"}, {"GB/s", gbps}}).dump().c_str());
  std::fflush(stdout);
  return gbps;
}

void validate(bool ok, const std::string& what) {
  if (!ok) throw Error("bench", "validation failed: " + what);
}

}  // namespace mlxn::bench
