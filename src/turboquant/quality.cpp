#include "turboquant/quality.h"

#include <cmath>
#include <random>
#include <vector>

#include "turboquant/codebook.h"
#include "turboquant/lloyd_max.h"
#include "turboquant/reference.h"

namespace mlxn::tq {

std::string_view vector_set_name(VectorSet set) {
  switch (set) {
    case VectorSet::gaussian:
      return "gaussian";
    case VectorSet::heavy_tailed:
      return "heavy-tailed";
    case VectorSet::biased:
      return "biased";
  }
  return "?";
}

namespace {

// `count` seeded N(0, 1) draws. std's generator, not fill_random: this runs millions of draws on
// the CPU, where the portable bit-exact generator is several times slower.
std::vector<float> normals(int64_t count, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal;
  std::vector<float> v(static_cast<size_t>(count));
  for (float& x : v) x = normal(rng);
  return v;
}

std::vector<float> make_vectors(VectorSet set, int64_t vectors, int dim, uint64_t seed) {
  std::vector<float> x = normals(vectors * dim, seed);
  for (int64_t i = 0; i < vectors; ++i) {
    float* v = x.data() + i * dim;
    if (set == VectorSet::heavy_tailed) {
      for (int channel : {3, dim / 4 + 1, dim / 2 + 5, dim - 2}) v[channel] *= 20.0f;
    } else if (set == VectorSet::biased) {
      for (int j = 0; j < dim; ++j) v[j] = 0.3f * v[j] + 3.0f;
    }
  }
  return x;
}

void round_trip(const float* x, int dim, int bits, bool use_signs, float* x_hat) {
  std::vector<uint8_t> payload(static_cast<size_t>(payload_bytes(dim, bits)));
  uint16_t scale = 0;
  reference::encode(x, dim, bits, payload.data(), &scale, use_signs);
  reference::decode_original(payload.data(), scale, dim, bits, x_hat, use_signs);
}

}  // namespace

Quality measure_quality(const QualityOptions& o) {
  require_bits(o.bits, "tq-eval");
  require_dim(o.dim, "tq-eval");
  const std::vector<float> x = make_vectors(o.set, o.vectors, o.dim, o.seed);
  const std::vector<float> q = normals(o.vectors * o.dim, o.seed + 1000);
  std::vector<float> x_hat(static_cast<size_t>(o.dim));
  double mse = 0, ip_err2 = 0, ip_err = 0, ip2 = 0;
  for (int64_t i = 0; i < o.vectors; ++i) {
    const float* v = x.data() + i * o.dim;
    const float* qi = q.data() + i * o.dim;
    round_trip(v, o.dim, o.bits, o.use_signs, x_hat.data());
    double err = 0, norm = 0, ip = 0, ip_hat = 0;
    for (int j = 0; j < o.dim; ++j) {
      const double d = static_cast<double>(x_hat[static_cast<size_t>(j)]) - v[j];
      err += d * d;
      norm += static_cast<double>(v[j]) * v[j];
      ip += static_cast<double>(qi[j]) * v[j];
      ip_hat += static_cast<double>(qi[j]) * x_hat[static_cast<size_t>(j)];
    }
    mse += err / norm;
    ip_err2 += (ip_hat - ip) * (ip_hat - ip);
    ip_err += ip_hat - ip;
    ip2 += ip * ip;
  }
  const double n = static_cast<double>(o.vectors);
  Quality r;
  r.relative_mse = mse / n;
  r.inner_product_rms = std::sqrt(ip_err2 / ip2);
  r.inner_product_bias = (ip_err / n) / std::sqrt(ip2 / n);
  return r;
}

double attention_output_error(int bits, int dim, int64_t keys, uint64_t seed) {
  require_bits(bits, "tq-eval");
  require_dim(dim, "tq-eval");
  const std::vector<float> k = normals(keys * dim, seed);
  const std::vector<float> v = normals(keys * dim, seed + 1);
  // A query aligned with 4 keys, so that their scores stand well above the rest, as in real
  // decode attention.
  std::vector<float> q(static_cast<size_t>(dim), 0.0f);
  for (int64_t t : {int64_t{11}, keys / 3, keys / 2 + 7, keys - 5})
    for (int j = 0; j < dim; ++j)
      q[static_cast<size_t>(j)] +=
          2.5f * k[static_cast<size_t>(t * dim + j)] / std::sqrt(static_cast<float>(dim));
  std::vector<float> k_hat(k.size()), v_hat(v.size());
  for (int64_t t = 0; t < keys; ++t) {
    round_trip(k.data() + t * dim, dim, bits, true, k_hat.data() + t * dim);
    round_trip(v.data() + t * dim, dim, bits, true, v_hat.data() + t * dim);
  }
  auto attend = [&](const std::vector<float>& kk, const std::vector<float>& vv) {
    std::vector<double> s(static_cast<size_t>(keys));
    double top = -1e300;
    for (int64_t t = 0; t < keys; ++t) {
      double dot = 0;
      for (int j = 0; j < dim; ++j)
        dot +=
            static_cast<double>(q[static_cast<size_t>(j)]) * kk[static_cast<size_t>(t * dim + j)];
      s[static_cast<size_t>(t)] = dot / std::sqrt(static_cast<double>(dim));
      top = std::max(top, s[static_cast<size_t>(t)]);
    }
    double z = 0;
    std::vector<double> o(static_cast<size_t>(dim), 0.0);
    for (int64_t t = 0; t < keys; ++t) {
      const double p = std::exp(s[static_cast<size_t>(t)] - top);
      z += p;
      for (int j = 0; j < dim; ++j)
        o[static_cast<size_t>(j)] += p * vv[static_cast<size_t>(t * dim + j)];
    }
    for (double& x : o) x /= z;
    return o;
  };
  const std::vector<double> o = attend(k, v), o_hat = attend(k_hat, v_hat);
  double err = 0, norm = 0;
  for (int j = 0; j < dim; ++j) {
    err += (o_hat[static_cast<size_t>(j)] - o[static_cast<size_t>(j)]) *
           (o_hat[static_cast<size_t>(j)] - o[static_cast<size_t>(j)]);
    norm += o[static_cast<size_t>(j)] * o[static_cast<size_t>(j)];
  }
  return std::sqrt(err / norm);
}

double lloyd_max_mse(int bits) { return lloyd_max_gaussian(bits).mse; }

}  // namespace mlxn::tq
