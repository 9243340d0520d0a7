// A read-only memory mapping of a whole file (model weights are never read into RAM as a whole:
// pages come in as tensors are copied out). Move-only; unmaps on destruction.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

namespace mlxn::io {

class MappedFile {
 public:
  // Throws Error("[<op>] <path>: ...") when the file cannot be opened or mapped. An empty file
  // maps to an empty span.
  MappedFile(const std::string& path, const char* op);
  MappedFile(MappedFile&& other) noexcept;
  MappedFile& operator=(MappedFile&& other) noexcept;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  ~MappedFile();

  const std::string& path() const { return path_; }
  int64_t size() const { return static_cast<int64_t>(size_); }
  std::span<const std::byte> bytes() const { return {data_, size_}; }
  // bytes [offset, offset + length); throws Error(op, ...) naming the file and `what` when the
  // range is not inside the file (checked without overflow).
  std::span<const std::byte> range(int64_t offset, int64_t length, const char* op,
                                   const std::string& what) const;

 private:
  void release() noexcept;

  std::string path_;
  const std::byte* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace mlxn::io
