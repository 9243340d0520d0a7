// Next-token selection on the device: argmax, temperature / top-k / top-p / min-p sampling, and
// repetition / presence / frequency penalties over a token history.
//
// sample() draws from the distribution transformers' warpers define, applied in their order:
//   z = logits / temperature
//   top-k: keep tokens whose z is >= the k-th largest z (ties at the boundary are all kept)
//   top-p: over the top-k survivors, renormalised, keep a token when the probability mass of the
//          tokens strictly above it is < top_p (the smallest head of the sorted distribution
//          reaching top_p; tokens tied at the boundary are all kept; the top token always is)
//   min-p: keep tokens with p >= min_p * max p  (equivalently exp(z - max z) >= min_p)
// and draws among the kept tokens by the Gumbel-max rule: argmax(z_i + g_i), where g_i is
// Gumbel noise from Philox4x32-10 keyed by the row's seed with counter (step << 32 | i). The
// draw of a row depends only on its logits, seed and step: not on the batch, the launch shape
// or earlier calls. Masses for top-p are summed in fixed point (2^-40 units), so the kept set is
// exactly reproducible too. Each call advances every row's step by one (so a CUDA graph replay
// draws fresh numbers).
//
// NaN logits are reported as a device error (raised when the stream synchronises) and count
// as -inf; a row without a finite logit is reported too and gets token -1.
#pragma once

#include <cstdint>

#include "mlxn/core/buffer.h"
#include "mlxn/core/stream.h"

namespace mlxn {

struct SamplingParams {
  float temperature = 1.0f;  // > 0; 0 selects argmax (greedy)
  int64_t top_k = 0;         // 0: off
  float top_p = 1.0f;        // in (0, 1]; 1: off
  float min_p = 0.0f;        // in [0, 1]; 0: off
};

// logits: [batch, vocab] f32/bf16/f16, contiguous, vocab <= 2^31 - 1. out: i32 [batch], the
// first index of each row's maximum.
void argmax(const Buffer& logits, const Buffer& out, const Stream& stream);

// seeds, steps: i64 [batch] (bit patterns of u64); steps[b] += 1 on every call.
void sample(const Buffer& logits, const SamplingParams& params, const Buffer& seeds,
            const Buffer& steps, const Buffer& out, const Stream& stream);

struct PenaltyParams {
  float repetition = 1.0f;  // > 0: logit / r when positive, logit * r when negative (HF, CTRL)
  float presence = 0.0f;    // subtracted once from every token that occurs
  float frequency = 0.0f;   // subtracted once per occurrence
};

// In place on logits [batch, vocab]: every distinct token of history[b] (i32 [batch, length];
// negative entries are padding, entries >= vocab a device error) is penalised once, by its count
// of occurrences; the result is rounded to the logits' dtype.
void apply_penalties(const Buffer& logits, const Buffer& history, const PenaltyParams& params,
                     const Stream& stream);

}  // namespace mlxn
