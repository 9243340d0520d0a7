// TurboQuant decode-attention instances with 2-bit keys.
#define MLXN_DECODE_K_BITS 2
#include "backend/cuda/attention/decode_tq_instances.cuh"
