// Safetensors files: reading (memory-mapped, every header field checked) and streaming writing.
//
// Layout: an 8-byte little-endian header length N, N bytes of UTF-8 JSON
//   {"__metadata__": {"k": "v"}, "<name>": {"dtype": "BF16", "shape": [..],
//    "data_offsets": [begin, end]}, ...}
// then the data block; offsets are relative to its start. A model is one `model.safetensors`
// or shards listed by `model.safetensors.index.json` ({"weight_map": {tensor: file}}).
//
// Reading rejects, with an Error("[safetensors] <file>: ...") naming the tensor: a header length
// past the end of the file or above 100 MB, a header that is not UTF-8 JSON or not an object,
// duplicate names, missing keys or keys of the wrong JSON type, unknown dtypes, negative or
// non-integer extents, a byte length that differs from shape x dtype (computed without overflow),
// offsets outside the data block, and tensors whose bytes overlap. Unlike the reference library,
// gaps between tensors and trailing bytes are accepted: nothing is read from them.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "mlxn/core/buffer.h"
#include "mlxn/core/dtype.h"
#include "mlxn/core/stream.h"

namespace mlxn::io {

class MappedFile;

// Bits per element of a safetensors dtype string ("BF16" -> 16, "F4" -> 4), or 0 when the
// string is not a dtype of the format.
int safetensors_dtype_bits(std::string_view dtype);
// Our DType for a safetensors dtype string; nullopt for the format's dtypes we have no element
// type for (F64, I16, U16, U64, BOOL, F8_E8M0, F4, F6_*, C64).
std::optional<DType> safetensors_to_dtype(std::string_view dtype);
// The safetensors dtype string of a DType ("F32", "BF16", "F8_E4M3", ...).
std::string_view dtype_to_safetensors(DType dtype);

struct TensorInfo {
  std::string name;
  std::string file;            // the path of the file holding it
  std::string dtype_name;      // as written in the file: "BF16", "F64", ...
  std::optional<DType> dtype;  // ours, when we have one (see safetensors_to_dtype)
  Shape shape;                 // may be empty (a scalar) or contain zeros
  int64_t offset = 0;          // absolute byte offset in the file
  int64_t nbytes = 0;

  int64_t numel() const { return shape_numel(shape); }
};

// Reports (bytes done, bytes total) while a tensor is copied.
using ProgressFn = std::function<void(int64_t done, int64_t total)>;

class SafetensorsFile {
 public:
  // Maps the file and validates its header (see the list above).
  static SafetensorsFile open(const std::string& path);

  SafetensorsFile(SafetensorsFile&&) noexcept;
  SafetensorsFile& operator=(SafetensorsFile&&) noexcept;
  ~SafetensorsFile();

  const std::string& path() const;
  int64_t file_size() const;
  // Sorted by name.
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  // nullptr when absent.
  const TensorInfo* find(std::string_view name) const;
  // Throws Error("[safetensors] <file>: no tensor '<name>'") when absent.
  const TensorInfo& at(std::string_view name) const;

  // The tensor's bytes inside the mapping (no copy). `info` must come from this file.
  std::span<const std::byte> bytes(const TensorInfo& info) const;
  // A contiguous exact-size buffer on the stream's device holding the tensor, copied in chunks
  // of 64 MiB. Throws for dtypes without a DType and for ranks above kMaxRank.
  Buffer load(const TensorInfo& info, const Stream& stream, const ProgressFn& progress = {}) const;

 private:
  SafetensorsFile() = default;

  std::unique_ptr<MappedFile> file_;
  std::vector<TensorInfo> tensors_;
  std::unordered_map<std::string, size_t> index_;
  std::map<std::string, std::string> metadata_;
};

// The weights of a model directory: `model.safetensors.index.json` when present (every file in
// its weight_map opened once), else `model.safetensors`. A tensor the index maps to a file that
// lacks it, or a name found in two files, is an error. Tensors a shard holds beyond the index
// are kept (loaders read whole shards).
class SafetensorsModel {
 public:
  static SafetensorsModel open_dir(const std::string& dir);

  const std::string& dir() const { return dir_; }
  const std::vector<SafetensorsFile>& files() const { return files_; }
  // Every tensor name, sorted.
  const std::vector<std::string>& names() const { return names_; }
  bool contains(std::string_view name) const { return find(name) != nullptr; }
  const TensorInfo* find(std::string_view name) const;
  // Throws Error("[safetensors] <dir>: no tensor '<name>'") when absent.
  const TensorInfo& at(std::string_view name) const;
  // The file that holds `info`.
  const SafetensorsFile& file_of(const TensorInfo& info) const;
  Buffer load(std::string_view name, const Stream& stream, const ProgressFn& progress = {}) const;
  // Sum of the tensors' byte lengths.
  int64_t total_bytes() const;

 private:
  std::string dir_;
  std::vector<SafetensorsFile> files_;
  std::vector<std::string> names_;
  // name -> (file index, tensor index in that file)
  std::unordered_map<std::string, std::pair<size_t, size_t>> where_;
};

// One tensor to write. `produce` is called once, in file order, and must hand exactly
// numel x dtype bytes to `sink`, in as many pieces as it likes: only one tensor's bytes need
// to exist at a time.
using ByteSink = std::function<void(std::span<const std::byte>)>;
struct TensorToWrite {
  std::string name;
  std::string dtype;  // a safetensors dtype string
  Shape shape;
  std::function<void(const ByteSink& sink)> produce;

  // `bytes` must outlive the write.
  static TensorToWrite from_bytes(std::string name, std::string dtype, Shape shape,
                                  std::span<const std::byte> bytes);
  // A contiguous CPU buffer (kept alive by the entry).
  static TensorToWrite from_buffer(std::string name, const Buffer& buffer);
};

// Byte length of a tensor of `dtype` and `shape`; throws Error("[safetensors] ...") on an
// unknown dtype, a negative extent, overflow, or a bit count that is not a whole byte.
int64_t safetensors_nbytes(std::string_view dtype, const Shape& shape, std::string_view what);

// Writes the tensors in the given order (the header lists them in that order, `__metadata__`
// first, padded with spaces to a multiple of 8 bytes as the reference writer does). The file is
// written as `path + ".partial"` and renamed into place only when complete, so a failure never
// leaves a truncated file under `path`. `on_bytes` is told of every piece written.
void write_safetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                       const std::map<std::string, std::string>& metadata = {},
                       const std::function<void(int64_t bytes)>& on_bytes = {});

}  // namespace mlxn::io
