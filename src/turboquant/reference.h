// The TurboQuant codec for single vectors: the executable definition of the format
// (docs/turboquant.md). The CPU backend runs it; every CUDA kernel must reproduce its codes
// byte for byte and its scales and decoded values bit for bit.
#pragma once

#include <cstdint>

namespace mlxn::tq::reference {

// y = H * (s .* x), unnormalised, in place: stages h = 1, 2, ..., dim/2 in that order, each
// butterfly (a, b) -> (a + b, a - b) with a the lower index.
void fwht(float* v, int dim);

// The canonical reduction sum_j a_j * b_j (groups of 16 with fma, then a pairwise tree).
float reduce_dot(const float* a, const float* b, int dim);

// y = R x with R = H S / sqrt(dim) (signs off only to demonstrate why they are needed).
void rotate(const float* x, float* y, int dim, bool use_signs = true);
// x = R^T y = S H y / sqrt(dim).
void inverse_rotate(const float* y, float* x, int dim, bool use_signs = true);

// Encodes x (dim values) into payload (dim * bits / 8 bytes) and an fp16 scale. Returns false
// and stores zeros when x holds NaN or Inf.
bool encode(const float* x, int dim, int bits, uint8_t* payload, uint16_t* scale,
            bool use_signs = true);

// The code of a normalised coordinate u: the number of codebook boundaries strictly below u.
int quantize(float u, int bits);

// code j of a packed payload (little-endian bit stream, code j at bits [j*bits, (j+1)*bits)).
int code_at(const uint8_t* payload, int bits, int j);

// y_hat_j = alpha * C[c_j] (rotated domain).
void decode_rotated(const uint8_t* payload, uint16_t scale, int dim, int bits, float* y);
// x_hat = R^T y_hat (original domain).
void decode_original(const uint8_t* payload, uint16_t scale, int dim, int bits, float* x,
                     bool use_signs = true);

}  // namespace mlxn::tq::reference
