#include "mlxn/model/tensor_names.h"

#include <string_view>

#include "mlxn/core/error.h"
#include "model/config_check.h"

namespace mlxn::model {

namespace {

using detail::cat;

// The one table of tensor names. "{i}" stands for the layer index. `hf_four_norm` is the name in
// Gemma 3's four-norm blocks where it differs from `hf` (nullptr: the same).
struct TensorNames {
  TensorRole role;
  const char* role_name;
  const char* hf;
  const char* hf_four_norm;
  const char* gguf;
};

constexpr TensorNames kTensorNames[] = {
    {TensorRole::embed, "embed", "model.embed_tokens.weight", nullptr, "token_embd.weight"},
    {TensorRole::final_norm, "final_norm", "model.norm.weight", nullptr, "output_norm.weight"},
    {TensorRole::lm_head, "lm_head", "lm_head.weight", nullptr, "output.weight"},
    {TensorRole::input_norm, "input_norm", "model.layers.{i}.input_layernorm.weight", nullptr,
     "blk.{i}.attn_norm.weight"},
    {TensorRole::attn_q, "attn_q", "model.layers.{i}.self_attn.q_proj.weight", nullptr,
     "blk.{i}.attn_q.weight"},
    {TensorRole::attn_k, "attn_k", "model.layers.{i}.self_attn.k_proj.weight", nullptr,
     "blk.{i}.attn_k.weight"},
    {TensorRole::attn_v, "attn_v", "model.layers.{i}.self_attn.v_proj.weight", nullptr,
     "blk.{i}.attn_v.weight"},
    {TensorRole::attn_o, "attn_o", "model.layers.{i}.self_attn.o_proj.weight", nullptr,
     "blk.{i}.attn_output.weight"},
    {TensorRole::attn_q_bias, "attn_q_bias", "model.layers.{i}.self_attn.q_proj.bias", nullptr,
     "blk.{i}.attn_q.bias"},
    {TensorRole::attn_k_bias, "attn_k_bias", "model.layers.{i}.self_attn.k_proj.bias", nullptr,
     "blk.{i}.attn_k.bias"},
    {TensorRole::attn_v_bias, "attn_v_bias", "model.layers.{i}.self_attn.v_proj.bias", nullptr,
     "blk.{i}.attn_v.bias"},
    {TensorRole::attn_o_bias, "attn_o_bias", "model.layers.{i}.self_attn.o_proj.bias", nullptr,
     "blk.{i}.attn_output.bias"},
    {TensorRole::q_norm, "q_norm", "model.layers.{i}.self_attn.q_norm.weight", nullptr,
     "blk.{i}.attn_q_norm.weight"},
    {TensorRole::k_norm, "k_norm", "model.layers.{i}.self_attn.k_norm.weight", nullptr,
     "blk.{i}.attn_k_norm.weight"},
    {TensorRole::post_attn_norm, "post_attn_norm", nullptr,
     "model.layers.{i}.post_attention_layernorm.weight", "blk.{i}.post_attention_norm.weight"},
    {TensorRole::pre_ffn_norm, "pre_ffn_norm", "model.layers.{i}.post_attention_layernorm.weight",
     "model.layers.{i}.pre_feedforward_layernorm.weight", "blk.{i}.ffn_norm.weight"},
    {TensorRole::post_ffn_norm, "post_ffn_norm", nullptr,
     "model.layers.{i}.post_feedforward_layernorm.weight", "blk.{i}.post_ffw_norm.weight"},
    {TensorRole::ffn_gate, "ffn_gate", "model.layers.{i}.mlp.gate_proj.weight", nullptr,
     "blk.{i}.ffn_gate.weight"},
    {TensorRole::ffn_up, "ffn_up", "model.layers.{i}.mlp.up_proj.weight", nullptr,
     "blk.{i}.ffn_up.weight"},
    {TensorRole::ffn_down, "ffn_down", "model.layers.{i}.mlp.down_proj.weight", nullptr,
     "blk.{i}.ffn_down.weight"},
    {TensorRole::ffn_gate_bias, "ffn_gate_bias", "model.layers.{i}.mlp.gate_proj.bias", nullptr,
     "blk.{i}.ffn_gate.bias"},
    {TensorRole::ffn_up_bias, "ffn_up_bias", "model.layers.{i}.mlp.up_proj.bias", nullptr,
     "blk.{i}.ffn_up.bias"},
    {TensorRole::ffn_down_bias, "ffn_down_bias", "model.layers.{i}.mlp.down_proj.bias", nullptr,
     "blk.{i}.ffn_down.bias"},
};

constexpr std::string_view kLayerIndex = "{i}";

const TensorNames& row(TensorRole role) {
  for (const TensorNames& r : kTensorNames) {
    if (r.role == role) return r;
  }
  throw Error(detail::kOp, cat("unknown tensor role ", static_cast<int>(role)));
}

// Whether the model described by `c` has a tensor of this role.
bool has_role(const ModelConfig& c, TensorRole role) {
  switch (role) {
    case TensorRole::lm_head:
      return !c.tie_word_embeddings;
    case TensorRole::attn_q_bias:
    case TensorRole::attn_k_bias:
    case TensorRole::attn_v_bias:
      return c.qkv_bias;
    case TensorRole::attn_o_bias:
      return c.o_bias;
    case TensorRole::q_norm:
    case TensorRole::k_norm:
      return c.qk_norm;
    case TensorRole::post_attn_norm:
    case TensorRole::post_ffn_norm:
      return c.four_norms;
    case TensorRole::ffn_gate_bias:
    case TensorRole::ffn_up_bias:
    case TensorRole::ffn_down_bias:
      return c.mlp_bias;
    default:
      return true;
  }
}

std::vector<TensorRole> roles(const ModelConfig& c, bool per_layer) {
  std::vector<TensorRole> out;
  for (const TensorNames& r : kTensorNames) {
    if (is_layer_role(r.role) == per_layer && has_role(c, r.role)) out.push_back(r.role);
  }
  return out;
}

void require_role(const ModelConfig& c, TensorRole role) {
  if (!has_role(c, role)) {
    throw Error(detail::kOp, cat(architecture_name(c.arch), " model (", c.source, ") has no ",
                                 tensor_role_name(role), " tensor"));
  }
}

// The template with its layer index filled in, after checking the index.
std::string expand(const ModelConfig& c, TensorRole role, int64_t layer, const char* name) {
  std::string s(name);
  const size_t at = s.find(kLayerIndex);
  if (at == std::string::npos) return s;
  if (layer < 0 || layer >= c.num_layers) {
    throw Error(detail::kOp, cat("layer ", layer, " of ", tensor_role_name(role),
                                 " is out of range [0, ", c.num_layers, ")"));
  }
  return s.replace(at, kLayerIndex.size(), std::to_string(layer));
}

}  // namespace

const char* tensor_role_name(TensorRole role) { return row(role).role_name; }

bool is_layer_role(TensorRole role) {
  return std::string_view(row(role).gguf).find(kLayerIndex) != std::string_view::npos;
}

std::vector<TensorRole> global_tensor_roles(const ModelConfig& config) {
  return roles(config, false);
}

std::vector<TensorRole> layer_tensor_roles(const ModelConfig& config) {
  return roles(config, true);
}

std::string hf_tensor_name(const ModelConfig& config, TensorRole role, int64_t layer) {
  require_role(config, role);
  const TensorNames& r = row(role);
  // Only four-norm models have the roles whose two-norm name is null.
  const char* name = config.four_norms && r.hf_four_norm != nullptr ? r.hf_four_norm : r.hf;
  return cat(config.hf_prefix, expand(config, role, layer, name));
}

std::string gguf_tensor_name(const ModelConfig& config, TensorRole role, int64_t layer) {
  require_role(config, role);
  return expand(config, role, layer, row(role).gguf);
}

}  // namespace mlxn::model
