#include "backend/cpu/norms.h"

#include <cmath>
#include <vector>

#include "backend/cpu/cpu_types.h"

namespace mlxn::cpu {

void normalize(const norms::Job& job, const Stream& stream) {
  stream.submit_host([job] {
    const int64_t n = job.dim;
    std::vector<double> s(static_cast<size_t>(n));
    for (int64_t r = 0; r < job.rows; ++r) {
      const int64_t base = r * n;
      for (int64_t i = 0; i < n; ++i) {
        double v = load_float(job.x, base + i);
        if (job.residual.defined()) {
          // The sum is stored first and normalised as stored, like the model's residual stream.
          store_float(job.sum_out, base + i,
                      static_cast<float>(v + load_float(job.residual, base + i)));
          v = load_float(job.sum_out, base + i);
        }
        s[static_cast<size_t>(i)] = v;
      }
      double mean = 0, sq = 0;
      if (job.kind == norms::Kind::layer) {
        for (double v : s) mean += v;
        mean /= static_cast<double>(n);
        for (double v : s) sq += (v - mean) * (v - mean);
      } else {
        for (double v : s) sq += v * v;
      }
      const double denom = job.kind == norms::Kind::l2 ? sq : sq / static_cast<double>(n);
      const double inv = 1.0 / std::sqrt(denom + job.eps);
      for (int64_t i = 0; i < n; ++i) {
        double y = (s[static_cast<size_t>(i)] - mean) * inv;
        if (job.weight.defined()) {
          const double w = load_float(job.weight, i);
          y *= job.weight_mode == RmsWeight::one_plus ? 1.0 + w : w;
        }
        if (job.bias.defined()) y += load_float(job.bias, i);
        store_float(job.out, base + i, static_cast<float>(y));
      }
    }
  });
}

}  // namespace mlxn::cpu
