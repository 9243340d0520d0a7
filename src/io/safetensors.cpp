#include "mlxn/io/safetensors.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>
#include <unordered_set>
#include <utility>

#include "core/text.h"
#include "io/json_util.h"
#include "io/mapped_file.h"
#include "mlxn/core/error.h"

namespace mlxn::io {

namespace {

constexpr const char* kOp = "safetensors";
// The reference implementations refuse larger headers; a real one is a few hundred KB.
constexpr int64_t kMaxHeaderBytes = 100'000'000;
// Pieces in which a tensor moves from the mapping to a buffer: big enough to run at memory
// bandwidth, small enough to report progress and to bound a staging copy on a GPU.
constexpr int64_t kLoadChunkBytes = int64_t{64} << 20;

// Headers are read into nlohmann::json (sorted keys, logarithmic lookups: a shard may list many
// thousand tensors); entries are written with ordered_json to keep the reference key order.
using json = nlohmann::json;
using ordered_json = nlohmann::ordered_json;

struct DTypeEntry {
  std::string_view name;
  int bits;
  std::optional<DType> dtype;
};

// Every dtype of the format (safetensors' Dtype enum), with ours where we have one.
constexpr std::array<DTypeEntry, 20> kDTypes = {{
    {"BOOL", 8, std::nullopt},     {"U8", 8, DType::u8},          {"I8", 8, DType::i8},
    {"F8_E5M2", 8, DType::f8e5m2}, {"F8_E4M3", 8, DType::f8e4m3}, {"F8_E8M0", 8, std::nullopt},
    {"F4", 4, std::nullopt},       {"F6_E2M3", 6, std::nullopt},  {"F6_E3M2", 6, std::nullopt},
    {"I16", 16, std::nullopt},     {"U16", 16, std::nullopt},     {"F16", 16, DType::f16},
    {"BF16", 16, DType::bf16},     {"I32", 32, DType::i32},       {"U32", 32, DType::u32},
    {"F32", 32, DType::f32},       {"F64", 64, std::nullopt},     {"I64", 64, DType::i64},
    {"U64", 64, std::nullopt},     {"C64", 64, std::nullopt},
}};

using text::in_quotes;

[[noreturn]] void fail(const std::string& file, const std::string& what) {
  throw Error(kOp, file + ": " + what);
}

uint64_t read_le64(const std::byte* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | static_cast<uint8_t>(p[i]);
  return v;
}

// A non-negative JSON integer that fits int64; `what` names it in the error.
int64_t json_extent(const json& v, const std::string& file, const std::string& what) {
  if (v.is_number_unsigned()) {
    const auto u = v.get<uint64_t>();
    if (u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      fail(file, what + " " + std::to_string(u) + " is too large");
    }
    return static_cast<int64_t>(u);
  }
  if (v.is_number_integer()) {
    const auto i = v.get<int64_t>();
    if (i < 0) fail(file, what + " is negative (" + std::to_string(i) + ")");
    return i;
  }
  fail(file, what + " is not an integer (" + v.dump() + ")");
}

void write_all(int fd, const void* data, size_t bytes, const std::string& path) {
  const auto* p = static_cast<const char*>(data);
  while (bytes > 0) {
    const ssize_t n = ::write(fd, p, bytes);
    if (n < 0) {
      if (errno == EINTR) continue;
      fail(path, std::string("write failed: ") + std::strerror(errno));
    }
    p += n;
    bytes -= static_cast<size_t>(n);
  }
}

// Buffered sequential writer on a file descriptor (tensors arrive in pieces of any size).
class FileSink {
 public:
  explicit FileSink(std::string path) : path_(std::move(path)) {
    fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd_ < 0) fail(path_, std::string("cannot create: ") + std::strerror(errno));
    buffer_.reserve(kBufferBytes);
  }
  ~FileSink() {
    if (fd_ >= 0) ::close(fd_);
  }
  FileSink(const FileSink&) = delete;
  FileSink& operator=(const FileSink&) = delete;

