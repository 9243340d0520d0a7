#include "mlxn/io/gguf.h"

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <limits>
#include <map>
#include <numeric>
#include <type_traits>
#include <utility>

#include "io/mapped_file.h"
#include "mlxn/core/error.h"

namespace mlxn::io {

static_assert(std::endian::native == std::endian::little,
              "GGUF values are little-endian; this reader copies them as host values");

namespace {

constexpr uint32_t kVersion = 3;
constexpr int64_t kDefaultAlignment = 32;
constexpr const char* kAlignmentKey = "general.alignment";
// Arrays may nest; the depth is bounded so that a malicious file cannot exhaust the stack.
constexpr int kMaxArrayDepth = 16;
// Bytes of the smallest possible metadata entry (empty key, type, one-byte value) and tensor
// info (empty name, n_dims = 0, type, offset): the counts in the header are checked with these.
constexpr int64_t kMinKvBytes = 8 + 4 + 1;
constexpr int64_t kMinTensorInfoBytes = 8 + 4 + 4 + 8;
// ggml's GGML_MAX_NAME (64) counts the terminating zero.
constexpr size_t kMaxTensorName = 63;
// Host bytes per copy into a buffer: bounds the staging of one copy_from_host.
constexpr int64_t kLoadChunkBytes = int64_t{64} << 20;

Error gguf_error(const std::string& path, const std::string& what) {
  return Error("gguf", path + ": " + what);
}

bool is_integer_type(GgufValueType type) {
  switch (type) {
    case GgufValueType::u8:
    case GgufValueType::i8:
    case GgufValueType::u16:
    case GgufValueType::i16:
    case GgufValueType::u32:
    case GgufValueType::i32:
    case GgufValueType::u64:
    case GgufValueType::i64:
      return true;
    default:
      return false;
  }
}

// Size of one value of a fixed-size type; 0 for string and array.
int64_t fixed_size(GgufValueType type) {
  switch (type) {
    case GgufValueType::u8:
    case GgufValueType::i8:
    case GgufValueType::boolean:
      return 1;
    case GgufValueType::u16:
    case GgufValueType::i16:
      return 2;
    case GgufValueType::u32:
    case GgufValueType::i32:
    case GgufValueType::f32:
      return 4;
    case GgufValueType::u64:
    case GgufValueType::i64:
    case GgufValueType::f64:
      return 8;
    case GgufValueType::string:
    case GgufValueType::array:
      return 0;
  }
  return 0;
}

// Fewest bytes one value of `type` occupies in a file.
int64_t min_value_bytes(GgufValueType type) {
  if (type == GgufValueType::string) return 8;
  if (type == GgufValueType::array) return 4 + 8;
  return fixed_size(type);
}

bool valid_value_type(uint32_t id) { return id <= static_cast<uint32_t>(GgufValueType::f64); }

// Elements and bytes of a tensor of `type` with `dims`; returns false (with `why`) when a dim is
// negative, the element count or byte size passes 2^63 - 1, or ne0 is not a whole number of
// blocks.
bool tensor_size(GgmlType type, const std::vector<int64_t>& dims, int64_t* nbytes,
                 std::string* why) {
  const GgmlTypeInfo* info = ggml_type_info(type);
  if (info == nullptr) {
    *why = "unknown type id " + std::to_string(static_cast<uint32_t>(type));
    return false;
  }
  int64_t numel = 1;
  for (size_t i = 0; i < dims.size(); ++i) {
    if (dims[i] < 0) {
      *why = "dim " + std::to_string(i) + " is negative (" + std::to_string(dims[i]) + ")";
      return false;
    }
    if (dims[i] != 0 && numel > std::numeric_limits<int64_t>::max() / dims[i]) {
      *why = "element count overflows (dims " + shape_str(dims) + ")";
      return false;
    }
    numel *= dims[i];
  }
  const int64_t ne0 = dims.empty() ? 1 : dims[0];
  if (ne0 % info->block_elements != 0) {
    *why = "ne0 = " + std::to_string(ne0) + " is not a multiple of the " + info->name +
           " block size " + std::to_string(info->block_elements);
    return false;
  }
  const int64_t blocks = numel / info->block_elements;
  if (blocks > std::numeric_limits<int64_t>::max() / info->block_bytes) {
    *why = "byte size overflows (dims " + shape_str(dims) + ")";
    return false;
  }
  *nbytes = blocks * info->block_bytes;
  return true;
}

template <class T>
GgufValueType value_type_of() {
  return static_cast<GgufValueType>(GgufValue(std::in_place_type<T>).index());
}

std::string integer_str(const GgufValue& value) {
  return std::visit(
      [](const auto& v) -> std::string {
        using T = std::decay_t<decltype(v)>;
        if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>) {
          return std::to_string(v);
        } else {
          return "?";
        }
      },
      value);
}

// ---- reading ----

// Bounds-checked reads from the mapping. `what` is a callable building the description of the
// field for the error message; it only runs when the read fails.
class Cursor {
 public:
  Cursor(std::span<const std::byte> bytes, const std::string& path)
      : data_(bytes.data()), size_(static_cast<int64_t>(bytes.size())), path_(path) {}

