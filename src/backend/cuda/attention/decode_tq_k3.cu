// TurboQuant decode-attention instances with 3-bit keys.
#define MLXN_DECODE_K_BITS 3
#include "backend/cuda/attention/decode_tq_instances.cuh"