  void write(const void* data, size_t bytes) {
    if (bytes >= kBufferBytes) {
      flush();
      write_all(fd_, data, bytes, path_);
      return;
    }
    if (buffer_.size() + bytes > kBufferBytes) flush();
    const auto* p = static_cast<const char*>(data);
    buffer_.insert(buffer_.end(), p, p + bytes);
  }
  void flush() {
    if (!buffer_.empty()) write_all(fd_, buffer_.data(), buffer_.size(), path_);
    buffer_.clear();
  }
  // Flushes, syncs and closes: the data is on disk before the rename makes it visible.
  void close() {
    flush();
    if (::fsync(fd_) != 0 && errno != EINVAL) {
      fail(path_, std::string("fsync failed: ") + std::strerror(errno));
    }
    const int fd = std::exchange(fd_, -1);
    if (::close(fd) != 0) fail(path_, std::string("close failed: ") + std::strerror(errno));
  }

 private:
  static constexpr size_t kBufferBytes = size_t{4} << 20;
  std::string path_;
  int fd_ = -1;
  std::vector<char> buffer_;
};

}  // namespace

int safetensors_dtype_bits(std::string_view dtype) {
  for (const DTypeEntry& e : kDTypes) {
    if (e.name == dtype) return e.bits;
  }
  return 0;
}

std::optional<DType> safetensors_to_dtype(std::string_view dtype) {
  for (const DTypeEntry& e : kDTypes) {
    if (e.name == dtype) return e.dtype;
  }
  return std::nullopt;
}

std::string_view dtype_to_safetensors(DType dtype) {
  for (const DTypeEntry& e : kDTypes) {
    if (e.dtype == dtype) return e.name;
  }
  throw Error(kOp, "no safetensors dtype for " + std::string(dtype_name(dtype)));
}

int64_t safetensors_nbytes(std::string_view dtype, const Shape& shape, std::string_view what) {
  const int bits = safetensors_dtype_bits(dtype);
  if (bits == 0) {
    std::string known;
    for (const DTypeEntry& e : kDTypes) {
      if (!known.empty()) known += ' ';
      known += e.name;
    }
    throw Error(
        kOp, std::string(what) + ": unknown dtype " + in_quotes(dtype) + " (known: " + known + ")");
  }
  // numel * bits must fit int64; checked one factor at a time.
  int64_t total_bits = bits;
  for (int64_t d : shape) {
    if (d < 0)
      throw Error(kOp, std::string(what) + ": negative extent in shape " + shape_str(shape));
    if (__builtin_mul_overflow(total_bits, d, &total_bits)) {
      throw Error(kOp, std::string(what) + ": shape " + shape_str(shape) + " of " +
                           std::string(dtype) + " overflows 64-bit byte counts");
    }
  }
  if (total_bits % 8 != 0) {
    throw Error(kOp, std::string(what) + ": shape " + shape_str(shape) + " of " +
                         std::string(dtype) + " is not a whole number of bytes");
  }
  return total_bits / 8;
}

// ---- reading -----------------------------------------------------------------------------------

SafetensorsFile::SafetensorsFile(SafetensorsFile&&) noexcept = default;
SafetensorsFile& SafetensorsFile::operator=(SafetensorsFile&&) noexcept = default;
SafetensorsFile::~SafetensorsFile() = default;

const std::string& SafetensorsFile::path() const { return file_->path(); }
int64_t SafetensorsFile::file_size() const { return file_->size(); }