  int64_t pos() const { return pos_; }
  int64_t remaining() const { return size_ - pos_; }

  template <class What>
  const std::byte* take(int64_t n, const What& what) {
    if (n < 0 || n > remaining()) {
      throw gguf_error(path_, "truncated: " + what() + " needs " + std::to_string(n) +
                                  " bytes at offset " + std::to_string(pos_) +
                                  " but the file has " + std::to_string(size_));
    }
    const std::byte* p = data_ + pos_;
    pos_ += n;
    return p;
  }

  template <class T, class What>
  T read(const What& what) {
    T value;
    std::memcpy(&value, take(sizeof(T), what), sizeof(T));
    return value;
  }

  template <class What>
  std::string read_string(const What& what) {
    const auto length = read<uint64_t>([&] { return what() + " length"; });
    if (length > static_cast<uint64_t>(remaining())) {
      throw gguf_error(path_, what() + ": string length " + std::to_string(length) + " at offset " +
                                  std::to_string(pos_ - 8) + " exceeds the " +
                                  std::to_string(remaining()) + " bytes left in the file");
    }
    const std::byte* p = take(static_cast<int64_t>(length), what);
    return std::string(reinterpret_cast<const char*>(p), static_cast<size_t>(length));
  }

 private:
  const std::byte* data_;
  int64_t size_;
  int64_t pos_ = 0;
  const std::string& path_;
};

class Parser {
 public:
  Parser(std::span<const std::byte> bytes, const std::string& path)
      : cursor_(bytes, path), path_(path) {}

  Cursor& cursor() { return cursor_; }

  GgufValue read_value(GgufValueType type, const std::string& key, int depth) {
    const auto what = [&] { return "key " + key + " value"; };
    switch (type) {
      case GgufValueType::u8:
        return cursor_.read<uint8_t>(what);
      case GgufValueType::i8:
        return cursor_.read<int8_t>(what);
      case GgufValueType::u16:
        return cursor_.read<uint16_t>(what);
      case GgufValueType::i16:
        return cursor_.read<int16_t>(what);
      case GgufValueType::u32:
        return cursor_.read<uint32_t>(what);
      case GgufValueType::i32:
        return cursor_.read<int32_t>(what);
      case GgufValueType::f32:
        return cursor_.read<float>(what);
      case GgufValueType::boolean:
        return read_bool(key, what);
      case GgufValueType::string:
        return cursor_.read_string(what);
      case GgufValueType::array:
        return read_array(key, depth);
      case GgufValueType::u64:
        return cursor_.read<uint64_t>(what);
      case GgufValueType::i64:
        return cursor_.read<int64_t>(what);
      case GgufValueType::f64:
        return cursor_.read<double>(what);
    }
    throw gguf_error(path_, "key " + key + ": unknown value type");
  }

 private:
  template <class What>
  bool read_bool(const std::string& key, const What& what) {
    const auto b = cursor_.read<uint8_t>(what);
    if (b > 1) {
      throw gguf_error(path_,
                       "key " + key + ": bool value " + std::to_string(b) + " (must be 0 or 1)");
    }
    return b == 1;
  }

  template <class T>
  std::vector<T> read_fixed(uint64_t count, const std::string& key) {
    std::vector<T> values(static_cast<size_t>(count));
    const std::byte* p = cursor_.take(static_cast<int64_t>(count * sizeof(T)),
                                      [&] { return "key " + key + " array elements"; });
    if (count > 0) std::memcpy(values.data(), p, static_cast<size_t>(count) * sizeof(T));
    return values;
  }

  GgufArray read_array(const std::string& key, int depth) {
    if (depth >= kMaxArrayDepth) {
      throw gguf_error(
          path_, "key " + key + ": arrays nested deeper than " + std::to_string(kMaxArrayDepth));
    }
    const auto type_id =
        cursor_.read<uint32_t>([&] { return "key " + key + " array element type"; });
    if (!valid_value_type(type_id)) {
      throw gguf_error(path_,
                       "key " + key + ": array of unknown value type " + std::to_string(type_id));
    }
    const auto type = static_cast<GgufValueType>(type_id);
    const auto count = cursor_.read<uint64_t>([&] { return "key " + key + " array length"; });
    const auto min_bytes = static_cast<uint64_t>(min_value_bytes(type));
    if (count > static_cast<uint64_t>(cursor_.remaining()) / min_bytes) {
      throw gguf_error(path_, "key " + key + ": array of " + std::to_string(count) + " " +
                                  std::string(gguf_value_type_name(type)) +
                                  " elements cannot fit in the " +
                                  std::to_string(cursor_.remaining()) + " bytes left in the file");
    }
    GgufArray array;
    switch (type) {
      case GgufValueType::u8:
        array.values = read_fixed<uint8_t>(count, key);
        break;
      case GgufValueType::i8:
        array.values = read_fixed<int8_t>(count, key);
        break;
      case GgufValueType::u16:
        array.values = read_fixed<uint16_t>(count, key);
        break;
      case GgufValueType::i16:
        array.values = read_fixed<int16_t>(count, key);
        break;
      case GgufValueType::u32:
        array.values = read_fixed<uint32_t>(count, key);
        break;
      case GgufValueType::i32:
        array.values = read_fixed<int32_t>(count, key);
        break;
      case GgufValueType::f32:
        array.values = read_fixed<float>(count, key);
        break;
      case GgufValueType::u64:
        array.values = read_fixed<uint64_t>(count, key);
        break;
      case GgufValueType::i64:
        array.values = read_fixed<int64_t>(count, key);
        break;
      case GgufValueType::f64:
        array.values = read_fixed<double>(count, key);
        break;
      case GgufValueType::boolean: {
        std::vector<bool> values(static_cast<size_t>(count));
        for (uint64_t i = 0; i < count; ++i) {
          values[i] =
              read_bool(key, [&] { return "key " + key + " element " + std::to_string(i); });
        }
        array.values = std::move(values);
        break;
      }
      case GgufValueType::string: {
        std::vector<std::string> values;
        values.reserve(static_cast<size_t>(count));
        for (uint64_t i = 0; i < count; ++i) {
          values.push_back(
              cursor_.read_string([&] { return "key " + key + " element " + std::to_string(i); }));
        }
        array.values = std::move(values);
        break;
      }
      case GgufValueType::array: {
        std::vector<GgufArray> values;
        values.reserve(static_cast<size_t>(count));
        for (uint64_t i = 0; i < count; ++i) {
          values.push_back(read_array(key + "[" + std::to_string(i) + "]", depth + 1));
        }
        array.values = std::move(values);
        break;
      }
    }
    return array;
  }

