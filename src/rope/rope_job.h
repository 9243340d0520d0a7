// The validated arguments of one rope / rms_norm_rope call, as the backends receive them.
#pragma once

#include <cstdint>

#include "mlxn/ops/rope.h"

namespace mlxn::rotary {

struct Job {
  Buffer x, positions, weight, inv_freq, out;  // weight: rms_norm_rope with a weight only
  float attention_scaling = 1.0f;
  RopePairing pairing = RopePairing::half;
  bool norm = false;  // rms_norm_rope
  RmsWeight weight_mode = RmsWeight::none;
  float eps = 0.0f;
  int64_t tokens = 0, heads = 0, head_dim = 0, rotary_dim = 0;
  int64_t x_token_stride = 0, out_token_stride = 0;  // elements
  uint32_t position_site = 0;                        // device error site for negative positions
};

}  // namespace mlxn::rotary