SafetensorsFile SafetensorsFile::open(const std::string& path) {
  SafetensorsFile f;
  f.file_ = std::make_unique<MappedFile>(path, kOp);
  const int64_t size = f.file_->size();
  if (size < 8) {
    fail(path,
         "file is " + std::to_string(size) + " bytes, too short for the 8-byte header length");
  }
  const uint64_t header_len = read_le64(f.file_->bytes().data());
  if (header_len > static_cast<uint64_t>(kMaxHeaderBytes)) {
    fail(path, "header length " + std::to_string(header_len) + " exceeds the limit of " +
                   std::to_string(kMaxHeaderBytes) + " bytes");
  }
  const auto n = static_cast<int64_t>(header_len);
  if (n > size - 8) {
    fail(path, "header length " + std::to_string(n) + " runs past the end of the file (" +
                   std::to_string(size) + " bytes)");
  }
  const std::span<const std::byte> header = f.file_->bytes().subspan(8, static_cast<size_t>(n));
  const std::string_view text(reinterpret_cast<const char*>(header.data()), header.size());
  const json root = json_util::parse_strict<json>(text, path, kOp, "header");
  if (!root.is_object()) fail(path, "header is not a JSON object");

  const int64_t data_start = 8 + n;
  const int64_t data_size = size - data_start;
  for (const auto& [name, entry] : root.items()) {
    if (name == "__metadata__") {
      if (entry.is_null()) continue;
      if (!entry.is_object()) fail(path, "__metadata__ is not an object");
      for (const auto& [key, value] : entry.items()) {
        if (!value.is_string())
          fail(path, "__metadata__ value of " + in_quotes(key) + " is not a string");
        f.metadata_[key] = value.get<std::string>();
      }
      continue;
    }
    const std::string what = "tensor " + in_quotes(name);
    if (!entry.is_object()) fail(path, what + ": entry is not an object");
    for (const char* key : {"dtype", "shape", "data_offsets"}) {
      if (!entry.contains(key)) fail(path, what + ": missing key '" + key + "'");
    }
    TensorInfo info;
    info.name = name;
    info.file = path;
    const json& dtype = entry["dtype"];
    if (!dtype.is_string()) fail(path, what + ": dtype is not a string");
    info.dtype_name = dtype.get<std::string>();
    info.dtype = safetensors_to_dtype(info.dtype_name);
    const json& shape = entry["shape"];
    if (!shape.is_array()) fail(path, what + ": shape is not an array");
    for (size_t i = 0; i < shape.size(); ++i) {
      info.shape.push_back(json_extent(shape[i], path, what + " extent " + std::to_string(i)));
    }
    const json& offsets = entry["data_offsets"];
    if (!offsets.is_array() || offsets.size() != 2) {
      fail(path, what + ": data_offsets is not an array of two integers");
    }
    const int64_t begin = json_extent(offsets[0], path, what + " data_offsets begin");
    const int64_t end = json_extent(offsets[1], path, what + " data_offsets end");
    if (end < begin) {
      fail(path, what + ": data_offsets [" + std::to_string(begin) + ", " + std::to_string(end) +
                     ") end before they begin");
    }
    const int64_t expected = safetensors_nbytes(info.dtype_name, info.shape, path + ": " + what);
    if (end - begin != expected) {
      fail(path, what + ": " + info.dtype_name + shape_str(info.shape) + " needs " +
                     std::to_string(expected) + " bytes but data_offsets [" +
                     std::to_string(begin) + ", " + std::to_string(end) + ") hold " +
                     std::to_string(end - begin));
    }
    if (end > data_size) {
      fail(path, what + ": data_offsets [" + std::to_string(begin) + ", " + std::to_string(end) +
                     ") reach past the data block of " + std::to_string(data_size) + " bytes");
    }
    info.offset = data_start + begin;
    info.nbytes = end - begin;
    f.index_.emplace(info.name, f.tensors_.size());
    f.tensors_.push_back(std::move(info));
  }

  // Overlap: sorted by start, each tensor must begin at or after the previous one's end. Empty
  // tensors occupy no bytes and cannot overlap anything.
  std::vector<const TensorInfo*> by_offset;
  for (const TensorInfo& t : f.tensors_) {
    if (t.nbytes > 0) by_offset.push_back(&t);
  }
  std::sort(by_offset.begin(), by_offset.end(),
            [](const TensorInfo* a, const TensorInfo* b) { return a->offset < b->offset; });
  for (size_t i = 1; i < by_offset.size(); ++i) {
    const TensorInfo& a = *by_offset[i - 1];
    const TensorInfo& b = *by_offset[i];
    if (b.offset < a.offset + a.nbytes) {
      fail(path, "tensors " + in_quotes(a.name) + " and " + in_quotes(b.name) +
                     " overlap (bytes [" + std::to_string(a.offset - data_start) + ", " +
                     std::to_string(a.offset - data_start + a.nbytes) + ") and [" +
                     std::to_string(b.offset - data_start) + ", " +
                     std::to_string(b.offset - data_start + b.nbytes) + ") of the data block)");
    }
  }
  return f;
}