  Cursor cursor_;
  const std::string& path_;
};

// A value of integer type converted to T, or an error naming the key and both types.
template <class T>
T integer_as(const GgufValue& value, std::string_view key, const std::string& path,
             const char* wanted) {
  const GgufValueType type = gguf_value_type(value);
  if (!is_integer_type(type)) {
    throw gguf_error(path, "key " + std::string(key) + " has type " +
                               std::string(gguf_value_type_name(type)) + ", expected " + wanted);
  }
  return std::visit(
      [&](const auto& v) -> T {
        using V = std::decay_t<decltype(v)>;
        if constexpr (std::is_integral_v<V> && !std::is_same_v<V, bool>) {
          if (!std::in_range<T>(v)) {
            throw gguf_error(path, "key " + std::string(key) + " value " + std::to_string(v) +
                                       " (" + std::string(gguf_value_type_name(type)) +
                                       ") does not fit " + wanted);
          }
          return static_cast<T>(v);
        } else {
          return T{};  // excluded above
        }
      },
      value);
}

void render_value(const GgufValue& value, size_t max_items, std::string& out);

void render_array(const GgufArray& array, size_t max_items, std::string& out) {
  out += '[';
  out += gguf_value_type_name(array.element_type());
  out += " × ";
  out += std::to_string(array.size());
  std::visit(
      [&](const auto& values) {
        const size_t n = std::min(values.size(), max_items);
        for (size_t i = 0; i < n; ++i) {
          out += i == 0 ? ": " : ", ";
          using E = typename std::decay_t<decltype(values)>::value_type;
          if constexpr (std::is_same_v<E, GgufArray>) {
            render_array(values[i], max_items, out);
          } else {
            render_value(GgufValue(E(values[i])), max_items, out);
          }
        }
        if (values.size() > n) out += ", ...";
      },
      array.values);
  out += "]";
}

void render_value(const GgufValue& value, size_t max_items, std::string& out) {
  std::visit(
      [&](const auto& v) {
        using V = std::decay_t<decltype(v)>;
        if constexpr (std::is_same_v<V, bool>) {
          out += v ? "true" : "false";
        } else if constexpr (std::is_same_v<V, std::string>) {
          out += "\"" + v + "\"";
        } else if constexpr (std::is_same_v<V, GgufArray>) {
          render_array(v, max_items, out);
        } else if constexpr (std::is_floating_point_v<V>) {
          char buf[32];
          std::snprintf(buf, sizeof buf, "%.9g", static_cast<double>(v));
          out += buf;
        } else {
          out += std::to_string(v);
        }
      },
      value);
}

}  // namespace

// ---- value helpers ----

std::string_view gguf_value_type_name(GgufValueType type) {
  switch (type) {
    case GgufValueType::u8:
      return "u8";
    case GgufValueType::i8:
      return "i8";
    case GgufValueType::u16:
      return "u16";
    case GgufValueType::i16:
      return "i16";
    case GgufValueType::u32:
      return "u32";
    case GgufValueType::i32:
      return "i32";
    case GgufValueType::f32:
      return "f32";
    case GgufValueType::boolean:
      return "bool";
    case GgufValueType::string:
      return "string";
    case GgufValueType::array:
      return "array";
    case GgufValueType::u64:
      return "u64";
    case GgufValueType::i64:
      return "i64";
    case GgufValueType::f64:
      return "f64";
  }
  return "?";
}

size_t GgufArray::size() const {
  return std::visit([](const auto& v) { return v.size(); }, values);
}

bool GgufArray::operator==(const GgufArray& other) const { return values == other.values; }

