#include "backend/cpu/sampling.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <numeric>
#include <vector>

#include "backend/cpu/cpu_types.h"
#include "mlxn/core/device_errors.h"
#include "portable/error_state.h"
#include "portable/sampling.h"

namespace mlxn::cpu {

namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// The kept set of one row (see ops/sampling.h), as a per-token flag.
std::vector<bool> kept_tokens(const std::vector<float>& z, float z_max, const SamplingParams& p) {
  const auto v = static_cast<int64_t>(z.size());
  std::vector<int64_t> order(z.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return z[a] > z[b]; });
  std::vector<bool> kept(z.size(), true);
  int64_t n = v;  // the top-k survivors are order[0, n)
  if (p.top_k > 0 && p.top_k < v) {
    const float kth = z[order[p.top_k - 1]];
    n = p.top_k;
    while (n < v && z[order[n]] == kth) ++n;
  }
  std::vector<double> prob(z.size(), 0.0);
  double total = 0;
  for (int64_t i = 0; i < n; ++i) {
    prob[order[i]] = std::exp(double{z[order[i]]} - z_max);
    total += prob[order[i]];
  }
  int64_t m = n;  // the top-p survivors are order[0, m)
  if (p.top_p < 1.0f) {
    double above = 0;
    m = 0;
    while (m < n) {
      int64_t end = m;  // the group of tokens tied with order[m]
      double group = 0;
      while (end < n && z[order[end]] == z[order[m]]) group += prob[order[end++]];
      if (!(above < double{p.top_p} * total)) break;
      above += group;
      m = end;
    }
  }
  for (int64_t i = m; i < v; ++i) kept[order[i]] = false;
  if (p.min_p > 0.0f) {
    for (int64_t i = 0; i < v; ++i) kept[i] = kept[i] && std::exp(z[i] - z_max) >= p.min_p;
  }
  return kept;
}

}  // namespace

void sample(const sampling::Job& job, const Stream& stream) {
  DeviceErrorState* flag = device_error_state(Device::cpu());
  stream.submit_host([job, flag] {
    const int64_t v = job.vocab;
    std::vector<float> z(static_cast<size_t>(v));
    for (int64_t b = 0; b < job.batch; ++b) {
      float z_max = kNegInf;
      for (int64_t i = 0; i < v; ++i) {
        float x = load_float(job.logits, b * v + i);
        if (std::isnan(x)) {
          report_device_error(flag, DeviceErrorCode::non_finite, job.site, b * v + i, 0, x);
          x = kNegInf;
        }
        z[static_cast<size_t>(i)] = job.greedy ? x : x / job.params.temperature;
        z_max = std::max(z_max, z[static_cast<size_t>(i)]);
      }
      int32_t token = -1;
      if (z_max == kNegInf) {
        report_device_error(flag, DeviceErrorCode::non_finite, job.site, b * v, 0, z_max);
      } else if (job.greedy) {
        token = static_cast<int32_t>(std::max_element(z.begin(), z.end()) - z.begin());
      } else {
        const std::vector<bool> kept = kept_tokens(z, z_max, job.params);
        const auto seed = static_cast<uint64_t>(job.seeds.data_as<const int64_t>()[b]);
        const auto step = static_cast<uint64_t>(job.steps.data_as<const int64_t>()[b]);
        float best = kNegInf;
        for (int64_t i = 0; i < v; ++i) {
          if (!kept[static_cast<size_t>(i)]) continue;
          const float u = portable::sampling_uniform(seed, step, static_cast<uint32_t>(i));
          const float score = z[static_cast<size_t>(i)] - std::log(-std::log(u));
          if (token < 0 || score > best) {
            best = score;
            token = static_cast<int32_t>(i);
          }
        }
      }
      job.out.data_as<int32_t>()[b] = token;
      if (!job.greedy) ++job.steps.data_as<int64_t>()[b];
    }
  });
}

void apply_penalties(const sampling::PenaltyJob& job, const Stream& stream) {
  DeviceErrorState* flag = device_error_state(Device::cpu());
  stream.submit_host([job, flag] {
    const auto* history = job.history.data_as<const int32_t>();
    for (int64_t b = 0; b < job.batch; ++b) {
      std::map<int32_t, int64_t> counts;
      for (int64_t j = 0; j < job.length; ++j) {
        const int32_t t = history[b * job.length + j];
        if (t < 0) continue;
        if (t >= job.vocab) {
          report_device_error(flag, DeviceErrorCode::index_out_of_range, job.site,
                              b * job.length + j, t, 0);
          continue;
        }
        ++counts[t];
      }
      for (const auto& [t, n] : counts) {
        const int64_t at = b * job.vocab + t;
        float x = load_float(job.logits, at);
        const PenaltyParams& p = job.params;
        x = x > 0.0f ? x / p.repetition : x * p.repetition;
        x = x - p.presence - p.frequency * static_cast<float>(n);
        store_float(job.logits, at, x);
      }
    }
  });
}

}  // namespace mlxn::cpu
