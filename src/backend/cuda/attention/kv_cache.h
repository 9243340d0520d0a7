// CUDA implementation of ops/kv_cache.h (arguments validated by the front end).
#pragma once

#include <cstdint>

#include "attention/decode_job.h"
#include "mlxn/ops/kv_cache.h"

namespace mlxn::cuda {

void kv_write(const Buffer& x, const Buffer& slots, const KvStore& store, bool calibrate_fp8,
              uint32_t value_site, uint32_t index_site, const Stream& stream);
void decode_attention(const attention::DecodeJob& job, const Stream& stream);

}  // namespace mlxn::cuda
