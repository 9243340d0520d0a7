// CUDA implementation of ops/rope.h (arguments validated by the front end).
#pragma once

#include "rope/rope_job.h"

namespace mlxn::cuda {

void rope(const rotary::Job& job, const Stream& stream);

}  // namespace mlxn::cuda