std::string gguf_value_str(const GgufValue& value, size_t max_items) {
  std::string out;
  render_value(value, max_items, out);
  return out;
}

// ---- tensor info ----

int64_t GgufTensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : dims) n *= d;
  return n;
}

Shape GgufTensorInfo::shape() const { return Shape(dims.rbegin(), dims.rend()); }

int64_t GgufTensorInfo::rows() const {
  int64_t n = 1;
  for (size_t i = 1; i < dims.size(); ++i) n *= dims[i];
  return n;
}

int64_t GgufTensorInfo::row_bytes() const {
  const GgmlTypeInfo* info = ggml_type_info(type);
  return info == nullptr ? 0 : row_elements() / info->block_elements * info->block_bytes;
}

// ---- the file ----

struct GgufFile::Impl {
  MappedFile file;
  uint32_t version = 0;
  int64_t alignment = kDefaultAlignment;
  int64_t data_offset = 0;
  std::vector<GgufKv> metadata;
  std::map<std::string, size_t, std::less<>> key_index;
  std::vector<GgufTensorInfo> tensors;
  std::map<std::string, size_t, std::less<>> tensor_index;

  explicit Impl(const std::string& path) : file(path, "gguf") {}
  const std::string& path() const { return file.path(); }
};

GgufFile::GgufFile(std::shared_ptr<const Impl> impl) : impl_(std::move(impl)) {}

