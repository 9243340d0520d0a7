// TurboQuant decode-attention instances with 5-bit keys.
#define MLXN_DECODE_K_BITS 5
#include "backend/cuda/attention/decode_tq_instances.cuh"
