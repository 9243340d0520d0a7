#include "backend/cpu/rope.h"

#include <cmath>
#include <vector>

#include "backend/cpu/cpu_types.h"
#include "mlxn/core/device_errors.h"
#include "portable/error_state.h"

namespace mlxn::cpu {

void rope(const rotary::Job& job, const Stream& stream) {
  DeviceErrorState* flag = device_error_state(Device::cpu());
  stream.submit_host([job, flag] {
    const int64_t d = job.head_dim, half = job.rotary_dim / 2;
    const auto* positions = job.positions.data_as<const int32_t>();
    const auto* inv_freq = job.inv_freq.data_as<const float>();
    // Element offsets from each buffer's first element (the token axis may be strided).
    const auto x_at = [&](int64_t t, int64_t h, int64_t i) {
      return load_float(job.x, t * job.x_token_stride + h * d + i);
    };
    std::vector<double> v(static_cast<size_t>(d)), c(static_cast<size_t>(half)),
        s(static_cast<size_t>(half));
    for (int64_t t = 0; t < job.tokens; ++t) {
      const int32_t p = positions[t];
      if (p < 0) {
        report_device_error(flag, DeviceErrorCode::index_out_of_range, job.position_site, t, p, 0);
      }
      for (int64_t j = 0; j < half; ++j) {
        // The angle is rounded to f32 as the op defines it; cos and sin of it are exact here.
        const float angle = static_cast<float>(p) * inv_freq[j];
        c[static_cast<size_t>(j)] = std::cos(double{angle}) * job.attention_scaling;
        s[static_cast<size_t>(j)] = std::sin(double{angle}) * job.attention_scaling;
      }
      for (int64_t h = 0; h < job.heads; ++h) {
        double inv = 1.0;
        if (job.norm) {
          double sq = 0;
          for (int64_t i = 0; i < d; ++i) sq += x_at(t, h, i) * double{x_at(t, h, i)};
          inv = 1.0 / std::sqrt(sq / static_cast<double>(d) + job.eps);
        }
        for (int64_t i = 0; i < d; ++i) {
          double y = x_at(t, h, i) * inv;
          if (job.weight.defined()) {
            const double w = load_float(job.weight, i);
            y *= job.weight_mode == RmsWeight::one_plus ? 1.0 + w : w;
          }
          v[static_cast<size_t>(i)] = y;
        }
        if (p >= 0) {
          for (int64_t j = 0; j < half; ++j) {
            const bool interleaved = job.pairing == RopePairing::interleaved;
            const auto ia = static_cast<size_t>(interleaved ? 2 * j : j);
            const auto ib = static_cast<size_t>(interleaved ? 2 * j + 1 : j + half);
            const double a = v[ia], b = v[ib];
            const auto k = static_cast<size_t>(j);
            v[ia] = a * c[k] - b * s[k];
            v[ib] = b * c[k] + a * s[k];
          }
        }
        for (int64_t i = 0; i < d; ++i) {
          store_float(job.out, t * job.out_token_stride + h * d + i,
                      static_cast<float>(v[static_cast<size_t>(i)]));
        }
      }
    }
  });
}

}  // namespace mlxn::cpu
