// Device types of each dtype and their f32 conversions (the GPU's cvt.rn instructions; fp8
// saturating). The host equivalents in mlxn/core/float_types.h produce the same bits.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include <cstdint>

#include "mlxn/core/dtype.h"

namespace mlxn::cuda {

template <DType D>
struct DeviceType;
template <>
struct DeviceType<DType::f32> {
  using type = float;
};
template <>
struct DeviceType<DType::f16> {
  using type = __half;
};
template <>
struct DeviceType<DType::bf16> {
  using type = __nv_bfloat16;
};
template <>
struct DeviceType<DType::f8e4m3> {
  using type = __nv_fp8_e4m3;
};
template <>
struct DeviceType<DType::f8e5m2> {
  using type = __nv_fp8_e5m2;
};
template <>
struct DeviceType<DType::i8> {
  using type = int8_t;
};
template <>
struct DeviceType<DType::u8> {
  using type = uint8_t;
};
template <>
struct DeviceType<DType::i32> {
  using type = int32_t;
};
template <>
struct DeviceType<DType::u32> {
  using type = uint32_t;
};
template <>
struct DeviceType<DType::i64> {
  using type = int64_t;
};

template <DType D>
using device_type_t = typename DeviceType<D>::type;

__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }
__device__ __forceinline__ float to_float(__nv_fp8_e4m3 v) { return static_cast<float>(v); }
__device__ __forceinline__ float to_float(__nv_fp8_e5m2 v) { return static_cast<float>(v); }

template <class T>
__device__ __forceinline__ T from_float(float v);
template <>
__device__ __forceinline__ float from_float<float>(float v) {
  return v;
}
template <>
__device__ __forceinline__ __half from_float<__half>(float v) {
  return __float2half_rn(v);
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}
template <>
__device__ __forceinline__ __nv_fp8_e4m3 from_float<__nv_fp8_e4m3>(float v) {
  __nv_fp8_e4m3 r;
  r.__x = __nv_cvt_float_to_fp8(v, __NV_SATFINITE, __NV_E4M3);
  return r;
}
template <>
__device__ __forceinline__ __nv_fp8_e5m2 from_float<__nv_fp8_e5m2>(float v) {
  __nv_fp8_e5m2 r;
  r.__x = __nv_cvt_float_to_fp8(v, __NV_SATFINITE, __NV_E5M2);
  return r;
}

// N consecutive elements moved as one access: 16 bytes at most, aligned to its size up to 16.
template <class T, int N>
struct alignas(sizeof(T) * N >= 16 ? 16 : sizeof(T) * N) Pack {
  T v[N];
};

// Raw storage type of the same width, for byte-exact copies of any dtype.
template <int kBytes>
struct StorageOfSize;
template <>
struct StorageOfSize<1> {
  using type = uint8_t;
};
template <>
struct StorageOfSize<2> {
  using type = uint16_t;
};
template <>
struct StorageOfSize<4> {
  using type = uint32_t;
};
template <>
struct StorageOfSize<8> {
  using type = uint64_t;
};

// A float operand whose dtype is chosen at run time (a weight whose dtype differs from the
// activations'): its code for the kernel, and element i of it as f32.
inline int float_dtype_code(DType d) { return d == DType::f32 ? 0 : d == DType::bf16 ? 1 : 2; }

__device__ __forceinline__ float load_float_coded(const void* p, int code, int64_t i) {
  switch (code) {
    case 0:
      return static_cast<const float*>(p)[i];
    case 1:
      return __bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]);
    default:
      return __half2float(static_cast<const __half*>(p)[i]);
  }
}

}  // namespace mlxn::cuda
