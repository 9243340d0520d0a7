// CPU backend of ops/attention.h: the reference prefill attention (f64 accumulation over the
// inputs' exact values) and the dense gather of a cached sequence.
#pragma once

#include <cstdint>

#include "attention/prefill_job.h"
#include "mlxn/ops/kv_cache.h"

namespace mlxn::cpu {

void prefill_attention(const attention::PrefillJob& job, const Stream& stream);
// Positions [start, start + out.dim(0)) of one sequence of `store` (see mlxn::kv_gather).
void kv_gather(const KvStore& store, const Buffer& page_table, int ring_pages, int64_t start,
               const Buffer& out, uint32_t index_site, const Stream& stream);

}  // namespace mlxn::cpu
