// CUDA implementation of ops/turboquant.h. Arguments are validated by the front end.
#pragma once

#include <cstdint>

#include "mlxn/ops/turboquant.h"
#include "turboquant/encode_job.h"

namespace mlxn::cuda {

// Picks the encoder (tq::Encoder) and launches it: one launch for K and V when they share a
// bit width, else one per tensor on the bulk path.
void tq_encode(const tq::EncodeJob* jobs, int job_count, const Buffer& positions,
               const Buffer& page_table, uint32_t index_site, const Stream& stream);
// The bulk encoder (encode_rows.cu), called by tq_encode with a non-empty batch of fewer than
// 2^31 vectors: head_dim 64 or 128, the jobs sharing one bit width.
void tq_encode_rows(const tq::EncodeJob* jobs, int job_count, const Buffer& positions,
                    const Buffer& page_table, uint32_t index_site, const Stream& stream);
// ring_pages > 0: logical page n is page_table[n % ring_pages] (sliding-window rings).
void tq_dequantize(const TqCache& cache, const Buffer& page_table, int64_t start, const Buffer& out,
                   TqDomain domain, uint32_t index_site, const Stream& stream, int ring_pages = 0);
void tq_rotate(const Buffer& x, const Buffer& out, bool inverse, const Stream& stream);

}  // namespace mlxn::cuda
