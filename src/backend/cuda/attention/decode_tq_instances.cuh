// The TurboQuant instances for one K bit width (MLXN_DECODE_K_BITS), every V bit width and every
// head_dim; included once by each decode_tq_k<bits>.cu so the six build in parallel.
#include "backend/cuda/attention/decode_launch.h"

#define MLXN_DECODE_PASTE2(a, b) a##b
#define MLXN_DECODE_PASTE(a, b) MLXN_DECODE_PASTE2(a, b)

namespace mlxn::cuda::decode {

Kernel MLXN_DECODE_PASTE(tq_kernel_k, MLXN_DECODE_K_BITS)(int v_bits, int dim) {
  Kernel k;
  dispatch_int<tq::Bits>("decode_attention", "V bits", v_bits, [&](auto vb) {
    using KF = TqFormat<MLXN_DECODE_K_BITS>;
    using VF = TqFormat<decltype(vb)::value>;
    k = kernel_for_dim<KF, VF>(dim);
  });
  return k;
}

}  // namespace mlxn::cuda::decode
