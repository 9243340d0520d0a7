#include "mlxn/model/config.h"

#include <charconv>
#include <cmath>
#include <map>
#include <utility>

#include "mlxn/core/error.h"
#include "model/config_check.h"

namespace mlxn::model {

namespace {

using detail::cat;

const char* rope_scaling_name(RopeScaling scaling) {
  switch (scaling) {
    case RopeScaling::none:
      return "none";
    case RopeScaling::linear:
      return "linear";
    case RopeScaling::dynamic_ntk:
      return "dynamic_ntk";
    case RopeScaling::llama3:
      return "llama3";
    case RopeScaling::yarn:
      return "yarn";
  }
  return "?";
}

const char* rms_weight_name(RmsWeight mode) {
  switch (mode) {
    case RmsWeight::none:
      return "none";
    case RmsWeight::multiply:
      return "w";
    case RmsWeight::one_plus:
      return "1 + w";
  }
  return "?";
}

std::string describe_rope(const RopeConfig& rope) {
  std::string s = cat("rope theta ", rope.theta, ", pairing ",
                      rope.pairing == RopePairing::half ? "half" : "interleaved");
  if (rope.rotary_dim != 0) s.append(cat(", rotary_dim ", rope.rotary_dim));
  switch (rope.scaling) {
    case RopeScaling::none:
      break;
    case RopeScaling::linear:
      s.append(cat(", linear factor ", rope.factor));
      break;
    case RopeScaling::llama3:
      s.append(cat(", llama3 factor ", rope.factor, " low_freq_factor ", rope.low_freq_factor,
                   " high_freq_factor ", rope.high_freq_factor, " original_max_position ",
                   rope.original_max_position));
      break;
    default:
      s.append(cat(", ", rope_scaling_name(rope.scaling), " factor ", rope.factor));
      break;
  }
  if (!rope.freq_factors.empty()) s.append(cat(", freq_factors[", rope.freq_factors.size(), "]"));
  return s;
}

std::string describe_layer(const LayerConfig& layer) {
  const std::string attention =
      layer.window > 0 ? cat("sliding window ", layer.window) : std::string("global");
  return cat(attention, ", ", describe_rope(layer.rope));
}

// "0-4, 6-10, 12" for the sorted indices.
std::string index_ranges(const std::vector<int64_t>& indices) {
  std::string s;
  for (size_t i = 0; i < indices.size();) {
    size_t j = i;
    while (j + 1 < indices.size() && indices[j + 1] == indices[j] + 1) ++j;
    if (!s.empty()) s.append(", ");
    s.append(j == i ? cat(indices[i]) : cat(indices[i], "-", indices[j]));
    i = j + 1;
  }
  return s;
}

[[noreturn]] void fail(const ModelConfig& c, const std::string& what) {
  throw Error(detail::kOp, cat(c.source, ": ", what));
}

void require_positive(const ModelConfig& c, int64_t value, const std::string& key) {
  if (value <= 0) fail(c, cat(key, " must be positive, got ", value));
}

void require_positive_finite(const ModelConfig& c, double value, const std::string& what) {
  if (!(std::isfinite(value) && value > 0))
    fail(c, cat(what, " must be finite and > 0, got ", value));
}

}  // namespace

const char* architecture_name(Architecture arch) {
  switch (arch) {
    case Architecture::llama:
      return "llama";
    case Architecture::mistral:
      return "mistral";
    case Architecture::qwen2:
      return "qwen2";
    case Architecture::qwen3:
      return "qwen3";
    case Architecture::gemma3:
      return "gemma3";
  }
  return "?";
}

std::string ModelConfig::describe() const {
  std::string s;
  const auto line = [&s](std::string_view name, const std::string& value) {
    s.append(cat(name, ": ", value, "\n"));
  };
  const auto yes_no = [](bool b) { return std::string(b ? "yes" : "no"); };
  const auto cap = [](float v) { return v > 0 ? cat(v) : std::string("none"); };
  line("architecture", architecture_name(arch));
  line("source", source);
  line("vocab_size", cat(vocab_size));
  line("hidden_size", cat(hidden_size));
  line("intermediate_size", cat(intermediate_size));
  line("num_layers", cat(num_layers));
  line("num_heads", cat(num_heads));
  line("num_kv_heads", cat(num_kv_heads));
  line("head_dim", cat(head_dim));
  line("rms_norm_eps", cat(rms_norm_eps));
  line("max_position_embeddings", cat(max_position_embeddings));
  line("qkv_bias", yes_no(qkv_bias));
  line("o_bias", yes_no(o_bias));
  line("mlp_bias", yes_no(mlp_bias));
  line("qk_norm", yes_no(qk_norm));
  line("norm_weight", rms_weight_name(norm_weight));
  line("four_norms", yes_no(four_norms));
  line("activation", activation_name(activation));
  line("embedding_scale", cat(embedding_scale));
  line("attention_scale", cat(attention_scale));
  line("attn_logit_softcap", cap(attn_logit_softcap));
  line("final_logit_softcap", cap(final_logit_softcap));
  line("tie_word_embeddings", yes_no(tie_word_embeddings));
  line("bos_token_id", bos_token_id ? cat(*bos_token_id) : std::string("none"));
  std::string eos;
  for (const int64_t id : eos_token_ids) eos.append(eos.empty() ? cat(id) : cat(", ", id));
  line("eos_token_ids", eos.empty() ? std::string("none") : eos);
  line("dtype", dtype ? std::string(dtype_name(*dtype)) : std::string("unspecified"));
  line("hf_prefix", hf_prefix.empty() ? std::string("(none)") : hf_prefix);
  // Layers of one kind on one line, kinds in order of first appearance.
  std::vector<std::pair<std::string, std::vector<int64_t>>> kinds;
  std::map<std::string, size_t> kind_index;
  for (size_t i = 0; i < layers.size(); ++i) {
    const std::string kind = describe_layer(layers[i]);
    const auto [it, inserted] = kind_index.emplace(kind, kinds.size());
    if (inserted) kinds.emplace_back(kind, std::vector<int64_t>{});
    kinds[it->second].second.push_back(static_cast<int64_t>(i));
  }
  for (const auto& [kind, indices] : kinds) line(cat("layers ", index_ranges(indices)), kind);
  return s;
}

namespace detail {

void validate(const ModelConfig& c, const FieldKeys& keys, bool head_dim_given) {
  require_positive(c, c.vocab_size, keys.vocab_size);
  require_positive(c, c.hidden_size, keys.hidden_size);
  require_positive(c, c.intermediate_size, keys.intermediate_size);
  require_positive(c, c.num_layers, keys.num_layers);
  require_positive(c, c.num_heads, keys.num_heads);
  require_positive(c, c.num_kv_heads, keys.num_kv_heads);
  if (c.num_heads % c.num_kv_heads != 0) {
    fail(c, cat(keys.num_heads, " ", c.num_heads, " is not a multiple of ", keys.num_kv_heads, " ",
                c.num_kv_heads));
  }
  // Without an explicit head_dim the heads split hidden_size evenly.
  if (!head_dim_given && c.hidden_size != c.num_heads * c.head_dim) {
    fail(c, cat(keys.hidden_size, " ", c.hidden_size, " is not a multiple of ", keys.num_heads, " ",
                c.num_heads, " (and ", keys.head_dim, " is not given)"));
  }
  require_positive(c, c.head_dim, keys.head_dim);
  // RoPE rotates pairs of elements.
  if (c.head_dim % 2 != 0) fail(c, cat(keys.head_dim, " ", c.head_dim, " must be even"));
  require_positive(c, c.max_position_embeddings, keys.max_position_embeddings);
  if (!(std::isfinite(c.rms_norm_eps) && c.rms_norm_eps >= 0)) {
    fail(c, cat(keys.rms_norm_eps, " must be finite and >= 0, got ", c.rms_norm_eps));
  }
  if (static_cast<int64_t>(c.layers.size()) != c.num_layers) {
    fail(c, cat(c.layers.size(), " layer descriptions for ", keys.num_layers, " ", c.num_layers));
  }
  for (size_t i = 0; i < c.layers.size(); ++i) {
    const LayerConfig& layer = c.layers[i];
    if (layer.window < 0) {
      fail(c, cat(keys.sliding_window, " of layer ", i, " must be >= 0, got ", layer.window));
    }
    if (layer.rope.head_dim != c.head_dim) {
      fail(c, cat("layer ", i, " rope head_dim ", layer.rope.head_dim, " differs from ",
                  keys.head_dim, " ", c.head_dim));
    }
  }
  require_positive_finite(c, c.embedding_scale, "embedding scale");
  require_positive_finite(c, c.attention_scale, "attention scale");
  if (!(std::isfinite(c.attn_logit_softcap) && c.attn_logit_softcap >= 0)) {
    fail(c, cat("attention logit softcap must be finite and >= 0, got ", c.attn_logit_softcap));
  }
  if (!(std::isfinite(c.final_logit_softcap) && c.final_logit_softcap >= 0)) {
    fail(c, cat("final logit softcap must be finite and >= 0, got ", c.final_logit_softcap));
  }
}

}  // namespace detail

}  // namespace mlxn::model
