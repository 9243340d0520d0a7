// TurboQuant decode-attention instances with 6-bit keys.
#define MLXN_DECODE_K_BITS 6
#include "backend/cuda/attention/decode_tq_instances.cuh"