GgufFile GgufFile::open(const std::string& path) {
  auto impl = std::make_shared<Impl>(path);
  const std::string& p = impl->path();
  Parser parser(impl->file.bytes(), p);
  Cursor& in = parser.cursor();

  // Header.
  const std::byte* magic = in.take(4, [] { return std::string("magic"); });
  if (std::memcmp(magic, "GGUF", 4) != 0) {
    char shown[32];
    std::snprintf(shown, sizeof shown, "%02x %02x %02x %02x", static_cast<unsigned>(magic[0]),
                  static_cast<unsigned>(magic[1]), static_cast<unsigned>(magic[2]),
                  static_cast<unsigned>(magic[3]));
    throw gguf_error(p, std::string("not a GGUF file: magic bytes ") + shown +
                            ", expected 47 47 55 46 (\"GGUF\")");
  }
  const auto version = in.read<uint32_t>([] { return std::string("version"); });
  if (version != kVersion) {
    const uint32_t swapped = ((version & 0xffu) << 24) | ((version & 0xff00u) << 8) |
                             ((version >> 8) & 0xff00u) | (version >> 24);
    if (swapped >= 1 && swapped <= kVersion) {
      throw gguf_error(p, "big-endian GGUF file (version reads as " + std::to_string(version) +
                              "); only little-endian files are supported");
    }
    if (version == 1 || version == 2) {
      throw gguf_error(p, "GGUF version " + std::to_string(version) +
                              " is not supported (only version 3; convert the file again)");
    }
    throw gguf_error(p, "unsupported GGUF version " + std::to_string(version) +
                            " (only version 3 is supported)");
  }
  impl->version = version;
  const auto tensor_count = in.read<uint64_t>([] { return std::string("tensor count"); });
  const auto kv_count = in.read<uint64_t>([] { return std::string("metadata count"); });
  const auto left = static_cast<uint64_t>(in.remaining());
  if (kv_count > left / kMinKvBytes) {
    throw gguf_error(p, "metadata count " + std::to_string(kv_count) + " cannot fit in the " +
                            std::to_string(left) + " bytes after the header");
  }
  if (tensor_count > left / kMinTensorInfoBytes ||
      kv_count * kMinKvBytes + tensor_count * kMinTensorInfoBytes > left) {
    throw gguf_error(p, "tensor count " + std::to_string(tensor_count) + " (with " +
                            std::to_string(kv_count) + " metadata entries) cannot fit in the " +
                            std::to_string(left) + " bytes after the header");
  }

  // Metadata.
  impl->metadata.reserve(static_cast<size_t>(kv_count));
  for (uint64_t i = 0; i < kv_count; ++i) {
    std::string key = in.read_string([&] { return "key of metadata entry " + std::to_string(i); });
    const auto type_id = in.read<uint32_t>([&] { return "key " + key + " value type"; });
    if (!valid_value_type(type_id)) {
      throw gguf_error(p, "key " + key + " has unknown value type " + std::to_string(type_id));
    }
    GgufValue value = parser.read_value(static_cast<GgufValueType>(type_id), key, 0);
    if (!impl->key_index.emplace(key, impl->metadata.size()).second) {
      throw gguf_error(p, "duplicate key " + key);
    }
    impl->metadata.push_back({std::move(key), std::move(value)});
  }

  // Alignment. The spec makes it a u32; any integer type that holds a power of two is read.
  if (auto it = impl->key_index.find(kAlignmentKey); it != impl->key_index.end()) {
    const GgufValue& v = impl->metadata[it->second].value;
    const auto a = integer_as<uint64_t>(v, kAlignmentKey, p, "an unsigned integer");
    if (a == 0 || !std::has_single_bit(a) || a > (uint64_t{1} << 30)) {
      throw gguf_error(p, std::string(kAlignmentKey) + " " + integer_str(v) +
                              " is not a power of two in [1, 2^30]");
    }
    impl->alignment = static_cast<int64_t>(a);
  }

  // Tensor infos.
  impl->tensors.reserve(static_cast<size_t>(tensor_count));
  for (uint64_t i = 0; i < tensor_count; ++i) {
    GgufTensorInfo t;
    t.name = in.read_string([&] { return "name of tensor info " + std::to_string(i); });
    const std::string& name = t.name;
    const auto n_dims = in.read<uint32_t>([&] { return "tensor " + name + " n_dims"; });
    if (n_dims > static_cast<uint32_t>(kMaxRank)) {
      throw gguf_error(p, "tensor " + name + " has " + std::to_string(n_dims) + " dims (at most " +
                              std::to_string(kMaxRank) + " supported)");
    }
    for (uint32_t d = 0; d < n_dims; ++d) {
      const auto ne =
          in.read<uint64_t>([&] { return "tensor " + name + " dim " + std::to_string(d); });
      if (ne > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
        throw gguf_error(p, "tensor " + name + " dim " + std::to_string(d) + " = " +
                                std::to_string(ne) + " exceeds 2^63 - 1");
      }
      t.dims.push_back(static_cast<int64_t>(ne));
    }
    const auto type_id = in.read<uint32_t>([&] { return "tensor " + name + " type"; });
    if (ggml_type_info(type_id) == nullptr) {
      throw gguf_error(p, "tensor " + name + " has unknown type id " + std::to_string(type_id));
    }
    t.type = static_cast<GgmlType>(type_id);
    const auto offset = in.read<uint64_t>([&] { return "tensor " + name + " offset"; });
    if (offset > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      throw gguf_error(
          p, "tensor " + name + " offset " + std::to_string(offset) + " exceeds 2^63 - 1");
    }
    t.offset = static_cast<int64_t>(offset);
    std::string why;
    if (!tensor_size(t.type, t.dims, &t.nbytes, &why)) {
      throw gguf_error(p, "tensor " + name + " (" + ggml_type_name(t.type) + "): " + why);
    }
    if (!impl->tensor_index.emplace(t.name, impl->tensors.size()).second) {
      throw gguf_error(p, "duplicate tensor name " + name);
    }
    impl->tensors.push_back(std::move(t));
  }

  // Data section: every tensor aligned, inside it, and no two overlapping.
  const int64_t size = impl->file.size();
  const int64_t end_of_infos = in.pos();
  impl->data_offset = (end_of_infos + impl->alignment - 1) / impl->alignment * impl->alignment;
  if (!impl->tensors.empty() && impl->data_offset > size) {
    throw gguf_error(p, "truncated: the data section starts at " +
                            std::to_string(impl->data_offset) + " but the file has " +
                            std::to_string(size) + " bytes");
  }
  const int64_t data_size = std::max<int64_t>(0, size - impl->data_offset);
  for (GgufTensorInfo& t : impl->tensors) {
    if (t.offset % impl->alignment != 0) {
      throw gguf_error(p, "tensor " + t.name + " offset " + std::to_string(t.offset) +
                              " is not a multiple of the alignment " +
                              std::to_string(impl->alignment));
    }
    if (t.offset > data_size || t.nbytes > data_size - t.offset) {
      throw gguf_error(p, "tensor " + t.name + " bytes [" + std::to_string(t.offset) + ", +" +
                              std::to_string(t.nbytes) + ") of the data section lie outside it (" +
                              std::to_string(data_size) + " bytes from offset " +
                              std::to_string(impl->data_offset) + ")");
    }
    t.file_offset = impl->data_offset + t.offset;
  }
  std::vector<size_t> order(impl->tensors.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return impl->tensors[a].offset < impl->tensors[b].offset;
  });
  const GgufTensorInfo* previous = nullptr;
  for (size_t i : order) {
    const GgufTensorInfo& t = impl->tensors[i];
    if (t.nbytes == 0) continue;
    if (previous != nullptr && previous->offset + previous->nbytes > t.offset) {
      throw gguf_error(p, "tensors " + previous->name + " [" + std::to_string(previous->offset) +
                              ", +" + std::to_string(previous->nbytes) + ") and " + t.name + " [" +
                              std::to_string(t.offset) + ", +" + std::to_string(t.nbytes) +
                              ") overlap");
    }
    previous = &t;
  }
  return GgufFile(std::move(impl));
}

const std::string& GgufFile::path() const { return impl_->path(); }
uint32_t GgufFile::version() const { return impl_->version; }
int64_t GgufFile::file_size() const { return impl_->file.size(); }
int64_t GgufFile::alignment() const { return impl_->alignment; }
int64_t GgufFile::data_offset() const { return impl_->data_offset; }
const std::vector<GgufKv>& GgufFile::metadata() const { return impl_->metadata; }

bool GgufFile::contains(std::string_view key) const { return find(key) != nullptr; }

const GgufValue* GgufFile::find(std::string_view key) const {
  const auto it = impl_->key_index.find(key);
  return it == impl_->key_index.end() ? nullptr : &impl_->metadata[it->second].value;
}

