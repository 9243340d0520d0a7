// GGUF v3 model files (ggml's docs/gguf.md): reading through a memory mapping, and writing.
//
// Layout: "GGUF", version u32 = 3, tensor count u64, metadata count u64, the metadata
// (key string, value type u32, value), the tensor infos (name string, n_dims u32, dims u64[n]
// innermost first, type u32, offset u64 relative to the data section), padding to
// `general.alignment` (default 32), then the data section. Strings are u64 length + bytes.
// Everything is little-endian. Versions 1 and 2 and big-endian files are refused.
//
// Every count, length and offset read from a file is checked against the file's size before
// it is used, so a malformed file gives an Error("[gguf] <file>: ...") naming the key or tensor,
// never a crash or an allocation larger than a small multiple of the file.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "mlxn/core/buffer.h"
#include "mlxn/core/stream.h"
#include "mlxn/io/ggml_type.h"
#include "mlxn/ops/weights.h"

namespace mlxn::io {

// Metadata value types with their GGUF ids.
enum class GgufValueType : uint32_t {
  u8 = 0,
  i8 = 1,
  u16 = 2,
  i16 = 3,
  u32 = 4,
  i32 = 5,
  f32 = 6,
  boolean = 7,
  string = 8,
  array = 9,
  u64 = 10,
  i64 = 11,
  f64 = 12,
};
std::string_view gguf_value_type_name(GgufValueType type);  // "u8", ..., "bool", "string"

struct GgufArray;

// The elements of an array, one vector per element type; the alternative's index is the
// element type's id, so an array of strings is a std::vector<std::string> and nested arrays are
// a std::vector<GgufArray>.
using GgufArrayValues =
    std::variant<std::vector<uint8_t>, std::vector<int8_t>, std::vector<uint16_t>,
                 std::vector<int16_t>, std::vector<uint32_t>, std::vector<int32_t>,
                 std::vector<float>, std::vector<bool>, std::vector<std::string>,
                 std::vector<GgufArray>, std::vector<uint64_t>, std::vector<int64_t>,
                 std::vector<double>>;

struct GgufArray {
  GgufArrayValues values;

  GgufValueType element_type() const { return static_cast<GgufValueType>(values.index()); }
  size_t size() const;
  bool operator==(const GgufArray& other) const;
};

// A metadata value; the alternative's index is its GgufValueType id.
using GgufValue = std::variant<uint8_t, int8_t, uint16_t, int16_t, uint32_t, int32_t, float, bool,
                               std::string, GgufArray, uint64_t, int64_t, double>;

inline GgufValueType gguf_value_type(const GgufValue& value) {
  return static_cast<GgufValueType>(value.index());
}
// A short rendering for listings: `42`, `"llama"`, `[string × 32000: "<unk>", "<s>", ...]`.
std::string gguf_value_str(const GgufValue& value, size_t max_items = 8);

struct GgufKv {
  std::string key;
  GgufValue value;
};

struct GgufTensorInfo {
  std::string name;
  std::vector<int64_t> dims;  // as stored: dims[0] = ne0, the innermost (contiguous) extent
  GgmlType type = GgmlType::f32;
  int64_t offset = 0;       // as stored: relative to the data section, a multiple of the alignment
  int64_t file_offset = 0;  // absolute position of the first byte in the file
  int64_t nbytes = 0;

  int64_t numel() const;
  // Row-major shape [.., ne1, ne0] (dims reversed); [] for a 0-d tensor.
  Shape shape() const;
  int64_t row_elements() const { return dims.empty() ? 1 : dims[0]; }  // ne0
  int64_t rows() const;                                                // numel / ne0
  int64_t row_bytes() const;
};

class GgufFile {
 public:
  // Maps and parses the file; throws Error("[gguf] <path>: ...") on anything malformed.
  static GgufFile open(const std::string& path);

  const std::string& path() const;
  uint32_t version() const;
  int64_t file_size() const;
  int64_t alignment() const;    // general.alignment, default 32
  int64_t data_offset() const;  // start of the data section in the file

  // ---- metadata, in file order ----
  const std::vector<GgufKv>& metadata() const;
  bool contains(std::string_view key) const;
  const GgufValue* find(std::string_view key) const;  // nullptr when absent
  const GgufValue& get(std::string_view key) const;   // throws "key ... missing"

