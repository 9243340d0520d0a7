#include "backend/cpu/matmul.h"

#include <cstring>
#include <vector>

#include "backend/cpu/cpu_types.h"
#include "formats/ggml.h"
#include "formats/mlx_affine.h"
#include "mlxn/core/device_errors.h"
#include "portable/error_state.h"

namespace mlxn::cpu {

void dequantize_row(const Weight& w, int64_t row, float* out) {
  const int64_t k = w.in_features();
  switch (w.format()) {
    case WeightFormat::dense:
      for (int64_t c = 0; c < k; ++c) out[c] = load_float(w.data(), row * k + c);
      return;
    case WeightFormat::mlx_affine: {
      const int64_t groups = k / w.group_size();
      const auto* codes =
          reinterpret_cast<const uint8_t*>(w.data().data()) + row * (k * w.bits() / 8);
      // Scale and bias read once per group: this loop is the CPU's whole decode step for
      // quantized models, and a dtype dispatch per element made it several times slower.
      for (int64_t g = 0; g < groups; ++g) {
        const float scale = load_float(w.scales(), row * groups + g);
        const float bias = load_float(w.biases(), row * groups + g);
        for (int64_t c = g * w.group_size(); c < (g + 1) * w.group_size(); ++c) {
          out[c] =
              formats::mlx_affine_value(formats::mlx_affine_code(codes, c, w.bits()), scale, bias);
        }
      }
      return;
    }
    default: {
      const int64_t row_bytes = w.data().dim(1);
      formats::dequantize_row(
          w.format(), static_cast<const uint8_t*>(w.data().data()) + row * row_bytes, k, out);
      return;
    }
  }
}

void dequantize(const Weight& w, const Buffer& out, const Stream&) {
  const int64_t k = w.in_features();
  std::vector<float> row(static_cast<size_t>(k));
  for (int64_t r = 0; r < w.out_features(); ++r) {
    dequantize_row(w, r, row.data());
    for (int64_t c = 0; c < k; ++c) store_float(out, r * k + c, row[static_cast<size_t>(c)]);
  }
}

void embedding(const linear::EmbeddingJob& job, const Stream& stream) {
  const int64_t k = job.table.in_features(), vocab = job.table.out_features();
  const int32_t* ids = job.ids.data_as<const int32_t>();
  std::vector<float> row(static_cast<size_t>(k));
  for (int64_t t = 0; t < job.tokens; ++t) {
    const int64_t id = ids[t];
    if (id < 0 || id >= vocab) {
      report_device_error(device_error_state(stream.device()), DeviceErrorCode::index_out_of_range,
                          job.site, t, id, 0.0f);
      std::fill(row.begin(), row.end(), 0.0f);
    } else {
      dequantize_row(job.table, id, row.data());
    }
    for (int64_t c = 0; c < k; ++c) store_float(job.out, t * k + c, row[static_cast<size_t>(c)]);
  }
}

void matmul(const linear::Job& job, const Stream&) {
  const int64_t m = job.m, n = job.n, k = job.k;
  std::vector<float> x(static_cast<size_t>(m * k)), w(static_cast<size_t>(k));
  for (int64_t i = 0; i < m * k; ++i) x[static_cast<size_t>(i)] = load_float(job.x, i);
  for (int64_t r = 0; r < n; ++r) {
    dequantize_row(job.w, r, w.data());
    const double b = job.bias.defined() ? load_float(job.bias, r) : 0.0;
    for (int64_t i = 0; i < m; ++i) {
      double acc = 0.0;
      const float* xi = x.data() + i * k;
      for (int64_t c = 0; c < k; ++c) {
        acc += static_cast<double>(xi[c]) * static_cast<double>(w[static_cast<size_t>(c)]);
      }
      store_float(job.out, i * n + r, static_cast<float>(acc + b));
    }
  }
}

}  // namespace mlxn::cpu
