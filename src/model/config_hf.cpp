// ModelConfig from a Hugging Face config.json.
//
// Keys and defaults follow transformers' configuration classes (LlamaConfig, MistralConfig,
// Qwen2Config, Qwen3Config, Gemma3TextConfig / Gemma3Config) and modeling_rope_utils; a default
// below names the class it comes from. Both spellings of the rotary settings are read: the
// "rope_theta" + "rope_scaling" of the configs on the Hub and the "rope_parameters" that
// transformers 5 writes (for Gemma 3, one entry per layer type).
#include <cmath>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "io/json_util.h"
#include "mlxn/core/error.h"
#include "mlxn/io/hf_config.h"
#include "mlxn/model/config.h"
#include "model/config_check.h"

namespace mlxn::model {

namespace {

using detail::cat;
using json = nlohmann::ordered_json;

// "architectures"[0] and "model_type" values. `composite`: the text model sits under
// "text_config" and its weights under "language_model." (Gemma3ForConditionalGeneration).
struct HfName {
  const char* name;
  Architecture arch;
  bool composite;
};

constexpr HfName kHfClasses[] = {
    {"LlamaForCausalLM", Architecture::llama, false},
    {"MistralForCausalLM", Architecture::mistral, false},
    {"Qwen2ForCausalLM", Architecture::qwen2, false},
    {"Qwen3ForCausalLM", Architecture::qwen3, false},
    {"Gemma3ForCausalLM", Architecture::gemma3, false},
    {"Gemma3ForConditionalGeneration", Architecture::gemma3, true},
};

constexpr HfName kHfModelTypes[] = {
    {"llama", Architecture::llama, false},        {"mistral", Architecture::mistral, false},
    {"qwen2", Architecture::qwen2, false},        {"qwen3", Architecture::qwen3, false},
    {"gemma3_text", Architecture::gemma3, false}, {"gemma3", Architecture::gemma3, true},
};

template <size_t N>
std::string supported_names(const HfName (&table)[N]) {
  std::string s;
  for (const HfName& entry : table) s.append(s.empty() ? cat(entry.name) : cat(", ", entry.name));
  return s;
}

// What transformers' configuration class assumes for a key the file does not have.
struct HfDefaults {
  int64_t vocab_size;
  int64_t num_heads;
  std::optional<int64_t> num_kv_heads;  // nullopt: num_attention_heads
  std::optional<int64_t> head_dim;      // nullopt: hidden_size / num_attention_heads
  double rms_norm_eps;
  int64_t max_position_embeddings;
  double rope_theta;
  bool tie_word_embeddings;
  std::optional<int64_t> bos_token_id;
  std::optional<int64_t> eos_token_id;
};

HfDefaults hf_defaults(Architecture arch) {
  switch (arch) {
    case Architecture::llama:  // LlamaConfig
      return {32000, 32, std::nullopt, std::nullopt, 1e-6, 2048, 10000.0, false, 1, 2};
    case Architecture::mistral:  // MistralConfig (max_position_embeddings 4096 * 32)
      return {32000, 32, 8, std::nullopt, 1e-6, 131072, 10000.0, false, 1, 2};
    case Architecture::qwen2:  // Qwen2Config: 32 kv heads, not num_attention_heads
      return {151936, 32,      32,    std::nullopt, 1e-6,
              32768,  10000.0, false, std::nullopt, std::nullopt};
    case Architecture::qwen3:  // Qwen3Config: head_dim 128 whatever hidden_size / heads is
      return {151936, 32, 32, 128, 1e-6, 32768, 10000.0, false, std::nullopt, std::nullopt};
    case Architecture::gemma3:  // Gemma3TextConfig (the gemma-3-4b sizes)
      return {262208, 8, 4, 256, 1e-6, 131072, 1'000'000.0, true, 2, 1};
  }
  return {};
}

// Gemma3TextConfig: the sliding layers' theta (rope_local_base_freq), the attention scale and
// the window pattern.
constexpr double kGemma3LocalTheta = 10000.0;
constexpr double kGemma3QueryPreAttnScalar = 256.0;
constexpr int64_t kGemma3SlidingWindowPattern = 6;
// MistralConfig, Qwen2Config, Qwen3Config and Gemma3TextConfig all default sliding_window to
// 4096; Qwen2Config and Qwen3Config default max_window_layers to 28.
constexpr int64_t kDefaultSlidingWindow = 4096;
constexpr int64_t kQwenMaxWindowLayers = 28;

// transformers' ACT2FN names of the activations the MLP supports.
struct HfActivation {
  const char* name;
  Activation act;
};
constexpr HfActivation kHfActivations[] = {
    {"silu", Activation::silu},
    {"swish", Activation::silu},
    {"gelu_pytorch_tanh", Activation::gelu_tanh},
    {"gelu_new", Activation::gelu_tanh},
    {"gelu", Activation::gelu_erf},
};

// One JSON object of the file (the root or "text_config") with typed, key-naming accessors. A
// key whose value is null counts as absent, as transformers passes None to the class, which
// then applies its default.
class Section {
 public:
  Section(const json& object, std::string path, std::string source, Architecture arch)
      : object_(object), path_(std::move(path)), source_(std::move(source)), arch_(arch) {}

