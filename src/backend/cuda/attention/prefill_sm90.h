// The wgmma prefill-attention kernel (prefill_sm90.cu), chosen by prefill.cu where it applies.
#pragma once

#include <cstdint>

#include "backend/cuda/attention/prefill_common.cuh"
#include "mlxn/core/device.h"
#include "mlxn/core/dtype.h"
#include "mlxn/core/stream.h"

namespace mlxn::cuda {

// True when this build carries sm_90a code (MLXN_CUDA_SM90A), the device is compute capability
// 9.0 and dim is 64, 128 or 256.
bool prefill_sm90_available(int dim, const Device& device);
void prefill_attention_sm90(const prefill::Params& p, DType dtype, int dim, int batch,
                            int64_t max_q_len, bool softcap, const Stream& stream);

}  // namespace mlxn::cuda