  // Integer getters accept a value of any integer type that fits the requested one; a missing
  // key, another type or a value out of range throws, naming the key and both types.
  uint8_t get_u8(std::string_view key) const;
  int8_t get_i8(std::string_view key) const;
  uint16_t get_u16(std::string_view key) const;
  int16_t get_i16(std::string_view key) const;
  uint32_t get_u32(std::string_view key) const;
  int32_t get_i32(std::string_view key) const;
  uint64_t get_u64(std::string_view key) const;
  int64_t get_i64(std::string_view key) const;
  float get_f32(std::string_view key) const;   // f32 only
  double get_f64(std::string_view key) const;  // f64, or f32 (exactly widened)
  bool get_bool(std::string_view key) const;
  const std::string& get_string(std::string_view key) const;
  const GgufArray& get_array(std::string_view key) const;
  const std::vector<std::string>& get_string_array(std::string_view key) const;
  // Arrays of any integer type, each element converted (an element above INT64_MAX throws).
  std::vector<int64_t> get_int_array(std::string_view key) const;
  const std::vector<float>& get_f32_array(std::string_view key) const;

  // ---- tensors, in file order ----
  const std::vector<GgufTensorInfo>& tensors() const;
  const GgufTensorInfo* find_tensor(std::string_view name) const;  // nullptr when absent
  const GgufTensorInfo& tensor(std::string_view name) const;       // throws when absent
  // The tensor's bytes inside the mapping (valid while any copy of this GgufFile lives).
  std::span<const std::byte> tensor_bytes(const GgufTensorInfo& info) const;

  // A new exact-size buffer on the stream's device holding the tensor, copied in chunks:
  // F32 / F16 / BF16 / I8 / I32 / I64 as that dtype with shape(); block types as u8
  // [rows, row_bytes]. I16 and F64 tensors have no dtype here and throw.
  Buffer load(const GgufTensorInfo& info, const Stream& stream) const;
  Buffer load(std::string_view name, const Stream& stream) const;
  // A 2-D tensor [out, in] (dims [in, out]) as a Weight: F32 / F16 / BF16 as a dense weight,
  // Q4_0 / Q8_0 / Q4_K / Q5_K / Q6_K as GGML blocks; other types throw.
  Weight load_weight(const GgufTensorInfo& info, const Stream& stream) const;
  Weight load_weight(std::string_view name, const Stream& stream) const;

 private:
  struct Impl;
  explicit GgufFile(std::shared_ptr<const Impl> impl);
  std::shared_ptr<const Impl> impl_;
};

// Builds a GGUF v3 file. Metadata and tensors are written in the order they were added; the
// alignment is the `general.alignment` value when one was added (a u32 power of two, the only
// form ggml reads), else 32. write() goes to `path + ".partial"` and renames it over `path` only
// once the whole file is written, so a failed write never leaves a truncated file under `path`.
class GgufWriter {
 public:
  // Receives consecutive pieces of a tensor's bytes.
  using Sink = std::function<void(std::span<const std::byte>)>;
  // Produces a tensor's bytes by calling the sink; the pieces must add up to the tensor's size.
  using Producer = std::function<void(const Sink& sink)>;

  // Throws on a duplicate key.
  void add(std::string key, GgufValue value);
  // dims innermost first, as GGUF stores them; ne0 must be a multiple of the type's block size
  // and `bytes` exactly the tensor's size. Names must be unique and shorter than 64 bytes
  // (ggml's GGML_MAX_NAME counts the terminator).
  void add_tensor(std::string name, GgmlType type, std::vector<int64_t> dims,
                  std::span<const std::byte> bytes);
  // The same, with the bytes produced at write time (large tensors stream through).
  void add_tensor(std::string name, GgmlType type, std::vector<int64_t> dims, Producer producer);

  int64_t alignment() const;
  void write(const std::string& path) const;

 private:
  struct Tensor {
    std::string name;
    GgmlType type;
    std::vector<int64_t> dims;
    int64_t nbytes = 0;
    std::vector<std::byte> bytes;  // used when `producer` is empty
    Producer producer;
  };
  void check_tensor(const std::string& name, GgmlType type, const std::vector<int64_t>& dims,
                    int64_t* nbytes) const;

  std::vector<GgufKv> metadata_;
  std::vector<Tensor> tensors_;
};

}  // namespace mlxn::io