const GgufValue& GgufFile::get(std::string_view key) const {
  const GgufValue* v = find(key);
  if (v == nullptr) throw gguf_error(path(), "key " + std::string(key) + " missing");
  return *v;
}

namespace {

template <class T>
const T& typed(const GgufValue& value, std::string_view key, const std::string& path) {
  if (const T* v = std::get_if<T>(&value)) return *v;
  throw gguf_error(path, "key " + std::string(key) + " has type " +
                             std::string(gguf_value_type_name(gguf_value_type(value))) +
                             ", expected " + std::string(gguf_value_type_name(value_type_of<T>())));
}

template <class T>
const std::vector<T>& typed_array(const GgufArray& array, std::string_view key,
                                  const std::string& path) {
  if (const auto* v = std::get_if<std::vector<T>>(&array.values)) return *v;
  throw gguf_error(path, "key " + std::string(key) + " is an array of " +
                             std::string(gguf_value_type_name(array.element_type())) +
                             ", expected an array of " +
                             std::string(gguf_value_type_name(value_type_of<T>())));
}

}  // namespace

uint8_t GgufFile::get_u8(std::string_view key) const {
  return integer_as<uint8_t>(get(key), key, path(), "u8");
}
int8_t GgufFile::get_i8(std::string_view key) const {
  return integer_as<int8_t>(get(key), key, path(), "i8");
}
uint16_t GgufFile::get_u16(std::string_view key) const {
  return integer_as<uint16_t>(get(key), key, path(), "u16");
}
int16_t GgufFile::get_i16(std::string_view key) const {
  return integer_as<int16_t>(get(key), key, path(), "i16");
}
uint32_t GgufFile::get_u32(std::string_view key) const {
  return integer_as<uint32_t>(get(key), key, path(), "u32");
}
int32_t GgufFile::get_i32(std::string_view key) const {
  return integer_as<int32_t>(get(key), key, path(), "i32");
}
uint64_t GgufFile::get_u64(std::string_view key) const {
  return integer_as<uint64_t>(get(key), key, path(), "u64");
}
int64_t GgufFile::get_i64(std::string_view key) const {
  return integer_as<int64_t>(get(key), key, path(), "i64");
}
float GgufFile::get_f32(std::string_view key) const { return typed<float>(get(key), key, path()); }
double GgufFile::get_f64(std::string_view key) const {
  const GgufValue& v = get(key);
  if (const float* f = std::get_if<float>(&v)) return *f;
  return typed<double>(v, key, path());
}
bool GgufFile::get_bool(std::string_view key) const { return typed<bool>(get(key), key, path()); }
const std::string& GgufFile::get_string(std::string_view key) const {
  return typed<std::string>(get(key), key, path());
}
const GgufArray& GgufFile::get_array(std::string_view key) const {
  return typed<GgufArray>(get(key), key, path());
}
const std::vector<std::string>& GgufFile::get_string_array(std::string_view key) const {
  return typed_array<std::string>(get_array(key), key, path());
}
const std::vector<float>& GgufFile::get_f32_array(std::string_view key) const {
  return typed_array<float>(get_array(key), key, path());
}

std::vector<int64_t> GgufFile::get_int_array(std::string_view key) const {
  const GgufArray& array = get_array(key);
  if (!is_integer_type(array.element_type())) {
    throw gguf_error(path(), "key " + std::string(key) + " is an array of " +
                                 std::string(gguf_value_type_name(array.element_type())) +
                                 ", expected an array of integers");
  }
  return std::visit(
      [&](const auto& values) {
        using E = typename std::decay_t<decltype(values)>::value_type;
        std::vector<int64_t> out;
        if constexpr (std::is_integral_v<E> && !std::is_same_v<E, bool>) {
          out.reserve(values.size());
          for (size_t i = 0; i < values.size(); ++i) {
            if (!std::in_range<int64_t>(values[i])) {
              throw gguf_error(path(), "key " + std::string(key) + " element " + std::to_string(i) +
                                           " = " + std::to_string(values[i]) + " does not fit i64");
            }
            out.push_back(static_cast<int64_t>(values[i]));
          }
        }
        return out;
      },
      array.values);
}

const std::vector<GgufTensorInfo>& GgufFile::tensors() const { return impl_->tensors; }

const GgufTensorInfo* GgufFile::find_tensor(std::string_view name) const {
  const auto it = impl_->tensor_index.find(name);
  return it == impl_->tensor_index.end() ? nullptr : &impl_->tensors[it->second];
}

const GgufTensorInfo& GgufFile::tensor(std::string_view name) const {
  const GgufTensorInfo* t = find_tensor(name);
  if (t == nullptr) throw gguf_error(path(), "tensor " + std::string(name) + " missing");
  return *t;
}

std::span<const std::byte> GgufFile::tensor_bytes(const GgufTensorInfo& info) const {
  return impl_->file.range(info.file_offset, info.nbytes, "gguf", "tensor " + info.name);
}

