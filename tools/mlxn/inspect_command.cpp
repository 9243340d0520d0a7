#include "inspect_command.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <map>
#include <sstream>
#include <utility>
#include <vector>

#include "mlxn/io/ggml_type.h"
#include "mlxn/io/gguf.h"
#include "mlxn/io/hf_config.h"
#include "mlxn/io/safetensors.h"
#include "mlxn/model/config.h"
#include "mlxn/model/runner.h"
#include "model_options.h"

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

// The cache types `inspect` sizes, widest first.
constexpr KvType kReportedKvTypes[] = {KvType::bf16, KvType::fp8, KvType::tq8, KvType::tq6,
                                       KvType::tq5,  KvType::tq4, KvType::tq3, KvType::tq2};

}  // namespace

std::string kv_cache_report(const model::ModelConfig& config) {
  std::ostringstream out;
  std::vector<std::pair<KvType, KvFootprint>> rows;
  try {
    for (KvType type : kReportedKvTypes) {
      model::RunnerOptions options;
      options.kv.k = options.kv.v = options.kv.boundary_type = type;
      options.max_context = 1;
      rows.emplace_back(type, kv_footprint(model::kv_cache_config(config, options, Device::cpu())));
    }
  } catch (const Error& e) {
    out << "KV cache: not available for this model: " << e.what() << "\n";
    return out.str();
  }
  const KvFootprint& first = rows.front().second;
  int window = 0;
  for (const model::LayerConfig& l : config.layers) window = std::max(window, l.window);
  const auto layers = [](int n) { return std::to_string(n) + (n == 1 ? " layer" : " layers"); };
  out << "KV cache bytes per token (K and V, pages of " << first.page_size << " tokens";
  if (first.full_layers > 0) out << ", " << layers(first.full_layers) << " of full attention";
  if (first.window_layers > 0) {
    out << "; " << layers(first.window_layers) << " of sliding window (up to " << window
        << " tokens): a fixed ring per sequence";
  }
  out << "):\n";
  for (const auto& [type, f] : rows) {
    char line[160];
    const std::string ring =
        f.window_layers > 0
            ? "   ring " + byte_size(static_cast<double>(f.fixed_bytes)) + " per sequence"
            : "";
    if (f.full_layers > 0) {
      std::snprintf(line, sizeof(line), "  %-5s %12.2f B/token (%s per 1K tokens)%s\n",
                    std::string(kv_type_name(type)).c_str(), f.bytes_per_token(),
                    byte_size(f.bytes_per_token() * 1024).c_str(), ring.c_str());
    } else {
      std::snprintf(line, sizeof(line), "  %-5s %12s%s\n", std::string(kv_type_name(type)).c_str(),
                    "0 B/token", ring.c_str());
    }
    out << line;
  }
  return out.str();
}

namespace {

std::string inspect_gguf(const std::string& path) {
  const io::GgufFile file = io::GgufFile::open(path);
  std::ostringstream out;
  out << "checkpoint: " << path << " (GGUF v" << file.version() << ", "
      << gigabytes(file.file_size()) << ")\n";
  const model::ModelConfig config = model::from_gguf(file);
  out << config.describe() << kv_cache_report(config);
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
  const model::ModelConfig config = model::from_hf_config(hf);
  out << config.describe() << kv_cache_report(config);
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
