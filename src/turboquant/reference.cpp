#include "turboquant/reference.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "mlxn/core/float_types.h"
#include "portable/turboquant.h"
#include "turboquant/codebook.h"

namespace mlxn::tq::reference {

using portable::add_rn;
using portable::div_rn;
using portable::fma_rn;
using portable::mul_rn;
using portable::sqrt_rn;

void fwht(float* v, int dim) {
  for (int h = 1; h < dim; h *= 2) {
    for (int i = 0; i < dim; i += 2 * h) {
      for (int j = i; j < i + h; ++j) {
        const float a = v[j], b = v[j + h];
        v[j] = add_rn(a, b);
        v[j + h] = add_rn(a, -b);
      }
    }
  }
}

float reduce_dot(const float* a, const float* b, int dim) {
  const int groups = dim / kGroup;
  float partial[512 / kGroup];
  for (int g = 0; g < groups; ++g) {
    float acc = 0.0f;
    for (int e = 0; e < kGroup; ++e) acc = fma_rn(a[g * kGroup + e], b[g * kGroup + e], acc);
    partial[g] = acc;
  }
  for (int m = groups / 2; m >= 1; m /= 2) {
    float next[512 / kGroup];
    for (int g = 0; g < groups; ++g) next[g] = add_rn(partial[g], partial[g ^ m]);
    std::memcpy(partial, next, sizeof(float) * static_cast<size_t>(groups));
  }
  return partial[0];
}

namespace {
float signed_value(float v, int j, bool use_signs) {
  return use_signs && sign_is_negative(j) ? -v : v;
}
}  // namespace

void rotate(const float* x, float* y, int dim, bool use_signs) {
  for (int j = 0; j < dim; ++j) y[j] = signed_value(x[j], j, use_signs);
  fwht(y, dim);
  const float inv = inv_sqrt_dim(dim);
  for (int j = 0; j < dim; ++j) y[j] = mul_rn(y[j], inv);
}

void inverse_rotate(const float* y, float* x, int dim, bool use_signs) {
  std::vector<float> t(y, y + dim);
  fwht(t.data(), dim);
  const float inv = inv_sqrt_dim(dim);
  for (int j = 0; j < dim; ++j)
    x[j] = signed_value(mul_rn(t[static_cast<size_t>(j)], inv), j, use_signs);
}

int quantize(float u, int bits) {
  const Codebook& book = codebook(bits);
  // The number of boundaries strictly below u: a u exactly on a boundary takes the lower code.
  return static_cast<int>(std::lower_bound(book.boundaries.begin(), book.boundaries.end(), u) -
                          book.boundaries.begin());
}

int code_at(const uint8_t* payload, int bits, int j) {
  const int bit = j * bits;
  uint32_t window = 0;  // a code spans at most two bytes
  std::memcpy(&window, payload + bit / 8, (bit % 8 + bits + 7) / 8);
  return static_cast<int>((window >> (bit % 8)) & ((1u << bits) - 1u));
}

bool encode(const float* x, int dim, int bits, uint8_t* payload, uint16_t* scale, bool use_signs) {
  require_dim(dim, "turboquant");
  const Codebook& book = codebook(bits);
  std::memset(payload, 0, static_cast<size_t>(payload_bytes(dim, bits)));
  *scale = 0;

  float max_abs = 0.0f;
  for (int j = 0; j < dim; ++j) {
    if (!std::isfinite(x[j])) return false;
    max_abs = std::fmax(max_abs, std::fabs(x[j]));
  }
  if (max_abs == 0.0f) return true;

  // Prescale by a power of two so the largest |x| is in [1, 2): the rotation cannot overflow or
  // lose subnormal inputs, and the codes do not depend on the scale at all.
  const int e = exponent_of(max_abs);
  std::vector<float> z(static_cast<size_t>(dim));
  for (int j = 0; j < dim; ++j)
    z[static_cast<size_t>(j)] = signed_value(scale_pow2(x[j], -e), j, use_signs);
  fwht(z.data(), dim);  // z = sqrt(dim) * R x * 2^-e

  const float norm = sqrt_rn(reduce_dot(z.data(), z.data(), dim));
  const float to_unit = div_rn(sqrt_dim(dim), norm);  // u_j = z_j * sqrt(dim) / |z| ~ N(0, 1)
  std::vector<float> chosen(static_cast<size_t>(dim));
  for (int j = 0; j < dim; ++j) {
    const float u = mul_rn(z[static_cast<size_t>(j)], to_unit);
    const int c = quantize(u, bits);
    chosen[static_cast<size_t>(j)] = book.centroids[static_cast<size_t>(c)];
    const int bit = j * bits;
    for (int k = 0; k < bits; ++k) {
      if ((c >> k) & 1) payload[(bit + k) / 8] |= static_cast<uint8_t>(1u << ((bit + k) % 8));
    }
  }
  // Least-squares scale of the chosen centroids against z, then back to y = R x.
  const float alpha_z = div_rn(reduce_dot(z.data(), chosen.data(), dim),
                               reduce_dot(chosen.data(), chosen.data(), dim));
  const float alpha = scale_pow2(mul_rn(alpha_z, inv_sqrt_dim(dim)), e);
  *scale = float_bits::f32_to_f16(clamp_to_half_range(alpha));
  return true;
}

void decode_rotated(const uint8_t* payload, uint16_t scale, int dim, int bits, float* y) {
  require_dim(dim, "turboquant");
  const Codebook& book = codebook(bits);
  const float alpha = float_bits::f16_to_f32(scale);
  for (int j = 0; j < dim; ++j)
    y[j] = mul_rn(alpha, book.centroids[static_cast<size_t>(code_at(payload, bits, j))]);
}

void decode_original(const uint8_t* payload, uint16_t scale, int dim, int bits, float* x,
                     bool use_signs) {
  std::vector<float> y(static_cast<size_t>(dim));
  decode_rotated(payload, scale, dim, bits, y.data());
  inverse_rotate(y.data(), x, dim, use_signs);
}

}  // namespace mlxn::tq::reference
