// Internal helpers shared by the op front ends (src/ops/*.cpp): device checks, capture
// retention, and the CUDA call guard for builds without the CUDA backend.
#pragma once

#include <initializer_list>

#include "mlxn/core/buffer.h"
#include "mlxn/core/stream.h"

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

// Paged storage (TurboQuant and KV caches): pages of a power-of-two number of slots, >= 16.
inline void require_page_size(int64_t page_size, const char* op) {
  if (page_size < 16 || (page_size & (page_size - 1)) != 0) {
    throw Error(op, "page_size " + std::to_string(page_size) + " must be a power of two >= 16");
  }
}

}  // namespace mlxn::ops_detail
