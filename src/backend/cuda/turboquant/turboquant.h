// CUDA implementation of ops/turboquant.h. Arguments are validated by the front end.
#pragma once

#include <cstdint>

#include "mlxn/ops/turboquant.h"
#include "turboquant/encode_job.h"

namespace mlxn::cuda {

void tq_encode(const tq::EncodeJob* jobs, int job_count, const Buffer& positions,
               const Buffer& page_table, uint32_t index_site, const Stream& stream);
void tq_dequantize(const TqCache& cache, const Buffer& page_table, int64_t start, const Buffer& out,
                   TqDomain domain, uint32_t index_site, const Stream& stream);
void tq_rotate(const Buffer& x, const Buffer& out, bool inverse, const Stream& stream);

}  // namespace mlxn::cuda
