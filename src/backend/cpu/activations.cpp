#include "backend/cpu/activations.h"

#include <cmath>
#include <cstring>
#include <numbers>

#include "backend/cpu/cpu_types.h"
#include "mlxn/core/dispatch.h"

namespace mlxn::cpu {

namespace {

// exp only of -|w| <= 0: no overflow, and no 1 - (nearly 1) for the negative tail.
double sigmoid(double w) {
  const double e = std::exp(-std::fabs(w));
  return w >= 0 ? 1.0 / (1.0 + e) : e / (1.0 + e);
}

double apply(Activation act, double x) {
  if (act == Activation::sigmoid) return sigmoid(x);
  // The gate vanishes faster than x grows: the limit is -0, where x * gate would be NaN.
  if (x == -INFINITY) return -0.0;
  switch (act) {
    case Activation::silu:
      return x * sigmoid(x);
    case Activation::gelu_tanh: {
      // 0.5 (1 + tanh(z)) = sigmoid(2z).
      const double k = std::sqrt(2.0 / std::numbers::pi);
      return x * sigmoid(2.0 * k * (x + 0.044715 * x * x * x));
    }
    case Activation::gelu_erf:
      // 1 + erf(t) = erfc(-t), which keeps its relative accuracy as it approaches 0.
      return 0.5 * x * std::erfc(-x / std::numbers::sqrt2);
    case Activation::sigmoid:
      break;
  }
  return sigmoid(x);
}

template <class T>
double load(const char* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return to_f32(v);
}

template <class T>
void store(char* p, double y) {
  const T v = from_f32<T>(static_cast<float>(y));
  std::memcpy(p, &v, sizeof(T));
}

}  // namespace

void activate(const Buffer& x, const Buffer& up, Activation act, const Buffer& out,
              const Stream& stream) {
  stream.submit_host([x, up, act, out] {
    dispatch_dtype<ComputeDTypes>("activate", out.dtype(), [&](auto tag) {
      using T = host_type_t<decltype(tag)::value>;
      if (up.defined()) {
        for_each_element<3>(out.shape(), {&x, &up, &out}, [&](auto p, int64_t) {
          store<T>(p[2], apply(act, load<T>(p[0])) * load<T>(p[1]));
        });
      } else {
        for_each_element<2>(out.shape(), {&x, &out},
                            [&](auto p, int64_t) { store<T>(p[1], apply(act, load<T>(p[0]))); });
      }
    });
  });
}

void softcap(const Buffer& x, float cap, const Buffer& out, const Stream& stream) {
  stream.submit_host([x, cap, out] {
    dispatch_dtype<ComputeDTypes>("softcap", out.dtype(), [&](auto tag) {
      using T = host_type_t<decltype(tag)::value>;
      const double c = cap;
      for_each_element<2>(out.shape(), {&x, &out}, [&](auto p, int64_t) {
        store<T>(p[1], c * std::tanh(load<T>(p[0]) / c));
      });
    });
  });
}

}  // namespace mlxn::cpu
