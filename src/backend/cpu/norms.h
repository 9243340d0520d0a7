// CPU reference of ops/norms.h: statistics in f64, one rounding to the output dtype.
#pragma once

#include "norms/norm_job.h"

namespace mlxn::cpu {

void normalize(const norms::Job& job, const Stream& stream);

}  // namespace mlxn::cpu
