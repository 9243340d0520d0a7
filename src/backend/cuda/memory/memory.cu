#include "backend/cuda/device/map.cuh"
#include "backend/cuda/device/types.cuh"
#include "backend/cuda/memory/memory.h"
#include "backend/cuda/runtime.h"
#include "mlxn/core/dispatch.h"
#include "portable/counter_rng.h"

namespace mlxn::cuda {

namespace {

template <class TOut>
struct FillValue {
  float value;
  const float* indirect;  // [1] f32, read when the kernel runs; nullptr: use `value`
  template <class TIn>
  __device__ TOut operator()(int64_t, const TIn (&)[1]) const {
    return from_float<TOut>(indirect ? *indirect : value);
  }
};

template <class TOut>
struct FillInteger {
  int64_t value;
  template <class TIn>
  __device__ TOut operator()(int64_t, const TIn (&)[1]) const {
    return static_cast<TOut>(value);
  }
};

template <class TOut>
struct FillRandom {
  uint64_t seed;
  float a;
  float b;  // uniform: high - low (precomputed on the host, as the CPU backend does)
  bool normal;
  template <class TIn>
  __device__ TOut operator()(int64_t i, const TIn (&)[1]) const {
    const auto index = static_cast<uint64_t>(i);
    return from_float<TOut>(normal ? portable::random_normal(index, seed, a, b)
                                   : portable::random_uniform(index, seed, a, b));
  }
};

template <class TIn, class TOut>
struct Convert {
  __device__ TOut operator()(int64_t, const TIn (&v)[1]) const {
    return from_float<TOut>(to_float(v[0]));
  }
};

template <class T>
struct Identity {
  __device__ T operator()(int64_t, const T (&v)[1]) const { return v[0]; }
};

}  // namespace

void fill_float(const Buffer& out, ScalarArg value, const Stream& stream) {
  const float v = static_cast<float>(value.value());
  const float* indirect = value.is_indirect() ? value.buffer().data_as<const float>() : nullptr;
  dispatch_dtype<FloatDTypes>("fill", out.dtype(), [&](auto tag) {
    using T = device_type_t<decltype(tag)::value>;
    launch_map<0, T, T>(out, {}, FillValue<T>{v, indirect}, stream);
  });
}

void fill_integer(const Buffer& out, int64_t value, const Stream& stream) {
  using Ints = DTypeList<DType::i8, DType::u8, DType::i32, DType::u32, DType::i64>;
  dispatch_dtype<Ints>("fill", out.dtype(), [&](auto tag) {
    using T = device_type_t<decltype(tag)::value>;
    launch_map<0, T, T>(out, {}, FillInteger<T>{value}, stream);
  });
}

void fill_random(const Buffer& out, const RandomSpec& spec, const Stream& stream) {
  const bool normal = spec.distribution == Distribution::normal;
  const float b = normal ? spec.b : spec.b - spec.a;
  dispatch_dtype<FloatDTypes>("fill_random", out.dtype(), [&](auto tag) {
    using T = device_type_t<decltype(tag)::value>;
    launch_map<0, T, T>(out, {}, FillRandom<T>{spec.seed, spec.a, b, normal}, stream);
  });
}

void copy(const Buffer& src, const Buffer& dst, const Stream& stream) {
  if (src.is_contiguous() && dst.is_contiguous()) {
    cuda_runtime::memcpy_async(dst.device().index, dst.data(), src.data(),
                               static_cast<size_t>(src.nbytes()),
                               cuda_runtime::CopyKind::device_to_device, stream.native_handle());
    return;
  }
  auto run = [&](auto storage) {
    using T = decltype(storage);
    launch_map<1, T, T>(dst, {&src}, Identity<T>{}, stream);
  };
  switch (src.element_size()) {
    case 1:
      return run(uint8_t{});
    case 2:
      return run(uint16_t{});
    case 4:
      return run(uint32_t{});
    default:
      return run(uint64_t{});
  }
}

void cast(const Buffer& src, const Buffer& dst, const Stream& stream) {
  dispatch_dtype<FloatDTypes>("cast", src.dtype(), [&](auto in_tag) {
    using TIn = device_type_t<decltype(in_tag)::value>;
    dispatch_dtype<FloatDTypes>("cast", dst.dtype(), [&](auto out_tag) {
      using TOut = device_type_t<decltype(out_tag)::value>;
      launch_map<1, TIn, TOut>(dst, {&src}, Convert<TIn, TOut>{}, stream);
    });
  });
}

}  // namespace mlxn::cuda
