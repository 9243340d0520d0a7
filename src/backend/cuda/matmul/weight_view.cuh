// A Weight as kernels see it, and the decoding of one element by the format's formula: the same
// expressions as the CPU reference (src/backend/cpu/matmul.cpp), so results agree bit for bit.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "backend/cuda/device/types.cuh"
#include "formats/ggml.h"
#include "formats/mlx_affine.h"
#include "mlxn/ops/weights.h"

namespace mlxn::cuda {

struct WeightView {
  WeightFormat format;
  int bits, group_size;  // mlx_affine
  int data_code;         // float dtype code of a dense weight (float_dtype_code)
  int scale_code;        // float dtype code of mlx scales / biases
  int64_t k;             // in_features
  int64_t row_bytes;     // bytes per stored row
  const uint8_t* data;   // [N, row_bytes]
  const void* scales;    // mlx_affine: [N, K / group_size]
  const void* biases;    // mlx_affine: [N, K / group_size]
};

inline WeightView weight_view(const Weight& w) {
  WeightView v{};
  v.format = w.format();
  v.bits = w.bits();
  v.group_size = w.group_size();
  v.data_code = float_dtype_code(w.data().dtype());
  v.scale_code = w.scales().defined() ? float_dtype_code(w.scales().dtype()) : 0;
  v.k = w.in_features();
  v.row_bytes = w.data().dim(1) * w.data().element_size();
  v.data = static_cast<const uint8_t*>(w.data().data());
  v.scales = w.scales().defined() ? w.scales().data() : nullptr;
  v.biases = w.biases().defined() ? w.biases().data() : nullptr;
  return v;
}

// Element (row, col) of the weight as f32.
__device__ __forceinline__ float weight_element(const WeightView& w, int64_t row, int64_t col) {
  namespace f = formats;
  using portable::add_rn;
  using portable::mul_rn;
  const uint8_t* r = w.data + row * w.row_bytes;
  switch (w.format) {
    case WeightFormat::dense:
      return load_float_coded(w.data, w.data_code, row * w.k + col);
    case WeightFormat::mlx_affine: {
      const int64_t g = row * (w.k / w.group_size) + col / w.group_size;
      return f::mlx_affine_value(f::mlx_affine_code(r, col, w.bits),
                                 load_float_coded(w.scales, w.scale_code, g),
                                 load_float_coded(w.biases, w.scale_code, g));
    }
    case WeightFormat::q4_0: {
      const auto& b = reinterpret_cast<const f::BlockQ4_0*>(r)[col / f::kQK];
      const int e = static_cast<int>(col % f::kQK);
      return mul_rn(static_cast<float>(f::q4_0_code(b, e) - 8), f::f16_bits_to_float(b.d));
    }
    case WeightFormat::q8_0: {
      const auto& b = reinterpret_cast<const f::BlockQ8_0*>(r)[col / f::kQK];
      return mul_rn(static_cast<float>(b.qs[col % f::kQK]), f::f16_bits_to_float(b.d));
    }
    case WeightFormat::q4_k: {
      const auto& b = reinterpret_cast<const f::BlockQ4_K*>(r)[col / f::kQKK];
      const int e = static_cast<int>(col % f::kQKK);
      const f::ScaleMin sm = f::get_scale_min_k4(e / 32, b.scales);
      const float ds = mul_rn(f::f16_bits_to_float(b.d), static_cast<float>(sm.scale));
      const float ms = mul_rn(f::f16_bits_to_float(b.dmin), static_cast<float>(sm.min));
      return add_rn(mul_rn(ds, static_cast<float>(f::q4_k_code(b, e))), -ms);
    }
    case WeightFormat::q5_k: {
      const auto& b = reinterpret_cast<const f::BlockQ5_K*>(r)[col / f::kQKK];
      const int e = static_cast<int>(col % f::kQKK);
      const f::ScaleMin sm = f::get_scale_min_k4(e / 32, b.scales);
      const float ds = mul_rn(f::f16_bits_to_float(b.d), static_cast<float>(sm.scale));
      const float ms = mul_rn(f::f16_bits_to_float(b.dmin), static_cast<float>(sm.min));
      return add_rn(mul_rn(ds, static_cast<float>(f::q5_k_code(b, e))), -ms);
    }
    case WeightFormat::q6_k: {
      const auto& b = reinterpret_cast<const f::BlockQ6_K*>(r)[col / f::kQKK];
      const int e = static_cast<int>(col % f::kQKK);
      const float ds = mul_rn(f::f16_bits_to_float(b.d), static_cast<float>(b.scales[e >> 4]));
      return mul_rn(ds, static_cast<float>(f::q6_k_code(b, e) - 32));
    }
  }
  return 0.0f;
}

}  // namespace mlxn::cuda
