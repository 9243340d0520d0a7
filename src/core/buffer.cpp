#include "mlxn/core/buffer.h"

#include <algorithm>
#include <cstring>

#include "backend/cuda/runtime.h"

namespace mlxn {

std::string shape_str(const Shape& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ',';
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

int64_t shape_numel(const Shape& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

Strides contiguous_strides(const Shape& shape) {
  Strides strides(shape.size());
  int64_t stride = 1;
  for (size_t i = shape.size(); i-- > 0;) {
    strides[i] = stride;
    stride *= std::max<int64_t>(shape[i], 1);
  }
  return strides;
}

namespace {

void validate_shape(const Shape& shape, const char* op) {
  if (shape.size() > static_cast<size_t>(kMaxRank)) {
    throw Error(op, "rank " + std::to_string(shape.size()) + " exceeds the maximum " +
                        std::to_string(kMaxRank));
  }
  for (int64_t d : shape) {
    if (d < 0) throw Error(op, "negative extent in shape " + shape_str(shape));
  }
}

int normalize_axis(int axis, int rank, const char* op) {
  const int a = axis < 0 ? axis + rank : axis;
  if (a < 0 || a >= rank) {
    throw Error(op,
                "axis " + std::to_string(axis) + " out of range for rank " + std::to_string(rank));
  }
  return a;
}

Buffer allocate(Shape shape, DType dtype, const Stream& stream, AllocationKind kind) {
  validate_shape(shape, "buffer");
  const int64_t bytes = shape_numel(shape) * dtype_size(dtype);
  auto allocation = BufferPool::for_device(stream.device()).allocate(bytes, stream, kind);
  Strides strides = contiguous_strides(shape);
  return Buffer(std::move(allocation), std::move(shape), std::move(strides), dtype, 0);
}

}  // namespace

Buffer::Buffer(std::shared_ptr<Allocation> allocation, Shape shape, Strides strides, DType dtype,
               int64_t offset_bytes)
    : allocation_(std::move(allocation)),
      shape_(std::move(shape)),
      strides_(std::move(strides)),
      dtype_(dtype),
      offset_bytes_(offset_bytes) {
  validate_shape(shape_, "buffer");
  check(strides_.size() == shape_.size(), "buffer",
        "shape " + shape_str(shape_) + " and strides " + shape_str(strides_) + " differ in rank");
  // The view must lie inside its allocation.
  if (allocation_ && numel() > 0) {
    int64_t lowest = offset_bytes_, highest = offset_bytes_;
    for (size_t i = 0; i < shape_.size(); ++i) {
      const int64_t span = (shape_[i] - 1) * strides_[i] * element_size();
      (span < 0 ? lowest : highest) += span;
    }
    if (lowest < 0 || highest + element_size() > allocation_->requested()) {
      throw Error("buffer", "view " + shape_str(shape_) + " strides " + shape_str(strides_) +
                                " offset " + std::to_string(offset_bytes_) +
                                " reaches outside its allocation of " +
                                std::to_string(allocation_->requested()) + " bytes");
    }
  }
}

Buffer Buffer::empty(Shape shape, DType dtype, const Stream& stream) {
  return allocate(std::move(shape), dtype, stream, AllocationKind::cached);
}

Buffer Buffer::empty_exact(Shape shape, DType dtype, const Stream& stream) {
  return allocate(std::move(shape), dtype, stream, AllocationKind::exact);
}

Buffer Buffer::from_host(const void* bytes, int64_t byte_count, Shape shape, DType dtype,
                         const Stream& stream) {
  Buffer b = empty(std::move(shape), dtype, stream);
  b.copy_from_host(bytes, byte_count, stream);
  return b;
}

Device Buffer::device() const {
  check(defined(), "buffer", "use of an undefined buffer");
  return allocation_->device();
}

int64_t Buffer::dim(int axis) const { return shape_[normalize_axis(axis, rank(), "buffer")]; }

bool Buffer::is_contiguous() const {
  if (numel() == 0) return true;  // nothing to address: any strides describe it
  int64_t expected = 1;
  for (size_t i = shape_.size(); i-- > 0;) {
    if (shape_[i] == 1) continue;
    if (strides_[i] != expected) return false;
    expected *= shape_[i];
  }
  return true;
}

bool Buffer::is_aligned(int64_t bytes) const {
  return reinterpret_cast<uintptr_t>(data()) % static_cast<uintptr_t>(bytes) == 0;
}

void Buffer::require_contiguous(const char* op, const char* name) const {
  if (!is_contiguous()) {
    throw Error(op, std::string(name) + " must be contiguous (shape " + shape_str(shape_) +
                        ", strides " + shape_str(strides_) + ")");
  }
}

void Buffer::require_dtype(DType dtype, const char* op, const char* name) const {
  if (dtype_ != dtype) {
    throw Error(op, std::string(name) + " must be " + std::string(dtype_name(dtype)) + ", got " +
                        std::string(dtype_name(dtype_)));
  }
}

void* Buffer::data() const {
  check(defined(), "buffer", "use of an undefined buffer");
  return static_cast<char*>(allocation_->data()) + offset_bytes_;
}

Buffer Buffer::slice(int axis, int64_t start, int64_t stop, int64_t step) const {
  const int a = normalize_axis(axis, rank(), "slice");
  if (step <= 0) throw Error("slice", "step must be positive, got " + std::to_string(step));
  const int64_t n = shape_[a];
  auto clamp = [n](int64_t i) { return std::clamp<int64_t>(i < 0 ? i + n : i, 0, n); };
  const int64_t lo = clamp(start), hi = std::max(clamp(stop), clamp(start));
  Shape shape = shape_;
  Strides strides = strides_;
  shape[a] = (hi - lo + step - 1) / step;
  strides[a] = strides_[a] * step;
  return Buffer(allocation_, shape, strides, dtype_,
                offset_bytes_ + lo * strides_[a] * element_size());
}

Buffer Buffer::select(int axis, int64_t index) const {
  const int a = normalize_axis(axis, rank(), "select");
  if (index < -shape_[a] || index >= shape_[a]) {
    throw Error("select", "index " + std::to_string(index) + " out of range for axis " +
                              std::to_string(a) + " of extent " + std::to_string(shape_[a]));
  }
  const int64_t i = index < 0 ? index + shape_[a] : index;
  Shape shape = shape_;
  Strides strides = strides_;
  shape.erase(shape.begin() + a);
  strides.erase(strides.begin() + a);
  return Buffer(allocation_, shape, strides, dtype_,
                offset_bytes_ + i * strides_[a] * element_size());
}

Buffer Buffer::reshape(Shape shape) const {
  int infer = -1;
  int64_t known = 1;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] == -1) {
      if (infer >= 0) throw Error("reshape", "more than one -1 in " + shape_str(shape));
      infer = static_cast<int>(i);
    } else {
      known *= shape[i];
    }
  }
  if (infer >= 0 && known > 0) shape[infer] = numel() / known;
  if (shape_numel(shape) != numel()) {
    throw Error("reshape", "cannot reshape " + shape_str(shape_) + " (" + std::to_string(numel()) +
                               " elements) to " + shape_str(shape));
  }
  require_contiguous("reshape", "the source view");
  Strides strides = contiguous_strides(shape);
  return Buffer(allocation_, std::move(shape), std::move(strides), dtype_, offset_bytes_);
}

