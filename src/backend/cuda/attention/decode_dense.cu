// Decode-attention instances for the dense cache types: bf16, f16 and fp8 (K and V alike).
#include "backend/cuda/attention/decode_launch.h"
#include "mlxn/core/error.h"

namespace mlxn::cuda::decode {

Kernel dense_kernel(KvType type, int dim) {
  const auto pick = [&](auto format) {
    using F = decltype(format);
    return kernel_for_dim<F, F>(dim);
  };
  switch (type) {
    case KvType::bf16:
      return pick(DenseFormat<__nv_bfloat16>{});
    case KvType::f16:
      return pick(DenseFormat<__half>{});
    case KvType::fp8:
      return pick(Fp8Format{});
    default:
      throw Error("decode_attention",
                  "no GPU kernel for the " + std::string(kv_type_name(type)) + " cache type");
  }
}

}  // namespace mlxn::cuda::decode
