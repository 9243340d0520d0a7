// CUDA implementation of ops/sampling.h (arguments validated by the front end).
#pragma once

#include "sampling/sampling_job.h"

namespace mlxn::cuda {

void sample(const sampling::Job& job, const Stream& stream);
void apply_penalties(const sampling::PenaltyJob& job, const Stream& stream);

}  // namespace mlxn::cuda
