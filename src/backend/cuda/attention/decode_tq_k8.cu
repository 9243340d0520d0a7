// TurboQuant decode-attention instances with 8-bit keys.
#define MLXN_DECODE_K_BITS 8
#include "backend/cuda/attention/decode_tq_instances.cuh"
