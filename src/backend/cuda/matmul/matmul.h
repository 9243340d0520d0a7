// CUDA implementation of ops/matmul.h and ops/weights.h (arguments validated by the front ends).
//   gemv.cu       M ≤ 16 with bf16 / f16 x: the weight is read once in its packed form and
//                 decoded in registers into tensor-core fragments (the bandwidth path; MLX
//                 2/4/8-bit has its own leaner kernel there)
//   gemm.cu       everything else: cuBLASLt, the weight dequantized into x's dtype tile by tile
//   dequantize.cu dequantize and the embedding gather (bit-identical to the CPU reference), and
//                 the tensor-core path's staging (dequantize_rows)
//   packed_formats.cuh  how the packed formats are loaded and decoded, chunk by chunk
#pragma once

#include "matmul/matmul_job.h"

namespace mlxn::cuda {

void dequantize(const Weight& w, const Buffer& out, const Stream& stream);
void embedding(const linear::EmbeddingJob& job, const Stream& stream);
void matmul(const linear::Job& job, const Stream& stream);

// The bandwidth path: true when it ran (x bf16/f16, M ≤ 16, aligned), false when the job is not
// one it takes (the caller then runs the tensor-core path).
bool gemv_packed(const linear::Job& job, const Stream& stream);
// Rows [row0, row0 + rows) of the weight dequantized into out ([rows, K] of out's dtype,
// contiguous) for the tensor-core path: within one rounding of dequantize() (see dequantize.cu).
void dequantize_rows(const Weight& w, int64_t row0, int64_t rows, const Buffer& out,
                     const Stream& stream);

}  // namespace mlxn::cuda
