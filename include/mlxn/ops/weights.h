// Weight matrices in the formats a model file may hold, and the ops that read them directly:
// dequantize, embedding gather, MLX affine quantization. matmul (y = x·Wᵀ) is in ops/matmul.h.
//
// A Weight is W [N = out_features, K = in_features], row-major, each row stored in its format:
//   dense       data [N, K] f32 / bf16 / f16
//   mlx_affine  data u32 [N, K·bits/32]: per row a little-endian bit stream, code k at bits
//               [k·bits, (k+1)·bits); scales and biases [N, K/group_size] f32 / bf16 / f16;
//               w = scale · q + bias                    bits 2, 3, 4, 5, 6, 8; group 32, 64, 128
//   q4_0 q8_0   data u8 [N, K/32 · block bytes] (GGML blocks of 32: 18 / 34 bytes)
//   q4_k q5_k q6_k  data u8 [N, K/256 · block bytes] (GGML super-blocks: 144 / 176 / 210 bytes)
// The GGML block layouts are defined once in src/formats/ggml.h.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "mlxn/core/buffer.h"
#include "mlxn/core/stream.h"

namespace mlxn {

enum class WeightFormat : uint8_t { dense, mlx_affine, q4_0, q8_0, q4_k, q5_k, q6_k };

std::string_view weight_format_name(WeightFormat format);  // "dense", "mlx_affine", "q4_0", ...
// Elements per GGML block (32 or 256); 1 for dense; group_size is the MLX unit.
int64_t ggml_block_elements(WeightFormat format);
int64_t ggml_block_bytes(WeightFormat format);

class Weight {
 public:
  Weight() = default;
  // w: [N, K] f32 / bf16 / f16, contiguous.
  static Weight dense(Buffer w);
  // packed: u32 [N, K·bits/32]; scales, biases: [N, K/group_size] of one float dtype.
  static Weight mlx_affine(Buffer packed, Buffer scales, Buffer biases, int bits, int group_size);
  // blocks: u8 [N, K/block_elements · block_bytes] (or any shape with that many bytes per row
  // and N rows); in_features = K, a multiple of the block size.
  static Weight ggml(WeightFormat format, Buffer blocks, int64_t in_features);

  bool defined() const { return data_.defined(); }
  WeightFormat format() const { return format_; }
  int64_t out_features() const { return out_features_; }  // N
  int64_t in_features() const { return in_features_; }    // K
  int bits() const { return bits_; }                      // mlx_affine only
  int group_size() const { return group_size_; }          // mlx_affine only
  const Buffer& data() const { return data_; }
  const Buffer& scales() const { return scales_; }  // mlx_affine only
  const Buffer& biases() const { return biases_; }  // mlx_affine only
  Device device() const { return data_.device(); }
  // Bytes a full read of the weight moves (data + scales + biases).
  int64_t nbytes() const;
  // A settled weight is never written again while it is used (the model runner settles its
  // weights once they are on the device and the stream has drained). Kernels launched to overlap
  // the kernel before them may read a settled weight before that kernel has completed, an
  // unsettled one only after (a weight just written by that kernel would be read stale). A copy
  // keeps the mark; concat_rows and the constructors return unsettled weights.
  bool settled() const { return settled_; }
  void settle() { settled_ = true; }
  std::string describe() const;  // "mlx_affine 4-bit g64 [4096, 14336] bf16 scales on cuda:0"

 private:
  WeightFormat format_ = WeightFormat::dense;
  int64_t out_features_ = 0, in_features_ = 0;
  int bits_ = 0, group_size_ = 0;
  bool settled_ = false;
  Buffer data_, scales_, biases_;
};

// The weights stacked along N, in order ([N1 + N2 + ..., K]), as one weight of the same format:
// a fused projection (Q, K and V; gate and up) that one matmul computes. Every part must have
// the same format, K, bits, group size and dtypes, and live on the stream's device; throws
// Error("[concat_rows] ...") naming the first part that differs.
Weight concat_rows(std::span<const Weight> parts, const Stream& stream);
// True when concat_rows accepts a and b together (same format, K, bits, group size, dtypes,
// device).
bool same_layout(const Weight& a, const Weight& b);

// out: [N, K] f32 / bf16 / f16 (dense weights are copied with a cast). The CPU and CUDA results
// are bit-identical: each element is computed in f32 as the format defines, then rounded once.
void dequantize(const Weight& w, const Buffer& out, const Stream& stream);

// out[t, :] = row ids[t] of the weight, dequantized: the embedding gather of a (possibly
// quantized) table [vocab, hidden]. ids: i32 [T]; out: [T, K] f32 / bf16 / f16. An id outside
// [0, N) sets the device error (raised at synchronize) and leaves that output row zero.
void embedding(const Buffer& ids, const Weight& table, const Buffer& out, const Stream& stream);

// MLX's affine quantizer (mx.quantize, mode "affine"), bit for bit: per group of group_size
// along the last axis, n = 2^bits − 1, scale = max((max − min)/n, 1e-7), the larger-magnitude
// edge e of (min, max) anchors the grid (scale negated when e = max), q0 = rint(e/scale); if
// q0 ≠ 0 then scale = e/q0 and bias = e, else bias = 0; q = clamp(rint((w − bias)/scale), 0, n)
// with rint rounding half to even. All in f32; scales and biases are then rounded to w's dtype.
// w: [N, K] f32 / bf16 / f16 on the CPU; K a multiple of group_size. The result is on the CPU.
Weight quantize_mlx_affine(const Buffer& w, int bits, int group_size, const Stream& stream);

}  // namespace mlxn
