// Internal helpers shared by the op front ends (src/ops/*.cpp): device checks, capture
// retention, and the CUDA call guard for builds without the CUDA backend.
#pragma once

#include <algorithm>
#include <functional>
#include <initializer_list>
#include <string>
#include <utility>
#include <vector>

#include "mlxn/core/buffer.h"
#include "mlxn/core/stream.h"
#include "mlxn/ops/norms.h"

#if MLXN_WITH_CUDA
#define MLXN_CUDA_BACKEND(call) call
#else
#define MLXN_CUDA_BACKEND(call) \
  throw ::mlxn::Error("cuda", "this build of mlx-native has no CUDA backend")
#endif

namespace mlxn::ops_detail {

// Every buffer must be defined and live on the stream's device; each is retained by a graph
// being captured on the stream.
inline void prepare(const char* op, const Stream& stream,
                    std::initializer_list<std::pair<const char*, const Buffer*>> buffers) {
  for (const auto& [name, buffer] : buffers) {
    if (!buffer->defined()) throw Error(op, std::string(name) + " is an undefined buffer");
    if (buffer->device() != stream.device()) {
      throw Error(op, std::string(name) + " is " + buffer->describe() + " but the stream is on " +
                          stream.device().str());
    }
  }
  for (const auto& [name, buffer] : buffers) stream.retain_for_capture(buffer->allocation());
}

inline void require_same_shape(const char* op, const Buffer& a, const char* a_name, const Buffer& b,
                               const char* b_name) {
  if (a.shape() != b.shape()) {
    throw Error(op, std::string(a_name) + " " + shape_str(a.shape()) + " and " + b_name + " " +
                        shape_str(b.shape()) + " differ in shape");
  }
}

// Two views of one dtype, shape and strides, whose starts are whole elements apart, share an
// element only if that distance is a sum of c_d * stride_d with |c_d| < extent_d. When the axes
// nest (each stride beyond the span of the smaller ones) only the two multiples of each stride
// nearest the remaining distance can work, so the search is exact and short. This is what tells
// the gate and up halves of a fused [M, 2I] buffer apart: their ranges interleave, their
// elements do not meet. False when the views are not such translates (undecided).
inline bool disjoint_translates(const Buffer& a, const Buffer& b) {
  if (a.dtype() != b.dtype() || a.shape() != b.shape() || a.strides() != b.strides()) return false;
  const int64_t size = a.element_size(), gap = b.offset_bytes() - a.offset_bytes();
  if (gap % size != 0) return false;
  std::vector<std::pair<int64_t, int64_t>> axes;  // (stride, extent), largest stride first
  for (int d = 0; d < a.rank(); ++d) {
    if (a.shape()[d] > 1 && a.strides()[d] != 0) axes.emplace_back(a.strides()[d], a.shape()[d]);
  }
  std::sort(axes.begin(), axes.end(), std::greater<>());
  int64_t span = 0;
  for (size_t k = axes.size(); k-- > 0;) {
    if (axes[k].first <= span) return false;
    span += (axes[k].second - 1) * axes[k].first;
  }
  const auto meets = [&axes](const auto& self, int64_t rest, size_t k) -> bool {
    if (k == axes.size()) return rest == 0;
    const auto [stride, extent] = axes[k];
    const int64_t below = rest >= 0 ? rest / stride : -((stride - 1 - rest) / stride);
    for (const int64_t c : {below, below + 1}) {
      if (c > -extent && c < extent && self(self, rest - c * stride, k + 1)) return true;
    }
    return false;
  };
  return !meets(meets, gap / size, 0);
}

// The bytes [first, last + 1) a view can touch (views with positive strides).
inline std::pair<int64_t, int64_t> byte_extent(const Buffer& b) {
  int64_t lo = b.offset_bytes(), hi = b.offset_bytes() + b.element_size();
  for (int d = 0; d < b.rank(); ++d) hi += (b.shape()[d] - 1) * b.strides()[d] * b.element_size();
  return {lo, hi};
}

// f32, bf16 or f16, else Error("[op] <name> must be f32, bf16 or f16, got ...").
inline void require_float(const char* op, const Buffer& b, const char* name) {
  if (b.dtype() != DType::f32 && b.dtype() != DType::bf16 && b.dtype() != DType::f16) {
    throw Error(op, std::string(name) + " must be f32, bf16 or f16, got " + b.describe());
  }
}

// Exact aliasing (the same view, same dtype) is fine for ops where each output element is
// computed from inputs read before it is written; partial overlap would make the result depend
// on execution order.
inline void require_no_partial_overlap(const char* op, const Buffer& in, const char* name,
                                       const Buffer& out) {
  if (in.allocation() != out.allocation()) return;
  if (in.offset_bytes() == out.offset_bytes() && in.dtype() == out.dtype() &&
      in.strides() == out.strides() && in.shape() == out.shape()) {
    return;
  }
  const auto [a0, a1] = byte_extent(in);
  const auto [b0, b1] = byte_extent(out);
  if (a0 < b1 && b0 < a1 && !disjoint_translates(in, out)) {
    throw Error(op, std::string(name) + " overlaps out without being the same view");
  }
}

// Two views that may not share a byte (one is written while the other is read). For ops whose
// every output element reads many input elements (matmul, gathers, attention), an output and
// each input.
inline void require_apart(const char* op, const Buffer& a, const char* a_name, const Buffer& b,
                          const char* b_name) {
  if (a.allocation() != b.allocation()) return;
  const auto [a0, a1] = byte_extent(a);
  const auto [b0, b1] = byte_extent(b);
  if (a0 < b1 && b0 < a1) {
    std::string message(a_name);
    message.append(" and ").append(b_name).append(" overlap");
    throw Error(op, message);
  }
}
inline void require_disjoint(const char* op, const Buffer& in, const char* name,
                             const Buffer& out) {
  require_apart(op, in, name, out, "out");
}

// Paged storage (TurboQuant and KV caches): pages of a power-of-two number of slots, >= 16.
inline void require_page_size(int64_t page_size, const char* op) {
  if (page_size < 16 || (page_size & (page_size - 1)) != 0) {
    throw Error(op, "page_size " + std::to_string(page_size) + " must be a power of two >= 16");
  }
}

// RMSNorm's weight argument: RmsWeight::none takes none, the other modes need one.
inline void require_weight_for_mode(const char* op, RmsWeight mode, const Buffer& weight) {
  if ((mode == RmsWeight::none) == weight.defined()) {
    throw Error(op, mode == RmsWeight::none ? "RmsWeight::none takes no weight"
                                            : "this RmsWeight needs a weight");
  }
}

}  // namespace mlxn::ops_detail
