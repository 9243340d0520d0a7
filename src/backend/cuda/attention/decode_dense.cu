// Decode-attention instances for the dense cache types: bf16, f16 and fp8 (K and V alike).
#include "backend/cuda/attention/decode_launch.h"
#include "mlxn/core/error.h"

namespace mlxn::cuda::decode {

Kernel dense_kernel(int type, int dim) {
  const auto pick = [&](auto format) {
    using F = decltype(format);
    return kernel_for_dim<F, F>(dim);
  };
  switch (type) {
    case 0:
      return pick(DenseFormat<__nv_bfloat16>{});
    case 1:
      return pick(DenseFormat<__half>{});
    case 2:
      return pick(Fp8Format{});
    default:
      throw Error("decode_attention", "not a dense cache type: " + std::to_string(type));
  }
}

}  // namespace mlxn::cuda::decode