  // The key as the message shows it: "text_config.hidden_size".
  std::string key(std::string_view name) const { return cat(path_, name); }
  const std::string& source() const { return source_; }

  [[noreturn]] void fail(const std::string& what) const {
    throw Error(detail::kOp, cat(source_, ": ", what));
  }

  bool has_key(std::string_view name) const { return object_.contains(name); }
  // nullptr when absent or null.
  const json* find(std::string_view name) const {
    const auto it = object_.find(name);
    return it == object_.end() || it->is_null() ? nullptr : &*it;
  }

  int64_t required_integer(std::string_view name) const {
    const json* v = find(name);
    if (v == nullptr) {
      fail(cat("'", key(name), "' is missing (required for ", architecture_name(arch_), ")"));
    }
    return as_integer(*v, key(name));
  }
  int64_t integer(std::string_view name, int64_t fallback) const {
    const json* v = find(name);
    return v == nullptr ? fallback : as_integer(*v, key(name));
  }
  std::optional<int64_t> optional_integer(std::string_view name) const {
    const json* v = find(name);
    return v == nullptr ? std::nullopt : std::optional(as_integer(*v, key(name)));
  }
  double number(std::string_view name, double fallback) const {
    const json* v = find(name);
    return v == nullptr ? fallback : as_number(*v, key(name));
  }
  bool boolean(std::string_view name, bool fallback) const {
    const json* v = find(name);
    if (v == nullptr) return fallback;
    if (!v->is_boolean()) fail(cat("'", key(name), "' is not true or false (", v->dump(), ")"));
    return v->get<bool>();
  }
  std::optional<std::string> string(std::string_view name) const {
    const json* v = find(name);
    if (v == nullptr) return std::nullopt;
    if (!v->is_string()) fail(cat("'", key(name), "' is not a string (", v->dump(), ")"));
    return v->get<std::string>();
  }
  // An object value, or nullptr when absent or null.
  const json* object(std::string_view name) const {
    const json* v = find(name);
    if (v != nullptr && !v->is_object()) {
      fail(cat("'", key(name), "' is not an object (", v->dump(), ")"));
    }
    return v;
  }

  int64_t as_integer(const json& v, const std::string& what) const {
    if (!v.is_number_integer()) fail(cat("'", what, "' is not an integer (", v.dump(), ")"));
    if (v.is_number_unsigned() &&
        v.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      fail(cat("'", what, "' is out of range (", v.dump(), ")"));
    }
    return v.get<int64_t>();
  }
  double as_number(const json& v, const std::string& what) const {
    if (!v.is_number()) fail(cat("'", what, "' is not a number (", v.dump(), ")"));
    return v.get<double>();
  }

