// CPU backend: the host type of each dtype, f32 conversions, and a strided element loop.
#pragma once

#include <array>
#include <cstdint>

#include "mlxn/core/buffer.h"
#include "mlxn/core/dispatch.h"
#include "mlxn/core/float_types.h"

namespace mlxn::cpu {

template <DType D>
struct HostType;
template <>
struct HostType<DType::f32> {
  using type = float;
};
template <>
struct HostType<DType::f16> {
  using type = Half;
};
template <>
struct HostType<DType::bf16> {
  using type = BFloat16;
};
template <>
struct HostType<DType::f8e4m3> {
  using type = Fp8E4M3;
};
template <>
struct HostType<DType::f8e5m2> {
  using type = Fp8E5M2;
};
template <>
struct HostType<DType::i8> {
  using type = int8_t;
};
template <>
struct HostType<DType::u8> {
  using type = uint8_t;
};
template <>
struct HostType<DType::i32> {
  using type = int32_t;
};
template <>
struct HostType<DType::u32> {
  using type = uint32_t;
};
template <>
struct HostType<DType::i64> {
  using type = int64_t;
};

template <DType D>
using host_type_t = typename HostType<D>::type;

template <class T>
float to_f32(T v) {
  return static_cast<float>(v);
}
template <class T>
T from_f32(float v) {
  return T(v);
}

// Calls f(pointers, linear_index) for every element of `shape` in row-major order, where
// pointers[k] addresses that element in operands[k] (each viewed with the same shape).
template <size_t N, class F>
void for_each_element(const Shape& shape, const std::array<const Buffer*, N>& operands, F&& f) {
  const int64_t numel = shape_numel(shape);
  if (numel == 0) return;
  const int rank = static_cast<int>(shape.size());
  std::array<char*, N> ptr;
  std::array<std::array<int64_t, kMaxRank>, N> step{};
  for (size_t k = 0; k < N; ++k) {
    ptr[k] = static_cast<char*>(operands[k]->data());
    for (int d = 0; d < rank; ++d)
      step[k][d] = operands[k]->strides()[d] * operands[k]->element_size();
  }
  std::array<int64_t, kMaxRank> index{};
  for (int64_t linear = 0; linear < numel; ++linear) {
    f(ptr, linear);
    for (int d = rank - 1; d >= 0; --d) {  // odometer: advance the last axis, carry leftwards
      for (size_t k = 0; k < N; ++k) ptr[k] += step[k][d];
      if (++index[d] < shape[d]) break;
      for (size_t k = 0; k < N; ++k) ptr[k] -= step[k][d] * shape[d];
      index[d] = 0;
    }
  }
}

// Element `index` of a contiguous f32 / bf16 / f16 buffer as f32, and an f32 stored into one
// (rounded once): for the reference ops that read mixed float dtypes element by element.
inline float load_float(const Buffer& b, int64_t index) {
  float v = 0;
  dispatch_dtype<DTypeList<DType::f32, DType::bf16, DType::f16>>("cpu", b.dtype(), [&](auto tag) {
    using T = host_type_t<decltype(tag)::value>;
    v = to_f32(b.data_as<const T>()[index]);
  });
  return v;
}
inline void store_float(const Buffer& b, int64_t index, float value) {
  dispatch_dtype<DTypeList<DType::f32, DType::bf16, DType::f16>>("cpu", b.dtype(), [&](auto tag) {
    using T = host_type_t<decltype(tag)::value>;
    b.data_as<T>()[index] = from_f32<T>(value);
  });
}

}  // namespace mlxn::cpu