const TensorInfo* SafetensorsFile::find(std::string_view name) const {
  const auto it = index_.find(std::string(name));
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

const TensorInfo& SafetensorsFile::at(std::string_view name) const {
  const TensorInfo* info = find(name);
  if (info == nullptr) fail(path(), "no tensor " + in_quotes(name));
  return *info;
}

std::span<const std::byte> SafetensorsFile::bytes(const TensorInfo& info) const {
  const TensorInfo* own = find(info.name);
  if (own == nullptr || info.file != path() || own->offset != info.offset ||
      own->nbytes != info.nbytes) {
    fail(path(), "tensor " + in_quotes(info.name) + " of " + info.file + " is not in this file");
  }
  return file_->range(info.offset, info.nbytes, kOp, "tensor " + in_quotes(info.name));
}

Buffer SafetensorsFile::load(const TensorInfo& info, const Stream& stream,
                             const ProgressFn& progress) const {
  const std::span<const std::byte> src = bytes(info);
  if (!info.dtype) {
    fail(path(), "tensor " + in_quotes(info.name) + " has dtype " + info.dtype_name +
                     ", which cannot be loaded (supported: F32 F16 BF16 F8_E4M3 F8_E5M2 I8 U8 "
                     "I32 U32 I64)");
  }
  if (info.shape.size() > static_cast<size_t>(kMaxRank)) {
    fail(path(), "tensor " + in_quotes(info.name) + " has rank " +
                     std::to_string(info.shape.size()) + ", above the supported " +
                     std::to_string(kMaxRank));
  }
  Buffer out = Buffer::empty_exact(info.shape, *info.dtype, stream);
  const int64_t total = info.nbytes;
  if (progress) progress(0, total);
  if (total == 0) return out;
  const int64_t esize = dtype_size(*info.dtype);
  const Buffer flat = out.reshape({-1});
  const int64_t chunk_elements = std::max<int64_t>(1, kLoadChunkBytes / esize);
  const int64_t numel = flat.numel();
  for (int64_t start = 0; start < numel; start += chunk_elements) {
    const int64_t stop = std::min(numel, start + chunk_elements);
    flat.slice(0, start, stop)
        .copy_from_host(src.data() + start * esize, (stop - start) * esize, stream);
    if (progress) progress(stop * esize, total);
  }
  return out;
}

// ---- sharded models ---------------------------------------------------------------------------

SafetensorsModel SafetensorsModel::open_dir(const std::string& dir) {
  namespace fs = std::filesystem;
  SafetensorsModel m;
  m.dir_ = dir;
  const fs::path root(dir);
  const fs::path index_path = root / "model.safetensors.index.json";
  const fs::path single_path = root / "model.safetensors";
  std::error_code ec;

  // weight_map entries, in the index's order: (tensor, file name)
  std::vector<std::pair<std::string, std::string>> weight_map;
  std::vector<std::string> file_names;
  if (fs::exists(index_path, ec)) {
    const std::string index_file = index_path.string();
    const json index = json_util::read_file_strict<json>(index_file, kOp, "index");
    if (!index.is_object() || !index.contains("weight_map")) {
      fail(index_file, "not an object with a 'weight_map'");
    }
    const json& map = index["weight_map"];
    if (!map.is_object()) fail(index_file, "weight_map is not an object");
    std::set<std::string> seen;
    for (const auto& [tensor, file] : map.items()) {
      if (!file.is_string())
        fail(index_file, "weight_map entry " + in_quotes(tensor) + " is not a string");
      const auto name = file.get<std::string>();
      // Shards live beside the index; anything else (a path, "..") is refused.
      if (name.empty() || name == "." || name == ".." || name.find('/') != std::string::npos ||
          name.find('\\') != std::string::npos) {
        fail(index_file, "weight_map maps " + in_quotes(tensor) + " to " + in_quotes(name) +
                             ", which is not a file name in this directory");
      }
      weight_map.emplace_back(tensor, name);
      if (seen.insert(name).second) file_names.push_back(name);
    }
    if (file_names.empty()) fail(index_file, "weight_map is empty");
    std::sort(file_names.begin(), file_names.end());
  } else if (fs::exists(single_path, ec)) {
    file_names.push_back("model.safetensors");
  } else {
    throw Error(kOp, dir + ": no model.safetensors or model.safetensors.index.json");
  }

  for (const std::string& name : file_names) {
    m.files_.push_back(SafetensorsFile::open((root / name).string()));
  }
  for (size_t fi = 0; fi < m.files_.size(); ++fi) {
    const auto& tensors = m.files_[fi].tensors();
    for (size_t ti = 0; ti < tensors.size(); ++ti) {
      const auto [it, inserted] = m.where_.emplace(tensors[ti].name, std::make_pair(fi, ti));
      if (!inserted) {
        throw Error(kOp, dir + ": tensor " + in_quotes(tensors[ti].name) + " is in both " +
                             m.files_[it->second.first].path() + " and " + m.files_[fi].path());
      }
    }
  }
  for (const auto& [tensor, file] : weight_map) {
    const auto it = m.where_.find(tensor);
    const std::string mapped = (root / file).string();
    if (it == m.where_.end() || m.files_[it->second.first].path() != mapped) {
      throw Error(kOp, dir + ": the index maps tensor " + in_quotes(tensor) + " to " + mapped +
                           ", which does not hold it");
    }
  }
  m.names_.reserve(m.where_.size());
  for (const auto& [name, where] : m.where_) m.names_.push_back(name);
  std::sort(m.names_.begin(), m.names_.end());
  return m;
}

const TensorInfo* SafetensorsModel::find(std::string_view name) const {
  const auto it = where_.find(std::string(name));
  if (it == where_.end()) return nullptr;
  return &files_[it->second.first].tensors()[it->second.second];
}

const TensorInfo& SafetensorsModel::at(std::string_view name) const {
  const TensorInfo* info = find(name);
  if (info == nullptr) throw Error(kOp, dir_ + ": no tensor " + in_quotes(name));
  return *info;
}

const SafetensorsFile& SafetensorsModel::file_of(const TensorInfo& info) const {
  for (const SafetensorsFile& f : files_) {
    if (f.path() == info.file) return f;
  }
  throw Error(kOp, dir_ + ": tensor " + in_quotes(info.name) + " of " + info.file +
                       " is not part of this model");
}

Buffer SafetensorsModel::load(std::string_view name, const Stream& stream,
                              const ProgressFn& progress) const {
  const TensorInfo& info = at(name);
  return file_of(info).load(info, stream, progress);
}

int64_t SafetensorsModel::total_bytes() const {
  int64_t total = 0;
  for (const SafetensorsFile& f : files_) {
    for (const TensorInfo& t : f.tensors()) total += t.nbytes;
  }
  return total;
}

// ---- writing ----------------------------------------------------------------------------------

TensorToWrite TensorToWrite::from_bytes(std::string name, std::string dtype, Shape shape,
                                        std::span<const std::byte> bytes) {
  return {std::move(name), std::move(dtype), std::move(shape),
          [bytes](const ByteSink& sink) { sink(bytes); }};
}

TensorToWrite TensorToWrite::from_buffer(std::string name, const Buffer& buffer) {
  check(buffer.defined() && buffer.device().is_cpu(), kOp,
        "tensor " + in_quotes(name) + ": write needs a CPU buffer");
  buffer.require_contiguous(kOp, name.c_str());
  std::string dtype(dtype_to_safetensors(buffer.dtype()));
  return {
      std::move(name), std::move(dtype), buffer.shape(), [buffer](const ByteSink& sink) {
        sink({static_cast<const std::byte*>(buffer.data()), static_cast<size_t>(buffer.nbytes())});
      }};
}

void write_safetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                       const std::map<std::string, std::string>& metadata,
                       const std::function<void(int64_t bytes)>& on_bytes) {
  // The header first: every size is known from dtype and shape. It is assembled entry by entry
  // (a JSON object of many thousand keys would be rebuilt on every insertion).
  std::string text = "{";
  auto add_entry = [&](const std::string& key, const std::string& value_json) {
    if (text.size() > 1) text += ',';
    text += json(key).dump();
    text += ':';
    text += value_json;
  };
  if (!metadata.empty()) add_entry("__metadata__", json(metadata).dump());
  std::unordered_set<std::string> names;
  std::vector<int64_t> sizes;
  sizes.reserve(tensors.size());
  int64_t offset = 0;
  for (const TensorToWrite& t : tensors) {
    if (t.name.empty() || t.name == "__metadata__") {
      fail(path, "cannot write a tensor named " + in_quotes(t.name));
    }
    if (!names.insert(t.name).second) fail(path, "tensor " + in_quotes(t.name) + " given twice");
    if (!t.produce) fail(path, "tensor " + in_quotes(t.name) + " has no data source");
    const int64_t n = safetensors_nbytes(t.dtype, t.shape, path + ": tensor " + in_quotes(t.name));
    ordered_json entry = ordered_json::object();
    entry["dtype"] = t.dtype;
    entry["shape"] = t.shape;
    entry["data_offsets"] = {offset, offset + n};
    add_entry(t.name, entry.dump());
    sizes.push_back(n);
    offset += n;
  }
  text += '}';
  // Pad with spaces so the data block starts 8-byte aligned, as the reference writer does.
  text.append((8 - text.size() % 8) % 8, ' ');

  const std::string partial = path + ".partial";
  try {
    FileSink out(partial);
    std::array<std::byte, 8> len{};
    uint64_t n = text.size();
    for (auto& b : len) {
      b = static_cast<std::byte>(n & 0xffu);
      n >>= 8;
    }
    out.write(len.data(), len.size());
    out.write(text.data(), text.size());
    for (size_t i = 0; i < tensors.size(); ++i) {
      const TensorToWrite& t = tensors[i];
      int64_t written = 0;
      const int64_t expected = sizes[i];
      t.produce([&](std::span<const std::byte> piece) {
        const auto bytes = static_cast<int64_t>(piece.size());
        if (bytes > expected - written) {
          fail(path, "tensor " + in_quotes(t.name) + " produced more than its " +
                         std::to_string(expected) + " bytes");
        }
        out.write(piece.data(), piece.size());
        written += bytes;
        if (on_bytes) on_bytes(bytes);
      });
      if (written != expected) {
        fail(path, "tensor " + in_quotes(t.name) + " produced " + std::to_string(written) +
                       " bytes, expected " + std::to_string(expected));
      }
    }
    out.close();
    std::error_code ec;
    std::filesystem::rename(partial, path, ec);
    if (ec) fail(path, "cannot rename " + partial + " into place: " + ec.message());
  } catch (...) {
    std::error_code ec;
    std::filesystem::remove(partial, ec);
    throw;
  }
}

}  // namespace mlxn::io
