// CUDA implementation of ops/attention.h (arguments validated by the front end).
#pragma once

#include <cstdint>

#include "attention/prefill_job.h"
#include "mlxn/ops/kv_cache.h"

namespace mlxn::cuda {

void prefill_attention(const attention::PrefillJob& job, const Stream& stream);
// Positions [start, start + out.dim(0)) of one sequence from any store type (see kv_gather).
void kv_gather(const KvStore& store, const Buffer& page_table, int ring_pages, int64_t start,
               const Buffer& out, uint32_t index_site, const Stream& stream);

}  // namespace mlxn::cuda
