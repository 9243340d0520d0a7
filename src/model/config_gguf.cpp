// ModelConfig from a GGUF file's metadata.
//
// Keys as llama.cpp writes them (convert_hf_to_gguf.py) and reads them (llama-model.cpp), with
// its defaults. What the metadata does not carry comes from the way llama.cpp runs each
// architecture: the RoPE pairing, Gemma 3's window pattern and local theta, and whether norm
// weights already include Gemma's + 1.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "mlxn/core/error.h"
#include "mlxn/io/gguf.h"
#include "mlxn/model/config.h"
#include "model/config_check.h"

namespace mlxn::model {

namespace {

using detail::cat;

// general.architecture values. Q and K of "llama" are stored permuted for GGML's interleaved
// (GPT-J) RoPE; the others rotate halves as transformers does (llama.cpp's NEOX rope type).
struct GgufArch {
  const char* name;
  Architecture arch;
  RopePairing pairing;
};
constexpr GgufArch kGgufArchs[] = {
    {"llama", Architecture::llama, RopePairing::interleaved},
    {"qwen2", Architecture::qwen2, RopePairing::half},
    {"qwen3", Architecture::qwen3, RopePairing::half},
    {"gemma3", Architecture::gemma3, RopePairing::half},
};

// llama.cpp's Gemma 3 constants: the window pattern when the file has none (every 6th layer
// global), the sliding layers' theta when rope.freq_base_swa is absent, and the 27B model's
// attention scale (hidden_size / num_heads instead of head_dim; the GGUF keeps no
// query_pre_attn_scalar), recognised by its 62 layers.
constexpr int64_t kGemma3SwaPattern = 6;
constexpr double kGemma3SwaTheta = 10000.0;
constexpr int64_t kGemma3_27bLayers = 62;
// llama.cpp's rope_freq_base default.
constexpr double kDefaultRopeTheta = 10000.0;

[[noreturn]] void fail(const io::GgufFile& file, const std::string& what) {
  throw Error(detail::kOp, cat(file.path(), ": ", what));
}

class Metadata {
 public:
  Metadata(const io::GgufFile& file, std::string arch) : file_(file), arch_(std::move(arch)) {}

  std::string key(std::string_view suffix) const { return cat(arch_, ".", suffix); }
  [[noreturn]] void fail(const std::string& what) const { model::fail(file_, what); }
  bool has(std::string_view suffix) const { return file_.contains(key(suffix)); }

  int64_t required_integer(std::string_view suffix) const {
    if (!has(suffix)) fail(cat("GGUF key '", key(suffix), "' is missing"));
    return file_.get_i64(key(suffix));
  }
  int64_t integer(std::string_view suffix, int64_t fallback) const {
    return has(suffix) ? file_.get_i64(key(suffix)) : fallback;
  }
  double number(std::string_view suffix, double fallback) const {
    return has(suffix) ? file_.get_f64(key(suffix)) : fallback;
  }
  double required_number(std::string_view suffix) const {
    if (!has(suffix)) fail(cat("GGUF key '", key(suffix), "' is missing"));
    return file_.get_f64(key(suffix));
  }

