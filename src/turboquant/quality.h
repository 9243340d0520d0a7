// TurboQuant quality measurement on the CPU reference: the spec's vector sets and error figures
// (relative MSE, inner-product error, attention-output error). Used by `mlxn tq-eval` and by the
// tests that hold the format to the spec's targets.
#pragma once

#include <cstdint>
#include <string_view>

namespace mlxn::tq {

enum class VectorSet {
  gaussian,      // N(0, 1) per coordinate
  heavy_tailed,  // N(0, 1) with 4 fixed channels 20x larger (what real K vectors look like)
  biased,        // 0.3 N(0, 1) + 3: one offset shared by every vector (a key bias)
};
std::string_view vector_set_name(VectorSet set);

struct QualityOptions {
  int bits = 4;
  int dim = 128;
  VectorSet set = VectorSet::gaussian;
  int64_t vectors = 10000;
  uint64_t seed = 1;
  bool use_signs = true;  // false only to show what the random signs are for
};

struct Quality {
  double relative_mse = 0;        // mean over vectors of |x - x_hat|^2 / |x|^2
  double inner_product_rms = 0;   // rms(<q,x_hat> - <q,x>) / rms(<q,x>), q ~ N(0, I)
  double inner_product_bias = 0;  // mean(<q,x_hat> - <q,x>) / rms(<q,x>)
};

Quality measure_quality(const QualityOptions& options);

// The synthetic decode case: softmax over `keys` keys (scores q.k / sqrt(dim)) where 4 keys
// dominate, output sum p_t v_t; K and V both quantised at `bits`. Returns |o - o_hat| / |o|.
double attention_output_error(int bits, int dim, int64_t keys = 4096, uint64_t seed = 7);

// Lloyd-Max MSE of N(0,1) at `bits`, the reference figure for relative_mse.
double lloyd_max_mse(int bits);

}  // namespace mlxn::tq
