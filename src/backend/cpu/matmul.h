// CPU reference of ops/matmul.h and ops/weights.h: each weight row is dequantized to f32 exactly
// as the format defines (the same formulas the GPU uses, bit for bit), products accumulate in f64.
#pragma once

#include "matmul/matmul_job.h"

namespace mlxn::cpu {

// Row `row` of the weight as f32 (K values), by the format's dequantization formula.
void dequantize_row(const Weight& w, int64_t row, float* out);

void dequantize(const Weight& w, const Buffer& out, const Stream& stream);
void embedding(const linear::EmbeddingJob& job, const Stream& stream);
void matmul(const linear::Job& job, const Stream& stream);

}  // namespace mlxn::cpu