 private:
  const io::GgufFile& file_;
  std::string arch_;
};

// llama.cpp's sliding-window layers: a period p (layer i slides unless (i + 1) % p == 0; p = 0
// slides every layer) or one flag per layer.
std::vector<bool> gemma3_sliding_layers(const io::GgufFile& file, const Metadata& meta,
                                        int64_t num_layers) {
  const std::string key = meta.key("attention.sliding_window_pattern");
  std::vector<bool> sliding;
  const io::GgufValue* v = file.find(key);
  if (v != nullptr && io::gguf_value_type(*v) == io::GgufValueType::array) {
    const io::GgufArray& array = file.get_array(key);
    if (static_cast<int64_t>(array.size()) != num_layers) {
      meta.fail(cat("GGUF key '", key, "' has ", array.size(), " entries for ",
                    meta.key("block_count"), " ", num_layers));
    }
    if (const auto* flags = std::get_if<std::vector<bool>>(&array.values)) return *flags;
    for (const int64_t flag : file.get_int_array(key)) sliding.push_back(flag != 0);
    return sliding;
  }
  const int64_t period = v != nullptr ? file.get_i64(key) : kGemma3SwaPattern;
  if (period < 0) meta.fail(cat("GGUF key '", key, "' must be >= 0, got ", period));
  for (int64_t i = 0; i < num_layers; ++i) {
    sliding.push_back(period == 0 || (i + 1) % period != 0);
  }
  return sliding;
}

// rope_freqs.weight: f32 [rotary_dim / 2] divisors of the frequencies (Llama 3.x scaling,
// computed by the converter from rope_scaling).
std::vector<float> read_freq_factors(const io::GgufFile& file, const io::GgufTensorInfo& info,
                                     int64_t count, const Metadata& meta) {
  if (info.type != GgmlType::f32 || info.numel() != count) {
    meta.fail(cat("tensor '", info.name, "' must be f32 with ", count, " elements, got ",
                  ggml_type_name(info.type), " with ", info.numel()));
  }
  const std::span<const std::byte> bytes = file.tensor_bytes(info);
  std::vector<float> factors(static_cast<size_t>(count));
  std::memcpy(factors.data(), bytes.data(), factors.size() * sizeof(float));
  for (const float f : factors) {
    if (!(std::isfinite(f) && f > 0)) {
      meta.fail(
          cat("tensor '", info.name, "' holds a factor that is not finite and > 0 (", f, ")"));
    }
  }
  return factors;
}

}  // namespace

ModelConfig from_gguf(const io::GgufFile& file) {
  if (!file.contains("general.architecture")) {
    fail(file, "GGUF key 'general.architecture' is missing");
  }
  const std::string& name = file.get_string("general.architecture");
  const GgufArch* found = nullptr;
  for (const GgufArch& entry : kGgufArchs) {
    if (name == entry.name) found = &entry;
  }
  if (found == nullptr) {
    std::string names;
    for (const GgufArch& entry : kGgufArchs) {
      names.append(names.empty() ? cat(entry.name) : cat(", ", entry.name));
    }
    fail(file, cat("general.architecture '", name, "' is not supported (supported: ", names, ")"));
  }
  const Metadata meta(file, name);
  const Architecture arch = found->arch;
  const bool gemma = arch == Architecture::gemma3;

  ModelConfig c;
  c.arch = arch;
  c.source = file.path();

  c.hidden_size = meta.required_integer("embedding_length");
  c.intermediate_size = meta.required_integer("feed_forward_length");
  c.num_layers = meta.required_integer("block_count");
  if (c.num_layers > 1'000'000)
    meta.fail(cat("GGUF key '", meta.key("block_count"), "' out of range"));
  c.max_position_embeddings = meta.required_integer("context_length");
  c.num_heads = meta.required_integer("attention.head_count");
  c.num_kv_heads = meta.integer("attention.head_count_kv", c.num_heads);
  c.rms_norm_eps = static_cast<float>(meta.required_number("attention.layer_norm_rms_epsilon"));
  // llama.cpp: <arch>.vocab_size, else the tokenizer's token count.
  if (meta.has("vocab_size")) {
    c.vocab_size = meta.required_integer("vocab_size");
  } else if (file.contains("tokenizer.ggml.tokens")) {
    c.vocab_size = static_cast<int64_t>(file.get_array("tokenizer.ggml.tokens").size());
  } else {
    meta.fail(cat("neither GGUF key '", meta.key("vocab_size"),
                  "' nor 'tokenizer.ggml.tokens' gives the vocabulary size"));
  }
  const bool head_dim_given = meta.has("attention.key_length");
  c.head_dim = head_dim_given    ? meta.required_integer("attention.key_length")
               : c.num_heads > 0 ? c.hidden_size / c.num_heads
                                 : 0;
  if (meta.has("attention.value_length") &&
      meta.required_integer("attention.value_length") != c.head_dim) {
    meta.fail(cat("GGUF key '", meta.key("attention.value_length"), "' ",
                  meta.required_integer("attention.value_length"), " differs from the key length ",
                  c.head_dim, " (unsupported)"));
  }

  // Global rotary settings. A scaling type of "linear" with factor 0 or 1 means none.
  RopeConfig rope;
  rope.head_dim = c.head_dim;
  rope.pairing = found->pairing;
  rope.theta = meta.number("rope.freq_base", kDefaultRopeTheta);
  if (!(std::isfinite(rope.theta) && rope.theta > 0)) {
    meta.fail(cat("GGUF key '", meta.key("rope.freq_base"), "' must be finite and > 0, got ",
                  rope.theta));
  }
  if (meta.has("rope.dimension_count")) {
    const int64_t dims = meta.required_integer("rope.dimension_count");
    if (dims <= 0 || dims % 2 != 0 || dims > c.head_dim) {
      meta.fail(cat("GGUF key '", meta.key("rope.dimension_count"), "' ", dims,
                    " must be even and in (0, head_dim ", c.head_dim, "]"));
    }
    if (dims != c.head_dim) rope.rotary_dim = dims;
  }
  const std::string scaling =
      meta.has("rope.scaling.type") ? file.get_string(meta.key("rope.scaling.type")) : "linear";
  const double factor = meta.has("rope.scaling.factor")
                            ? meta.required_number("rope.scaling.factor")
                            : meta.number("rope.scale_linear", 0.0);
  if (scaling != "none" && scaling != "linear") {
    meta.fail(cat("GGUF key '", meta.key("rope.scaling.type"), "' '", scaling,
                  "' is not supported (supported: none, linear)"));
  }
  if (!(std::isfinite(factor) && factor >= 0)) {
    meta.fail(cat("GGUF key '", meta.key("rope.scaling.factor"), "' must be finite and >= 0, got ",
                  factor));
  }
  if (scaling == "linear" && factor != 0 && factor != 1) {
    rope.scaling = RopeScaling::linear;
    rope.factor = factor;
  }
  // llama.cpp's llama graph divides by rope_freqs; its qwen2, qwen3 and gemma3 graphs do not.
  if (arch == Architecture::llama) {
    if (const io::GgufTensorInfo* info = file.find_tensor("rope_freqs.weight")) {
      const int64_t rotary = rope.rotary_dim != 0 ? rope.rotary_dim : c.head_dim;
      rope.freq_factors = read_freq_factors(file, *info, rotary / 2, meta);
    }
  }

  c.layers.assign(c.num_layers > 0 ? static_cast<size_t>(c.num_layers) : 0, LayerConfig{0, rope});
  c.attention_scale =
      c.head_dim > 0 ? static_cast<float>(1.0 / std::sqrt(static_cast<double>(c.head_dim))) : 0.0f;

  // The tensors say what the metadata does not.
  c.tie_word_embeddings = file.find_tensor("output.weight") == nullptr;
  c.qkv_bias = file.find_tensor("blk.0.attn_q.bias") != nullptr;
  c.o_bias = file.find_tensor("blk.0.attn_output.bias") != nullptr;
  c.mlp_bias = file.find_tensor("blk.0.ffn_up.bias") != nullptr;
  c.qk_norm = arch == Architecture::qwen3 || gemma;

  if (gemma) {
    // The converter stores Gemma's norm weights as 1 + w: the norms multiply.
    c.norm_weight = RmsWeight::multiply;
    c.four_norms = true;
    c.activation = Activation::gelu_tanh;
    c.embedding_scale = static_cast<float>(std::sqrt(static_cast<double>(c.hidden_size)));
    if (c.num_layers == kGemma3_27bLayers && c.num_heads > 0) {
      c.attention_scale =
          static_cast<float>(1.0 / std::sqrt(static_cast<double>(c.hidden_size / c.num_heads)));
    }
    // llama.cpp soft-caps attention logits for Gemma 2 only (transformers' Gemma 3 too), so a
    // Gemma 3 GGUF's attn_logit_softcapping is not applied.
    c.final_logit_softcap = static_cast<float>(meta.number("final_logit_softcapping", 0.0));
    // No window key (or 0): every layer global, as llama.cpp runs it.
    const int64_t window = meta.integer("attention.sliding_window", 0);
    if (window < 0 || window > std::numeric_limits<int>::max()) {
      meta.fail(
          cat("GGUF key '", meta.key("attention.sliding_window"), "' out of range: ", window));
    }
    if (window > 0 && !c.layers.empty()) {
      RopeConfig local = rope;
      local.theta = meta.number("rope.freq_base_swa", kGemma3SwaTheta);
      local.scaling = RopeScaling::none;
      local.factor = 1.0;
      if (!(std::isfinite(local.theta) && local.theta > 0)) {
        meta.fail(cat("GGUF key '", meta.key("rope.freq_base_swa"),
                      "' must be finite and > 0, got ", local.theta));
      }
      const std::vector<bool> sliding = gemma3_sliding_layers(file, meta, c.num_layers);
      for (size_t i = 0; i < c.layers.size(); ++i) {
        if (sliding[i]) c.layers[i] = {static_cast<int>(window), local};
      }
    }
  }

  if (file.contains("tokenizer.ggml.bos_token_id")) {
    c.bos_token_id = file.get_i64("tokenizer.ggml.bos_token_id");
  }
  // llama.cpp ends generation at eos and also at eot / eom when the vocabulary has them.
  for (const char* key : {"tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id",
                          "tokenizer.ggml.eom_token_id"}) {
    if (!file.contains(key)) continue;
    const int64_t id = file.get_i64(key);
    if (std::find(c.eos_token_ids.begin(), c.eos_token_ids.end(), id) == c.eos_token_ids.end()) {
      c.eos_token_ids.push_back(id);
    }
  }

  detail::FieldKeys keys{
      meta.key("vocab_size"),           meta.key("embedding_length"),
      meta.key("feed_forward_length"),  meta.key("block_count"),
      meta.key("attention.head_count"), meta.key("attention.head_count_kv"),
      meta.key("attention.key_length"), meta.key("attention.layer_norm_rms_epsilon"),
      meta.key("context_length"),       meta.key("attention.sliding_window")};
  detail::validate(c, keys, head_dim_given);
  return c;
}

}  // namespace mlxn::model
