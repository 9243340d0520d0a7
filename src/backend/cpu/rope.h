// CPU reference for rope and rms_norm_rope: f64 arithmetic on the f32 angle the op defines.
#pragma once

#include "rope/rope_job.h"

namespace mlxn::cpu {

void rope(const rotary::Job& job, const Stream& stream);

}  // namespace mlxn::cpu
