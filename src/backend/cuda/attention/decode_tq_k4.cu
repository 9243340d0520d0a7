// TurboQuant decode-attention instances with 4-bit keys.
#define MLXN_DECODE_K_BITS 4
#include "backend/cuda/attention/decode_tq_instances.cuh"
