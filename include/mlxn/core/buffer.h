// Buffer: a typed, shaped, strided view of an Allocation. Views (slice, reshape, permute,
// broadcast) share the allocation and keep it alive. Strides are in elements, the offset in
// bytes. Buffers are handles: copying one copies the view, not the data.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "mlxn/core/device.h"
#include "mlxn/core/dtype.h"
#include "mlxn/core/error.h"
#include "mlxn/core/pool.h"
#include "mlxn/core/stream.h"

namespace mlxn {

using Shape = std::vector<int64_t>;
using Strides = std::vector<int64_t>;

// Largest rank a view may have (kernels carry shapes in fixed arrays of this size).
inline constexpr int kMaxRank = 8;

std::string shape_str(const Shape& shape);  // "[2,3,4]"
int64_t shape_numel(const Shape& shape);
Strides contiguous_strides(const Shape& shape);

class Buffer {
 public:
  Buffer() = default;
  Buffer(std::shared_ptr<Allocation> allocation, Shape shape, Strides strides, DType dtype,
         int64_t offset_bytes);

  // Uninitialised, contiguous, from the stream device's pool (size-class rounding).
  static Buffer empty(Shape shape, DType dtype, const Stream& stream);
  // Uninitialised, contiguous, exact-size allocation: for weights and caches.
  static Buffer empty_exact(Shape shape, DType dtype, const Stream& stream);
  // A contiguous buffer holding `bytes` (numel * dtype size of them) copied from host memory.
  static Buffer from_host(const void* bytes, int64_t byte_count, Shape shape, DType dtype,
                          const Stream& stream);
  template <class T>
  static Buffer from_host(std::span<const T> values, Shape shape, DType dtype,
                          const Stream& stream) {
    check(sizeof(T) == static_cast<size_t>(dtype_size(dtype)), "buffer",
          "host element size " + std::to_string(sizeof(T)) + " does not match dtype " +
              std::string(dtype_name(dtype)));
    return from_host(values.data(), static_cast<int64_t>(values.size_bytes()), std::move(shape),
                     dtype, stream);
  }

  bool defined() const { return allocation_ != nullptr; }
  DType dtype() const { return dtype_; }
  Device device() const;
  const Shape& shape() const { return shape_; }
  const Strides& strides() const { return strides_; }
  int64_t offset_bytes() const { return offset_bytes_; }
  int rank() const { return static_cast<int>(shape_.size()); }
  int64_t dim(int axis) const;  // negative axes count from the end
  int64_t numel() const { return shape_numel(shape_); }
  int64_t element_size() const { return dtype_size(dtype_); }
  int64_t nbytes() const { return numel() * element_size(); }

  bool is_contiguous() const;
  // True when the first element's address is a multiple of `bytes`.
  bool is_aligned(int64_t bytes) const;
  // Throw Error("[op] <name> ...") unless the view is contiguous / of `dtype` / on `device`.
  void require_contiguous(const char* op, const char* name) const;
  void require_dtype(DType dtype, const char* op, const char* name) const;

  void* data() const;  // address of element 0 (device memory for a CUDA buffer)
  template <class T>
  T* data_as() const {
    return static_cast<T*>(data());
  }

  // Views. slice keeps `axis` and takes [start, stop) with `step` > 0 (start/stop may be
  // negative, counted from the end, and are clamped like Python slices).
  Buffer slice(int axis, int64_t start, int64_t stop, int64_t step = 1) const;
  // Drops `axis`, keeping element `index` of it.
  Buffer select(int axis, int64_t index) const;
  // Contiguous views only; one extent may be -1.
  Buffer reshape(Shape shape) const;
  Buffer permute(const std::vector<int>& order) const;
  Buffer transpose(int a, int b) const;
  // Size-1 axes (and new leading axes) repeat with stride 0.
  Buffer broadcast_to(const Shape& shape) const;

  // Contiguous buffers only; these synchronise the stream.
  void copy_from_host(const void* src, int64_t bytes, const Stream& stream) const;
  void copy_to_host(void* dst, int64_t bytes, const Stream& stream) const;
  template <class T>
  std::vector<T> to_host(const Stream& stream) const {
    check(sizeof(T) == static_cast<size_t>(element_size()), "buffer",
          "host element size " + std::to_string(sizeof(T)) + " does not match " + describe());
    std::vector<T> values(static_cast<size_t>(numel()));
    copy_to_host(values.data(), nbytes(), stream);
    return values;
  }

  // This buffer's memory is used on `stream` too (see BufferPool's stream safety).
  void record_stream(const Stream& stream) const;
  const std::shared_ptr<Allocation>& allocation() const { return allocation_; }
  std::string describe() const;  // "bf16[2,3] on cuda:0"

 private:
  std::shared_ptr<Allocation> allocation_;
  Shape shape_;
  Strides strides_;
  DType dtype_ = DType::f32;
  int64_t offset_bytes_ = 0;
};

}  // namespace mlxn
