// Benchmark harness: validate first, then time with device events (warm-up, median of many),
// rotate inputs beyond the L2 cache, and print one JSON object per case on stdout.
#pragma once

#include <functional>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "mlxn/mlxn.h"

namespace mlxn::bench {

// True when a CUDA device is usable; otherwise prints why to stderr (benches then exit 1).
bool have_gpu();

struct Timing {
  double median_us = 0;
  double min_us = 0;
  double p90_us = 0;
  int runs = 0;
};

// Times run(i) for i = 0, 1, 2, ... (use i to rotate among input sets) between two events on
// `stream`, one event pair per run; `warmup` untimed runs first.
Timing time_device(const Stream& stream, const std::function<void(int)>& run, int warmup = 5,
                   int runs = 50);

// How many input sets of `bytes_per_set` bytes make the working set at least 4x the L2 cache,
// so repeated runs read from device memory, not the cache.
int rotation_sets(int64_t bytes_per_set, Device device);

struct Case {
  std::string name;
  nlohmann::json shape;
  Timing timing;
  double bytes = 0;  // fewest bytes the op must move (each input read once, output written once)
  double flops = 0;
};

// Prints the case as one JSON line: name, shape, median_us, min_us, p90_us, bytes, GB/s, % of
// `ceiling_gbps` (when > 0), FLOPs, TFLOP/s. Returns the JSON.
nlohmann::json emit(const Case& c, double ceiling_gbps = 0);

// The device-to-device copy bandwidth (read + write) of `device`: a 1 GiB cudaMemcpyAsync,
// median of 20. Every bench reports its GB/s against this ceiling.
double measure_copy_gbps(const Stream& stream);
// measure_copy_gbps, printed as the JSON line {"name": "device_copy_ceiling", "GB/s": ...}.
double report_copy_ceiling(const Stream& stream);

// Throws Error("[bench] ...") when `ok` is false: a benchmark never times wrong results.
void validate(bool ok, const std::string& what);

}  // namespace mlxn::bench
