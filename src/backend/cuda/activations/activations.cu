// Activations through the elementwise engine (device/map.cuh): contiguous, row-pitched (the
// halves of a fused gate/up projection) and strided views alike. Accurate expf / erfcf / tanhf
// and IEEE division; the activation is a template argument so each kernel holds one formula.
#include "backend/cuda/activations/activations.h"
#include "backend/cuda/device/map.cuh"
#include "backend/cuda/device/types.cuh"
#include "mlxn/core/dispatch.h"

#include <type_traits>

namespace mlxn::cuda {

namespace {

// x * sigmoid(w) with exp only of -|w|: never overflows, and for w < 0 the result is
// x * e / (1 + e), which keeps its relative accuracy however small it gets.
__device__ __forceinline__ float mul_sigmoid(float x, float w) {
  const float e = expf(-fabsf(w));
  return (w < 0.0f ? x * e : x) / (1.0f + e);
}

template <Activation kAct>
__device__ __forceinline__ float activation(float x) {
  if constexpr (kAct == Activation::sigmoid) {
    return mul_sigmoid(1.0f, x);
  } else {
    // The gate vanishes faster than x grows: the limit is -0, where x * gate would be NaN.
    if (x == -INFINITY) return -0.0f;
    if constexpr (kAct == Activation::silu) {
      return mul_sigmoid(x, x);
    } else if constexpr (kAct == Activation::gelu_tanh) {
      // 0.5 x (1 + tanh(z)) = x sigmoid(2z), 2z = x (a + b x^2): a = 2 sqrt(2/pi),
      // b = 0.044715 a. The fma is explicit so that every kernel variant rounds alike.
      constexpr float a = 1.5957691216057308f, b = 0.07135481627260025f;
      return mul_sigmoid(x, x * fmaf(b, x * x, a));
    } else {
      // 1 + erf(t) = erfc(-t): no cancellation for negative x.
      constexpr float inv_sqrt2 = 0.70710678118654752f;
      return (0.5f * x) * erfcf(-x * inv_sqrt2);
    }
  }
}

template <class T, Activation kAct>
struct Activate {
  __device__ T operator()(int64_t, const T (&v)[1]) const {
    return from_float<T>(activation<kAct>(to_float(v[0])));
  }
};

template <class T, Activation kAct>
struct Gated {
  __device__ T operator()(int64_t, const T (&v)[2]) const {
    return from_float<T>(activation<kAct>(to_float(v[0])) * to_float(v[1]));
  }
};

template <class T>
struct Softcap {
  float cap;
  __device__ T operator()(int64_t, const T (&v)[1]) const {
    return from_float<T>(cap * tanhf(to_float(v[0]) / cap));
  }
};

template <class F>
void dispatch_activation(Activation act, F&& f) {
  switch (act) {
    case Activation::silu:
      return f(std::integral_constant<Activation, Activation::silu>{});
    case Activation::gelu_tanh:
      return f(std::integral_constant<Activation, Activation::gelu_tanh>{});
    case Activation::gelu_erf:
      return f(std::integral_constant<Activation, Activation::gelu_erf>{});
    case Activation::sigmoid:
      return f(std::integral_constant<Activation, Activation::sigmoid>{});
  }
}

}  // namespace

void activate(const Buffer& x, const Buffer& up, Activation act, const Buffer& out,
              const Stream& stream) {
  dispatch_dtype<ComputeDTypes>("activate", out.dtype(), [&](auto tag) {
    using T = device_type_t<decltype(tag)::value>;
    dispatch_activation(act, [&](auto a) {
      constexpr Activation kAct = decltype(a)::value;
      if (up.defined()) {
        launch_map<2, T, T>(out, {&x, &up}, Gated<T, kAct>{}, stream);
      } else {
        launch_map<1, T, T>(out, {&x}, Activate<T, kAct>{}, stream);
      }
    });
  });
}

void softcap(const Buffer& x, float cap, const Buffer& out, const Stream& stream) {
  dispatch_dtype<ComputeDTypes>("softcap", out.dtype(), [&](auto tag) {
    using T = device_type_t<decltype(tag)::value>;
    launch_map<1, T, T>(out, {&x}, Softcap<T>{cap}, stream);
  });
}

}  // namespace mlxn::cuda
