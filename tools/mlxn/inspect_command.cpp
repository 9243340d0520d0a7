#include "inspect_command.h"

#include <cstdio>
#include <filesystem>
#include <map>
#include <sstream>

#include "mlxn/io/ggml_type.h"
#include "mlxn/io/gguf.h"
#include "mlxn/io/hf_config.h"
#include "mlxn/io/safetensors.h"
#include "mlxn/model/config.h"

namespace mlxn::cli {

namespace {

struct Tally {
  int64_t tensors = 0;
  int64_t bytes = 0;
};

std::string gigabytes(int64_t bytes) {
  char text[32];
  std::snprintf(text, sizeof(text), "%.3f GB", static_cast<double>(bytes) / 1e9);
  return text;
}

// "  BF16: 291 tensors, 16.061 GB" per key, largest first by bytes.
void print_tallies(std::ostringstream& out, const std::map<std::string, Tally>& by) {
  std::multimap<int64_t, std::string, std::greater<>> order;
  for (const auto& [key, t] : by) order.emplace(t.bytes, key);
  for (const auto& [bytes, key] : order) {
    out << "  " << key << ": " << by.at(key).tensors << " tensors, " << gigabytes(bytes) << "\n";
  }
}

std::string inspect_gguf(const std::string& path) {
  const io::GgufFile file = io::GgufFile::open(path);
  std::ostringstream out;
  out << "checkpoint: " << path << " (GGUF v" << file.version() << ", "
      << gigabytes(file.file_size()) << ")\n";
  out << model::from_gguf(file).describe();
  std::map<std::string, Tally> by_type;
  int64_t bytes = 0;
  for (const io::GgufTensorInfo& t : file.tensors()) {
    Tally& tally = by_type[ggml_type_name(t.type)];
    ++tally.tensors;
    tally.bytes += t.nbytes;
    bytes += t.nbytes;
  }
  out << "tensors: " << file.tensors().size() << ", " << gigabytes(bytes) << "\n";
  print_tallies(out, by_type);
  return out.str();
}

std::string inspect_hf(const std::string& dir) {
  const io::HfConfig hf = io::HfConfig::load((std::filesystem::path(dir) / "config.json").string());
  std::ostringstream out;
  out << "checkpoint: " << dir << " (Hugging Face / MLX)\n";
  out << model::from_hf_config(hf).describe();
  if (const auto q = hf.quantization()) {
    out << "quantization: MLX " << q->global().mode << ", " << q->global().bits << "-bit, group "
        << q->global().group_size << ", " << q->overrides().size() << " module overrides\n";
  } else {
    out << "quantization: none\n";
  }
  const io::SafetensorsModel model = io::SafetensorsModel::open_dir(dir);
  std::map<std::string, Tally> by_dtype;
  for (const std::string& name : model.names()) {
    const io::TensorInfo& t = model.at(name);
    Tally& tally = by_dtype[t.dtype_name];
    ++tally.tensors;
    tally.bytes += t.nbytes;
  }
  out << "tensors: " << model.names().size() << " in " << model.files().size() << " file"
      << (model.files().size() == 1 ? "" : "s") << ", " << gigabytes(model.total_bytes()) << "\n";
  print_tallies(out, by_dtype);
  return out.str();
}

}  // namespace

std::string inspect_report(const std::string& path) {
  if (std::filesystem::is_directory(path)) return inspect_hf(path);
  return inspect_gguf(path);
}

int run_inspect(const std::string& path) {
  std::fputs(inspect_report(path).c_str(), stdout);
  return 0;
}

}  // namespace mlxn::cli