Buffer Buffer::permute(const std::vector<int>& order) const {
  if (order.size() != shape_.size()) {
    throw Error("permute", "order has " + std::to_string(order.size()) + " axes, buffer has " +
                               std::to_string(rank()));
  }
  std::vector<bool> seen(order.size(), false);
  Shape shape(order.size());
  Strides strides(order.size());
  for (size_t i = 0; i < order.size(); ++i) {
    const int a = normalize_axis(order[i], rank(), "permute");
    if (seen[a]) throw Error("permute", "axis " + std::to_string(a) + " repeated");
    seen[a] = true;
    shape[i] = shape_[a];
    strides[i] = strides_[a];
  }
  return Buffer(allocation_, shape, strides, dtype_, offset_bytes_);
}

Buffer Buffer::transpose(int a, int b) const {
  std::vector<int> order(shape_.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = static_cast<int>(i);
  std::swap(order[normalize_axis(a, rank(), "transpose")],
            order[normalize_axis(b, rank(), "transpose")]);
  return permute(order);
}

Buffer Buffer::broadcast_to(const Shape& shape) const {
  if (shape.size() < shape_.size()) {
    throw Error("broadcast",
                "cannot broadcast " + shape_str(shape_) + " to lower rank " + shape_str(shape));
  }
  const size_t lead = shape.size() - shape_.size();
  Strides strides(shape.size(), 0);
  for (size_t i = 0; i < shape_.size(); ++i) {
    const int64_t from = shape_[i], to = shape[lead + i];
    if (from == to) {
      strides[lead + i] = strides_[i];
    } else if (from != 1) {
      throw Error("broadcast", "cannot broadcast " + shape_str(shape_) + " to " + shape_str(shape));
    }
  }
  return Buffer(allocation_, shape, strides, dtype_, offset_bytes_);
}

void Buffer::copy_from_host(const void* src, int64_t bytes, const Stream& stream) const {
  require_contiguous("copy_from_host", "the destination");
  if (bytes != nbytes()) {
    throw Error("copy_from_host", std::to_string(bytes) + " bytes given for " + describe() + " (" +
                                      std::to_string(nbytes()) + " bytes)");
  }
  if (stream.device() != device()) {
    throw Error("copy_from_host", describe() + " used with a " + stream.device().str() + " stream");
  }
  if (stream.is_capturing()) {
    throw Error("copy_from_host", "not allowed while a graph captures the stream");
  }
  if (bytes == 0) return;
  if (device().is_cpu()) {
    stream.synchronize();
    std::memcpy(data(), src, static_cast<size_t>(bytes));
    return;
  }
  cuda_runtime::memcpy_async(device().index, data(), src, static_cast<size_t>(bytes),
                             cuda_runtime::CopyKind::host_to_device, stream.native_handle());
  stream.synchronize();
}

void Buffer::copy_to_host(void* dst, int64_t bytes, const Stream& stream) const {
  require_contiguous("copy_to_host", "the source");
  if (bytes != nbytes()) {
    throw Error("copy_to_host", std::to_string(bytes) + " bytes asked of " + describe() + " (" +
                                    std::to_string(nbytes()) + " bytes)");
  }
  if (stream.device() != device()) {
    throw Error("copy_to_host", describe() + " used with a " + stream.device().str() + " stream");
  }
  if (stream.is_capturing())
    throw Error("copy_to_host", "not allowed while a graph captures the stream");
  if (bytes == 0) return;
  if (device().is_cpu()) {
    stream.synchronize();
    std::memcpy(dst, data(), static_cast<size_t>(bytes));
    return;
  }
  cuda_runtime::memcpy_async(device().index, dst, data(), static_cast<size_t>(bytes),
                             cuda_runtime::CopyKind::device_to_host, stream.native_handle());
  stream.synchronize();
}

void Buffer::record_stream(const Stream& stream) const {
  check(defined(), "buffer", "record_stream on an undefined buffer");
  allocation_->record_stream(stream);
}

std::string Buffer::describe() const {
  if (!defined()) return "undefined buffer";
  return std::string(dtype_name(dtype_)) + shape_str(shape_) + " on " + device().str();
}

}  // namespace mlxn
