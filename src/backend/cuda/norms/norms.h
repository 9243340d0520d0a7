// CUDA implementation of ops/norms.h (arguments validated by the front end).
#pragma once

#include "norms/norm_job.h"

namespace mlxn::cuda {

void normalize(const norms::Job& job, const Stream& stream);

}  // namespace mlxn::cuda