Buffer GgufFile::load(const GgufTensorInfo& info, const Stream& stream) const {
  const std::span<const std::byte> bytes = tensor_bytes(info);
  // Plain types load as their dtype; block types as their raw rows of blocks.
  Shape shape = info.shape();
  DType dtype = DType::u8;
  switch (info.type) {
    case GgmlType::f32:
      dtype = DType::f32;
      break;
    case GgmlType::f16:
      dtype = DType::f16;
      break;
    case GgmlType::bf16:
      dtype = DType::bf16;
      break;
    case GgmlType::i8:
      dtype = DType::i8;
      break;
    case GgmlType::i32:
      dtype = DType::i32;
      break;
    case GgmlType::i64:
      dtype = DType::i64;
      break;
    default:
      if (!ggml_type_is_blocked(info.type)) {
        throw gguf_error(path(), "tensor " + info.name + ": type " + ggml_type_name(info.type) +
                                     " has no buffer dtype");
      }
      shape = {info.rows(), info.row_bytes()};
      break;
  }
  Buffer out = Buffer::empty_exact(shape, dtype, stream);
  if (out.nbytes() != info.nbytes) {
    throw gguf_error(path(), "tensor " + info.name + ": " + out.describe() + " holds " +
                                 std::to_string(out.nbytes()) + " bytes, the file " +
                                 std::to_string(info.nbytes));
  }
  const int64_t n = out.numel();
  if (n == 0) return out;
  const Buffer flat = out.reshape({n});
  const int64_t element = out.element_size();
  const int64_t chunk = std::max<int64_t>(1, kLoadChunkBytes / element);
  for (int64_t start = 0; start < n; start += chunk) {
    const int64_t stop = std::min(n, start + chunk);
    flat.slice(0, start, stop)
        .copy_from_host(bytes.data() + start * element, (stop - start) * element, stream);
  }
  return out;
}

Buffer GgufFile::load(std::string_view name, const Stream& stream) const {
  return load(tensor(name), stream);
}

// ---- writing ----

namespace {

class FileOut {
 public:
  explicit FileOut(const std::string& path) : path_(path) {
    file_ = std::fopen(path.c_str(), "wb");
    if (file_ == nullptr) {
      throw gguf_error(path, std::string("cannot create: ") + std::strerror(errno));
    }
  }
  FileOut(const FileOut&) = delete;
  FileOut& operator=(const FileOut&) = delete;
  ~FileOut() {
    if (file_ != nullptr) std::fclose(file_);
  }

  int64_t pos() const { return pos_; }

  void write(const void* data, size_t n) {
    if (n == 0) return;
    if (std::fwrite(data, 1, n, file_) != n) {
      throw gguf_error(path_, std::string("write failed: ") + std::strerror(errno));
    }
    pos_ += static_cast<int64_t>(n);
  }
  template <class T>
  void put(T value) {
    write(&value, sizeof value);
  }
  void put_string(const std::string& s) {
    put<uint64_t>(s.size());
    write(s.data(), s.size());
  }
  void pad_to(int64_t alignment) {
    static const char kZeros[256] = {};
    int64_t n = (alignment - pos_ % alignment) % alignment;
    while (n > 0) {
      const int64_t piece = std::min<int64_t>(n, sizeof kZeros);
      write(kZeros, static_cast<size_t>(piece));
      n -= piece;
    }
  }
  void close() {
    const int rc = std::fclose(file_);
    file_ = nullptr;
    if (rc != 0) throw gguf_error(path_, std::string("write failed: ") + std::strerror(errno));
  }

 private:
  std::string path_;
  std::FILE* file_ = nullptr;
  int64_t pos_ = 0;
};

void write_array(FileOut& out, const GgufArray& array);

void write_value(FileOut& out, const GgufValue& value) {
  std::visit(
      [&](const auto& v) {
        using V = std::decay_t<decltype(v)>;
        if constexpr (std::is_same_v<V, bool>) {
          out.put<uint8_t>(v ? 1 : 0);
        } else if constexpr (std::is_same_v<V, std::string>) {
          out.put_string(v);
        } else if constexpr (std::is_same_v<V, GgufArray>) {
          write_array(out, v);
        } else {
          out.put<V>(v);
        }
      },
      value);
}

void write_array(FileOut& out, const GgufArray& array) {
  out.put<uint32_t>(static_cast<uint32_t>(array.element_type()));
  out.put<uint64_t>(array.size());
  std::visit(
      [&](const auto& values) {
        using E = typename std::decay_t<decltype(values)>::value_type;
        if constexpr (std::is_same_v<E, bool>) {
          for (bool b : values) out.put<uint8_t>(b ? 1 : 0);
        } else if constexpr (std::is_same_v<E, std::string>) {
          for (const std::string& s : values) out.put_string(s);
        } else if constexpr (std::is_same_v<E, GgufArray>) {
          for (const GgufArray& a : values) write_array(out, a);
        } else {
          out.write(values.data(), values.size() * sizeof(E));
        }
      },
      array.values);
}

}  // namespace

