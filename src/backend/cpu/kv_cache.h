// CPU backend of ops/kv_cache.h: dense K/V writes and the reference decode attention
// (f64 accumulation over values decoded exactly as each cache type defines them).
#pragma once

#include <cstdint>
#include <vector>

#include "attention/decode_job.h"
#include "mlxn/ops/kv_cache.h"

namespace mlxn::cpu {

// x [tokens, kv_heads, dim] (contiguous) into a bf16 / f16 / fp8 store at global slots.
void kv_write(const Buffer& x, const Buffer& slots, const KvStore& store, bool calibrate_fp8,
              uint32_t value_site, uint32_t index_site, const Stream& stream);
void decode_attention(const attention::DecodeJob& job, const Stream& stream);

// The value of element j of the vector in `slot` of `store`, as attention must see it: the
// dense value (fp8 times its head's scale) or, for TurboQuant, y_hat_j = alpha * C[c_j] in the
// rotated domain. Used by the reference and by the tests' error bounds.
void load_cached_vector(const KvStore& store, int64_t slot, int head, float* out);

// v <- R v (or R^T v when `inverse`) in double: the TurboQuant rotation (signs, then the
// normalised Walsh-Hadamard transform), for references that work in the original domain.
void rotate_f64(std::vector<double>& v, bool inverse);

}  // namespace mlxn::cpu
