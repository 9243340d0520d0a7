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

// Element col of a row of GGML blocks.
template <class Block>
__device__ __forceinline__ float element_of(const uint8_t* row, int64_t col) {
  constexpr int kElements = formats::kBlockElements<Block>;
  return formats::dequantize_element(reinterpret_cast<const Block*>(row)[col / kElements],
                                     static_cast<int>(col % kElements));
}

// Element (row, col) of the weight as f32.
__device__ __forceinline__ float weight_element(const WeightView& w, int64_t row, int64_t col) {
  namespace f = formats;
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
    case WeightFormat::q4_0:
      return element_of<f::BlockQ4_0>(r, col);
    case WeightFormat::q8_0:
      return element_of<f::BlockQ8_0>(r, col);
    case WeightFormat::q4_k:
      return element_of<f::BlockQ4_K>(r, col);
    case WeightFormat::q5_k:
      return element_of<f::BlockQ5_K>(r, col);
    case WeightFormat::q6_k:
      return element_of<f::BlockQ6_K>(r, col);
  }
  return 0.0f;
}

}  // namespace mlxn::cuda