 private:
  const json& object_;
  std::string path_;
  std::string source_;
  Architecture arch_;
};

// A sliding window as the attention op takes it; `key` names it in messages.
int window_value(const Section& s, int64_t value, const std::string& key) {
  if (value <= 0 || value > std::numeric_limits<int>::max()) {
    s.fail(cat("'", key, "' must be a positive window or null, got ", value));
  }
  return static_cast<int>(value);
}

double positive_theta(const Section& s, double theta, const std::string& key) {
  if (!(std::isfinite(theta) && theta > 0)) {
    s.fail(cat("'", key, "' must be finite and > 0, got ", theta));
  }
  return theta;
}

// Reads a rope_scaling / rope_parameters dict (`where` is its key path) into `rope`'s scaling.
// rope_type (or the older "type") "default", "linear" or "llama3"; the keys each one needs are
// those modeling_rope_utils requires, none has a default there.
void read_rope_scaling(const Section& s, const json& dict, const std::string& where,
                       RopeConfig& rope) {
  std::string type = "default";  // rope_config_validation: an entry without a type is "default"
  for (const char* type_key : {"rope_type", "type"}) {
    if (dict.contains(type_key) && !dict[type_key].is_null()) {
      if (!dict[type_key].is_string()) {
        s.fail(cat("'", where, ".", type_key, "' is not a string (", dict[type_key].dump(), ")"));
      }
      type = dict[type_key].get<std::string>();
      break;
    }
  }
  const auto required = [&](const char* name) {
    const std::string what = cat(where, ".", name);
    if (!dict.contains(name) || dict[name].is_null()) {
      s.fail(cat("'", what, "' is missing (required for rope_type '", type, "')"));
    }
    const double v = s.as_number(dict[name], what);
    if (!(std::isfinite(v) && v > 0)) s.fail(cat("'", what, "' must be finite and > 0, got ", v));
    return v;
  };
  if (type == "default") {
    rope.scaling = RopeScaling::none;
  } else if (type == "linear") {
    rope.scaling = RopeScaling::linear;
    rope.factor = required("factor");
  } else if (type == "llama3") {
    rope.scaling = RopeScaling::llama3;
    rope.factor = required("factor");
    rope.low_freq_factor = required("low_freq_factor");
    rope.high_freq_factor = required("high_freq_factor");
    const std::string orig = cat(where, ".original_max_position_embeddings");
    required("original_max_position_embeddings");
    rope.original_max_position = s.as_integer(dict["original_max_position_embeddings"], orig);
    // The llama3 formula divides by high_freq_factor - low_freq_factor.
    if (!(rope.low_freq_factor < rope.high_freq_factor)) {
      s.fail(cat("'", where, ".low_freq_factor' ", rope.low_freq_factor,
                 " must be below high_freq_factor ", rope.high_freq_factor));
    }
  } else {
    s.fail(cat("'", where, ".rope_type' '", type,
               "' is not supported (supported: default, linear, llama3)"));
  }
}

// One layer kind's rotary settings: theta from the dict's "rope_theta", else `theta_key` of the
// section, else `default_theta`; scaling from the dict.
RopeConfig read_rope(const Section& s, const json* dict, const std::string& where,
                     std::string_view theta_key, double default_theta, int64_t head_dim) {
  RopeConfig rope;
  rope.head_dim = head_dim;
  rope.pairing = RopePairing::half;  // transformers' rotate_half
  if (dict != nullptr && dict->contains("rope_theta") && !(*dict)["rope_theta"].is_null()) {
    const std::string key = cat(where, ".rope_theta");
    rope.theta = positive_theta(s, s.as_number((*dict)["rope_theta"], key), key);
  } else {
    rope.theta = positive_theta(s, s.number(theta_key, default_theta), s.key(theta_key));
  }
  if (dict != nullptr) read_rope_scaling(s, *dict, where, rope);
  return rope;
}

// The rotary dict of a single-kind model: "rope_scaling" wins over "rope_parameters"
// (transformers 5's convert_rope_params_to_dict takes rope_scaling first).
std::pair<const json*, std::string> rope_dict(const Section& s) {
  if (const json* d = s.object("rope_scaling")) return {d, s.key("rope_scaling")};
  if (const json* d = s.object("rope_parameters")) return {d, s.key("rope_parameters")};
  return {nullptr, ""};
}

Activation read_activation(const Section& s, std::string_view key, const char* fallback) {
  const std::string name = s.string(key).value_or(fallback);
  for (const HfActivation& a : kHfActivations) {
    if (name == a.name) return a.act;
  }
  std::string names;
  for (const HfActivation& a : kHfActivations)
    names.append(names.empty() ? cat(a.name) : cat(", ", a.name));
  s.fail(cat("'", s.key(key), "' '", name, "' is not supported (supported: ", names, ")"));
}

// "layer_types": one "full_attention" / "sliding_attention" per layer; true = sliding.
std::optional<std::vector<bool>> read_layer_types(const Section& s, int64_t num_layers) {
  const json* v = s.find("layer_types");
  if (v == nullptr) return std::nullopt;
  const std::string key = s.key("layer_types");
  if (!v->is_array()) s.fail(cat("'", key, "' is not a list (", v->dump(), ")"));
  if (static_cast<int64_t>(v->size()) != num_layers) {
    s.fail(cat("'", key, "' has ", v->size(), " entries for ", s.key("num_hidden_layers"), " ",
               num_layers));
  }
  std::vector<bool> sliding;
  for (size_t i = 0; i < v->size(); ++i) {
    const json& t = (*v)[i];
    const std::string type = t.is_string() ? t.get<std::string>() : t.dump();
    if (type != "full_attention" && type != "sliding_attention") {
      s.fail(cat("'", key, "[", i, "]' '", type,
                 "' is not supported (supported: full_attention, sliding_attention)"));
    }
    sliding.push_back(type == "sliding_attention");
  }
  return sliding;
}

// "sliding_window": absent -> `fallback`, null -> no window (0), else a positive window.
int read_sliding_window(const Section& s, int64_t fallback) {
  if (!s.has_key("sliding_window")) return window_value(s, fallback, s.key("sliding_window"));
  const std::optional<int64_t> w = s.optional_integer("sliding_window");
  return w ? window_value(s, *w, s.key("sliding_window")) : 0;
}

// eos_token_id: an id or a list of ids.
std::vector<int64_t> read_eos(const Section& s, const json& v) {
  const std::string key = s.key("eos_token_id");
  if (!v.is_array()) return {s.as_integer(v, key)};
  std::vector<int64_t> ids;
  for (size_t i = 0; i < v.size(); ++i) ids.push_back(s.as_integer(v[i], cat(key, "[", i, "]")));
  return ids;
}

}  // namespace

ModelConfig from_hf_config(const io::HfConfig& hf) {
  const json root_json = io::json_util::parse_strict(hf.text(), hf.source(), detail::kOp, "config");
  if (!root_json.is_object()) {
    throw Error(detail::kOp, cat(hf.source(), ": config is not a JSON object"));
  }
  // Only looks keys up until the architecture is known (its architecture appears in messages
  // about required keys, and none is read through it).
  const Section root(root_json, "", hf.source(), Architecture::llama);

  // The architecture: "architectures"[0] when given, else "model_type".
  const HfName* found = nullptr;
  if (const json* list = root.find("architectures"); list != nullptr && !list->empty()) {
    if (!list->is_array() || !(*list)[0].is_string()) {
      root.fail(cat("'architectures' is not a list of names (", list->dump(), ")"));
    }
    const std::string name = (*list)[0].get<std::string>();
    for (const HfName& entry : kHfClasses) {
      if (name == entry.name) found = &entry;
    }
    if (found == nullptr) {
      root.fail(cat("architecture '", name,
                    "' is not supported (supported: ", supported_names(kHfClasses), ")"));
    }
  } else {
    const std::optional<std::string> type = root.string("model_type");
    if (!type) root.fail("neither 'architectures' nor 'model_type' names the architecture");
    for (const HfName& entry : kHfModelTypes) {
      if (*type == entry.name) found = &entry;
    }
    if (found == nullptr) {
      root.fail(cat("model_type '", *type,
                    "' is not supported (supported: ", supported_names(kHfModelTypes), ")"));
    }
  }
  const Architecture arch = found->arch;
  const bool gemma = arch == Architecture::gemma3;
  const HfDefaults def = hf_defaults(arch);

  // Gemma3Config holds the text model in "text_config".
  const json* text_json = nullptr;
  if (found->composite) text_json = root.object("text_config");
  const Section s = text_json != nullptr ? Section(*text_json, "text_config.", hf.source(), arch)
                                         : Section(root_json, "", hf.source(), arch);
  const Section top(root_json, "", hf.source(), arch);

  ModelConfig c;
  c.arch = arch;
  c.source = hf.source();
  c.hf_prefix = found->composite ? "language_model." : "";

  // Every checkpoint states these; transformers' defaults for them are one example model's.
  c.hidden_size = s.required_integer("hidden_size");
  c.intermediate_size = s.required_integer("intermediate_size");
  c.num_layers = s.required_integer("num_hidden_layers");

  c.vocab_size = s.integer("vocab_size", def.vocab_size);
  c.num_heads = s.integer("num_attention_heads", def.num_heads);
  // An explicit null means "as many as the query heads" in every class that handles it.
  c.num_kv_heads = s.has_key("num_key_value_heads")
                       ? s.optional_integer("num_key_value_heads").value_or(c.num_heads)
                       : def.num_kv_heads.value_or(c.num_heads);
  const std::optional<int64_t> head_dim_key = s.optional_integer("head_dim");
  const bool head_dim_given = head_dim_key.has_value() || def.head_dim.has_value();
  if (head_dim_given) {
    c.head_dim = head_dim_key ? *head_dim_key : *def.head_dim;
  } else {
    c.head_dim = c.num_heads > 0 ? c.hidden_size / c.num_heads : 0;
  }
  c.rms_norm_eps = static_cast<float>(s.number("rms_norm_eps", def.rms_norm_eps));
  c.max_position_embeddings = s.integer("max_position_embeddings", def.max_position_embeddings);

  // Activation, biases and the block layout.
  switch (arch) {
    case Architecture::llama:
      c.activation = read_activation(s, "hidden_act", "silu");
      c.qkv_bias = c.o_bias = s.boolean("attention_bias", false);  // LlamaAttention
      c.mlp_bias = s.boolean("mlp_bias", false);                   // LlamaMLP
      break;
    case Architecture::mistral:  // MistralAttention and MistralMLP have no biases
      c.activation = read_activation(s, "hidden_act", "silu");
      break;
    case Architecture::qwen2:  // Qwen2Attention: q, k and v always biased, o never
      c.activation = read_activation(s, "hidden_act", "silu");
      c.qkv_bias = true;
      break;
    case Architecture::qwen3:
      c.activation = read_activation(s, "hidden_act", "silu");
      c.qkv_bias = c.o_bias = s.boolean("attention_bias", false);
      c.qk_norm = true;
      break;
    case Architecture::gemma3:
      c.activation = read_activation(s, "hidden_activation", "gelu_pytorch_tanh");
      c.qkv_bias = c.o_bias = s.boolean("attention_bias", false);
      c.qk_norm = true;
      c.norm_weight = RmsWeight::one_plus;
      c.four_norms = true;
      if (s.boolean("use_bidirectional_attention", false)) {
        s.fail(cat("'", s.key("use_bidirectional_attention"),
                   "' is not supported (causal decoding only)"));
      }
      break;
  }

  // Scales. Gemma: embeddings times sqrt(hidden_size), scores times query_pre_attn_scalar^-0.5.
  if (gemma) {
    c.embedding_scale = static_cast<float>(std::sqrt(static_cast<double>(c.hidden_size)));
    const double scalar = s.number("query_pre_attn_scalar", kGemma3QueryPreAttnScalar);
    if (!(std::isfinite(scalar) && scalar > 0)) {
      s.fail(cat("'", s.key("query_pre_attn_scalar"), "' must be finite and > 0, got ", scalar));
    }
    c.attention_scale = static_cast<float>(1.0 / std::sqrt(scalar));
    const auto read_cap = [&](const char* key) {
      const double cap = s.number(key, 0.0);  // null in Gemma 3: no soft-capping
      if (s.find(key) != nullptr && !(std::isfinite(cap) && cap > 0)) {
        s.fail(cat("'", s.key(key), "' must be finite and > 0 or null, got ", cap));
      }
      return static_cast<float>(cap);
    };
    c.final_logit_softcap = read_cap("final_logit_softcapping");
    // Validated, not applied: transformers' Gemma3Attention stores attn_logit_softcapping and
    // never passes it to the attention (Gemma 2 did), and llama.cpp soft-caps attention for
    // Gemma 2 only. Gemma 3 checkpoints set it to null.
    (void)read_cap("attn_logit_softcapping");
  } else if (c.head_dim > 0) {
    c.attention_scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(c.head_dim)));
  }

  // Per-layer window and rotary embedding.
  if (c.num_layers > 0 && c.num_layers <= 1'000'000) {
    c.layers.resize(static_cast<size_t>(c.num_layers));
  } else if (c.num_layers > 1'000'000) {
    s.fail(cat("'", s.key("num_hidden_layers"), "' ", c.num_layers, " is out of range"));
  }
  if (gemma) {
    // Gemma3TextConfig: a layer type per layer ("layer_types"), else every
    // sliding_window_pattern-th layer global; scaling (rope_scaling) on global layers only.
    std::vector<bool> sliding;
    if (auto types = read_layer_types(s, c.num_layers)) {
      sliding = std::move(*types);
    } else {
      const int64_t pattern = s.integer("sliding_window_pattern", kGemma3SlidingWindowPattern);
      if (pattern <= 0) {
        s.fail(cat("'", s.key("sliding_window_pattern"), "' must be positive, got ", pattern));
      }
      for (int64_t i = 0; i < c.num_layers; ++i) sliding.push_back((i + 1) % pattern != 0);
    }
    const int window = read_sliding_window(s, kDefaultSlidingWindow);
    // transformers 5 nests rope_parameters by layer type; older files have rope_theta,
    // rope_local_base_freq and rope_scaling (global layers).
    const json* params = s.object("rope_parameters");
    const bool nested = params != nullptr && (params->contains("full_attention") ||
                                              params->contains("sliding_attention"));
    const auto entry = [&](const char* type) -> const json* {
      if (!nested || !params->contains(type) || (*params)[type].is_null()) return nullptr;
      if (!(*params)[type].is_object()) {
        s.fail(cat("'", s.key("rope_parameters."), type, "' is not an object"));
      }
      return &(*params)[type];
    };
    const json* global_dict = entry("full_attention");
    std::string global_where = s.key("rope_parameters.full_attention");
    RopeConfig global =
        read_rope(s, global_dict, global_where, "rope_theta", def.rope_theta, c.head_dim);
    if (const json* scaling = s.object("rope_scaling")) {
      read_rope_scaling(s, *scaling, s.key("rope_scaling"), global);
    } else if (params != nullptr && !nested) {
      read_rope_scaling(s, *params, s.key("rope_parameters"), global);
    }
    const RopeConfig local =
        read_rope(s, entry("sliding_attention"), s.key("rope_parameters.sliding_attention"),
                  "rope_local_base_freq", kGemma3LocalTheta, c.head_dim);
    for (size_t i = 0; i < c.layers.size(); ++i) {
      c.layers[i].window = sliding[i] ? window : 0;
      c.layers[i].rope = sliding[i] ? local : global;
    }
  } else {
    const auto [dict, where] = rope_dict(s);
    const RopeConfig rope = read_rope(s, dict, where, "rope_theta", def.rope_theta, c.head_dim);
    std::vector<int> windows(c.layers.size(), 0);
    if (arch == Architecture::mistral) {
      // MistralConfig: every layer slides when sliding_window is set; it ignores layer_types.
      windows.assign(c.layers.size(), read_sliding_window(s, kDefaultSlidingWindow));
    } else if (arch == Architecture::qwen2 || arch == Architecture::qwen3) {
      // Qwen2Config / Qwen3Config: no window unless use_sliding_window; then the layers that
      // layer_types marks sliding, else those from max_window_layers on.
      const int window = s.boolean("use_sliding_window", false)
                             ? read_sliding_window(s, kDefaultSlidingWindow)
                             : 0;
      const int64_t first = s.integer("max_window_layers", kQwenMaxWindowLayers);
      const std::optional<std::vector<bool>> types = read_layer_types(s, c.num_layers);
      for (size_t i = 0; i < windows.size(); ++i) {
        const bool sliding = types ? (*types)[i] : static_cast<int64_t>(i) >= first;
        windows[i] = sliding ? window : 0;
      }
    }
    for (size_t i = 0; i < c.layers.size(); ++i) c.layers[i] = {windows[i], rope};
  }

  // Tokens and tying: the text section first, then the file's top level (Gemma3Config keeps
  // eos_token_id there), then the class default.
  const auto token_key = [&](const char* name) -> const Section* {
    if (s.has_key(name)) return &s;
    if (top.has_key(name)) return &top;
    return nullptr;
  };
  if (const Section* from = token_key("bos_token_id")) {
    c.bos_token_id = from->optional_integer("bos_token_id");
  } else {
    c.bos_token_id = def.bos_token_id;
  }
  if (const Section* from = token_key("eos_token_id")) {
    if (const json* v = from->find("eos_token_id")) c.eos_token_ids = read_eos(*from, *v);
  } else if (def.eos_token_id) {
    c.eos_token_ids = {*def.eos_token_id};
  }
  if (const Section* from = token_key("tie_word_embeddings")) {
    c.tie_word_embeddings = from->boolean("tie_word_embeddings", def.tie_word_embeddings);
  } else {
    c.tie_word_embeddings = def.tie_word_embeddings;
  }

  if (const auto& name = hf.torch_dtype()) {
    c.dtype = hf.model_dtype();
    if (!c.dtype) {
      root.fail(cat("torch_dtype '", *name,
                    "' is not supported (supported: float32, float16, "
                    "bfloat16)"));
    }
  }

  detail::FieldKeys keys{
      s.key("vocab_size"),        s.key("hidden_size"),         s.key("intermediate_size"),
      s.key("num_hidden_layers"), s.key("num_attention_heads"), s.key("num_key_value_heads"),
      s.key("head_dim"),          s.key("rms_norm_eps"),        s.key("max_position_embeddings"),
      s.key("sliding_window")};
  detail::validate(c, keys, head_dim_given);
  return c;
}

}  // namespace mlxn::model
