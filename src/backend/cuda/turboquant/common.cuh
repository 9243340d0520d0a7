// Device pieces shared by the TurboQuant kernels (turboquant.cu, encode_rows.cu).
#pragma once

#include <type_traits>
#include "backend/cuda/device/types.cuh"

#include "mlxn/core/dispatch.h"
#include "portable/host_device.h"
#include "portable/turboquant_codebook.h"

namespace mlxn::cuda {
namespace {

__constant__ float kMagnitudes2[] = {MLXN_TQ_MAGNITUDES_2};
__constant__ float kMagnitudes3[] = {MLXN_TQ_MAGNITUDES_3};
__constant__ float kMagnitudes4[] = {MLXN_TQ_MAGNITUDES_4};
__constant__ float kMagnitudes5[] = {MLXN_TQ_MAGNITUDES_5};
__constant__ float kMagnitudes6[] = {MLXN_TQ_MAGNITUDES_6};
__constant__ float kMagnitudes8[] = {MLXN_TQ_MAGNITUDES_8};

__device__ const float* device_magnitudes(int bits) {
  switch (bits) {
    case 2:
      return kMagnitudes2;
    case 3:
      return kMagnitudes3;
    case 4:
      return kMagnitudes4;
    case 5:
      return kMagnitudes5;
    case 6:
      return kMagnitudes6;
    default:
      return kMagnitudes8;
  }
}

// Device-side dispatch over an IntList (e.g. tq::Bits): calls f(std::integral_constant<int, v>)
// for the matching entry; the front end has already rejected any other value.
template <int... Vs, class F>
__device__ void dispatch_on_device(IntList<Vs...>, int v, F&& f) {
  (void)((v == Vs ? (f(std::integral_constant<int, Vs>{}), true) : false) || ...);
}

// N consecutive elements from 16-byte aligned memory, as floats.
template <class T, int N>
__device__ void load_floats(const T* src, float (&v)[N]) {
  constexpr int kVec = 16 / sizeof(T);
#pragma unroll
  for (int c = 0; c < N / kVec; ++c) {
    const uint4 raw = reinterpret_cast<const uint4*>(src)[c];
    const T* elems = reinterpret_cast<const T*>(&raw);
#pragma unroll
    for (int e = 0; e < kVec; ++e) v[c * kVec + e] = to_float(elems[e]);
  }
}

// The reference's butterflies h = 1, 2, ..., N/2 over N coordinates held in registers:
// (a, b) -> (a + b, a - b) with a the lower index.
template <int N>
__device__ void fwht_in_registers(float (&v)[N]) {
#pragma unroll
  for (int h = 1; h < N; h *= 2) {
#pragma unroll
    for (int i = 0; i < N; ++i) {
      if ((i & h) == 0) {
        const float a = v[i], b = v[i + h];
        v[i] = portable::add_rn(a, b);
        v[i + h] = portable::add_rn(a, -b);
      }
    }
  }
}

}  // namespace
}  // namespace mlxn::cuda
