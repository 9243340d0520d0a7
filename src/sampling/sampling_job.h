// The validated arguments of argmax / sample / apply_penalties, as the backends receive them.
#pragma once

#include <cstdint>

#include "mlxn/ops/sampling.h"

namespace mlxn::sampling {

struct Job {
  Buffer logits, seeds, steps, out;  // seeds / steps undefined for argmax
  SamplingParams params;
  bool greedy = false;
  int64_t batch = 0, vocab = 0;
  uint32_t site = 0;  // device error site: non-finite logits
};

struct PenaltyJob {
  Buffer logits, history;
  PenaltyParams params;
  int64_t batch = 0, vocab = 0, length = 0;
  uint32_t site = 0;  // device error site: history entries >= vocab
};

}  // namespace mlxn::sampling