void GgufWriter::add(std::string key, GgufValue value) {
  for (const GgufKv& kv : metadata_) {
    if (kv.key == key) throw Error("gguf", "writer: duplicate key " + key);
  }
  if (key == kAlignmentKey) {
    // ggml reads this key as a u32 only (and aborts on any other type), so write nothing else.
    const uint32_t* a = std::get_if<uint32_t>(&value);
    if (a == nullptr) {
      throw Error("gguf", "writer: " + key + " has type " +
                              std::string(gguf_value_type_name(gguf_value_type(value))) +
                              ", expected u32");
    }
    if (*a == 0 || !std::has_single_bit(*a) || *a > (uint32_t{1} << 30)) {
      throw Error("gguf", "writer: " + key + " " + integer_str(value) +
                              " is not a power of two in [1, 2^30]");
    }
  }
  metadata_.push_back({std::move(key), std::move(value)});
}

void GgufWriter::check_tensor(const std::string& name, GgmlType type,
                              const std::vector<int64_t>& dims, int64_t* nbytes) const {
  if (name.size() > kMaxTensorName) {
    throw Error("gguf", "writer: tensor name " + name + " is " + std::to_string(name.size()) +
                            " bytes (at most " + std::to_string(kMaxTensorName) + ")");
  }
  for (const Tensor& t : tensors_) {
    if (t.name == name) throw Error("gguf", "writer: duplicate tensor name " + name);
  }
  if (dims.size() > static_cast<size_t>(kMaxRank)) {
    throw Error("gguf", "writer: tensor " + name + " has " + std::to_string(dims.size()) +
                            " dims (at most " + std::to_string(kMaxRank) + ")");
  }
  std::string why;
  if (!tensor_size(type, dims, nbytes, &why)) {
    throw Error("gguf", "writer: tensor " + name + ": " + why);
  }
}

void GgufWriter::add_tensor(std::string name, GgmlType type, std::vector<int64_t> dims,
                            std::span<const std::byte> bytes) {
  int64_t nbytes = 0;
  check_tensor(name, type, dims, &nbytes);
  if (static_cast<int64_t>(bytes.size()) != nbytes) {
    throw Error("gguf", "writer: tensor " + name + " (" + ggml_type_name(type) + " " +
                            shape_str(dims) + ") needs " + std::to_string(nbytes) + " bytes, " +
                            std::to_string(bytes.size()) + " given");
  }
  tensors_.push_back({std::move(name), type, std::move(dims), nbytes,
                      std::vector<std::byte>(bytes.begin(), bytes.end()), Producer()});
}

void GgufWriter::add_tensor(std::string name, GgmlType type, std::vector<int64_t> dims,
                            Producer producer) {
  int64_t nbytes = 0;
  check_tensor(name, type, dims, &nbytes);
  if (!producer) throw Error("gguf", "writer: tensor " + name + " has no producer");
  tensors_.push_back({std::move(name), type, std::move(dims), nbytes, std::vector<std::byte>(),
                      std::move(producer)});
}

int64_t GgufWriter::alignment() const {
  for (const GgufKv& kv : metadata_) {
    if (kv.key == kAlignmentKey) return std::get<uint32_t>(kv.value);
  }
  return kDefaultAlignment;
}

void GgufWriter::write(const std::string& path) const {
  const int64_t alignment = this->alignment();
  const std::string partial = path + ".partial";
  try {
    FileOut out(partial);
    out.write("GGUF", 4);
    out.put<uint32_t>(kVersion);
    out.put<uint64_t>(tensors_.size());
    out.put<uint64_t>(metadata_.size());
    for (const GgufKv& kv : metadata_) {
      out.put_string(kv.key);
      out.put<uint32_t>(static_cast<uint32_t>(gguf_value_type(kv.value)));
      write_value(out, kv.value);
    }
    int64_t offset = 0;
    for (const Tensor& t : tensors_) {
      out.put_string(t.name);
      out.put<uint32_t>(static_cast<uint32_t>(t.dims.size()));
      for (int64_t d : t.dims) out.put<uint64_t>(static_cast<uint64_t>(d));
      out.put<uint32_t>(static_cast<uint32_t>(t.type));
      out.put<uint64_t>(static_cast<uint64_t>(offset));
      offset += (t.nbytes + alignment - 1) / alignment * alignment;
    }
    out.pad_to(alignment);
    for (const Tensor& t : tensors_) {
      if (!t.producer) {
        out.write(t.bytes.data(), t.bytes.size());
      } else {
        int64_t produced = 0;
        t.producer([&](std::span<const std::byte> piece) {
          if (static_cast<int64_t>(piece.size()) > t.nbytes - produced) {
            throw Error("gguf", "writer: tensor " + t.name + " produced more than its " +
                                    std::to_string(t.nbytes) + " bytes");
          }
          out.write(piece.data(), piece.size());
          produced += static_cast<int64_t>(piece.size());
        });
        if (produced != t.nbytes) {
          throw Error("gguf", "writer: tensor " + t.name + " produced " + std::to_string(produced) +
                                  " of its " + std::to_string(t.nbytes) + " bytes");
        }
      }
      out.pad_to(alignment);
    }
    out.close();
    if (std::rename(partial.c_str(), path.c_str()) != 0) {
      throw gguf_error(path, "cannot rename " + partial + ": " + std::strerror(errno));
    }
  } catch (...) {
    std::remove(partial.c_str());
    throw;
  }
}

}  // namespace mlxn::io
