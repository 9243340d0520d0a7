// MLX's affine quantizer on the host (the reference the converter uses); see ops/weights.h for
// the algorithm. Exactly MLX's CPU quantizer: f32 arithmetic, rint (half to even), codes from the
// unrounded f32 scale and bias.
#pragma once

#include <cstdint>

namespace mlxn::formats {

// One row of `cols` values: writes cols·bits/8 bytes of packed codes and cols/group_size scales
// and biases (f32, before any rounding to the model dtype).
void mlx_affine_quantize_row(const float* w, int64_t cols, int bits, int group_size,
                             uint8_t* packed, float* scales, float* biases);

}  // namespace mlxn::formats
