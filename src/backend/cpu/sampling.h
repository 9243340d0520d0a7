// CPU reference of ops/sampling.h: the kept set from sorted logits and exact (f64)
// probabilities, the same Gumbel variates as the GPU.
#pragma once

#include "sampling/sampling_job.h"

namespace mlxn::cpu {

void sample(const sampling::Job& job, const Stream& stream);
void apply_penalties(const sampling::PenaltyJob& job, const Stream& stream);

}  // namespace mlxn::cpu
