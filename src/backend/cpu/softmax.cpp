#include "backend/cpu/softmax.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "backend/cpu/cpu_types.h"

namespace mlxn::cpu {

void softmax(const Buffer& x, const Buffer& out, float temperature, bool log,
             const Stream& stream) {
  stream.submit_host([x, out, temperature, log] {
    const int64_t n = x.dim(-1), rows = x.numel() / n;
    const double t = temperature;
    std::vector<double> z(static_cast<size_t>(n));
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t base = r * n;
      // The row is read whole before any output is written: out may be x itself.
      double m = -INFINITY;
      bool nan = false;
      for (int64_t i = 0; i < n; ++i) {
        z[static_cast<size_t>(i)] = load_float(x, base + i);
        nan = nan || std::isnan(z[static_cast<size_t>(i)]);
        m = std::max(m, z[static_cast<size_t>(i)]);
      }
      if (m == -INFINITY) {  // only -inf: no distribution (ops/softmax.h)
        for (int64_t i = 0; i < n; ++i) store_float(out, base + i, log ? -INFINITY : 0.0f);
        continue;
      }
      // NaN, and +inf through inf - inf, poison the sum and with it the whole row.
      if (nan) m = NAN;
      double sum = 0;
      for (double& v : z) {
        v = (v - m) / t;
        sum += std::exp(v);
      }
      const double log_sum = std::log(sum);
      for (int64_t i = 0; i < n; ++i) {
        const double v = z[static_cast<size_t>(i)];
        store_float(out, base + i, static_cast<float>(log ? v - log_sum : std::exp(v) / sum));
      }
    }
  });
}

}  // namespace mlxn::cpu
