// The validated arguments of one normalisation, as the backends receive them.
#pragma once

#include <cstdint>

#include "mlxn/ops/norms.h"

namespace mlxn::norms {

enum class Kind { rms, layer, l2 };

struct Job {
  Kind kind = Kind::rms;
  RmsWeight weight_mode = RmsWeight::none;
  Buffer x, residual, weight, bias, sum_out, out;  // residual / sum_out: add_rms_norm only
  float eps = 0.0f;
  int64_t rows = 0, dim = 0;
};

}  // namespace mlxn::norms
