#include "formats/mlx_affine_quantize.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

namespace mlxn::formats {

void mlx_affine_quantize_row(const float* w, int64_t cols, int bits, int group_size,
                             uint8_t* packed, float* scales, float* biases) {
  const float n_bins = static_cast<float>((1 << bits) - 1);
  const float eps = 1e-7f;
  std::memset(packed, 0, static_cast<size_t>(cols * bits / 8));
  for (int64_t g = 0; g < cols / group_size; ++g) {
    const float* v = w + g * group_size;
    float w_min = std::numeric_limits<float>::infinity(), w_max = -w_min;
    for (int j = 0; j < group_size; ++j) {
      w_max = std::max(w_max, v[j]);
      w_min = std::min(w_min, v[j]);
    }
    // The edge of larger magnitude sits exactly on the grid; when it is the maximum the scale
    // is negative so that the codes still count up from the edge.
    const bool min_is_edge = std::abs(w_min) > std::abs(w_max);
    float scale = std::max((w_max - w_min) / n_bins, eps);
    scale = min_is_edge ? scale : -scale;
    const float edge = min_is_edge ? w_min : w_max;
    const float q0 = std::rint(edge / scale);
    float bias = 0.0f;
    if (q0 != 0.0f) {
      scale = edge / q0;
      bias = edge;
    }
    for (int j = 0; j < group_size; ++j) {
      const float q = std::min(std::max(std::rint((v[j] - bias) / scale), 0.0f), n_bins);
      const int64_t bit = (g * group_size + j) * bits;
      const uint32_t code = static_cast<uint32_t>(q) << (bit & 7);
      packed[bit >> 3] = static_cast<uint8_t>(packed[bit >> 3] | (code & 0xffu));
      if ((bit & 7) + bits > 8) {
        packed[(bit >> 3) + 1] = static_cast<uint8_t>(packed[(bit >> 3) + 1] | (code >> 8));
      }
    }
    scales[g] = scale;
    biases[g] = bias;
  }
}

}  // namespace mlxn::formats
