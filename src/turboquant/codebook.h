// Host access to the TurboQuant codebooks (src/portable/tq_codebooks.h holds the numbers) and
// the format's size rules.
#pragma once

#include <cstdint>
#include <vector>

#include "mlxn/core/dispatch.h"
#include "portable/turboquant.h"

namespace mlxn::tq {

// The supported parameter sets, defined once: validation, dispatch and error messages use these.
using Bits = IntList<2, 3, 4, 5, 6, 8>;
using Dims = IntList<64, 128, 256, 512>;
using InputDTypes = DTypeList<DType::f32, DType::bf16, DType::f16>;

struct Codebook {
  int bits = 0;
  std::vector<float> centroids;   // 2^bits, ascending
  std::vector<float> boundaries;  // 2^bits - 1 midpoints: code = #boundaries strictly below u
};

// Throws Error("[op] ...") naming the supported values.
void require_bits(int bits, const char* op);
void require_dim(int dim, const char* op);
bool supported_bits(int bits);
bool supported_dim(int dim);

const Codebook& codebook(int bits);
// Bytes of one vector's packed codes: dim * bits / 8.
inline int64_t payload_bytes(int dim, int bits) { return int64_t{dim} * bits / 8; }

}  // namespace mlxn::tq
