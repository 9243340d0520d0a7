// The names of a model's tensors in a Hugging Face checkpoint and in a GGUF file, by role.
//
// Roles are named by what a tensor does, not by either file's name for it: Hugging Face calls the
// norm before the MLP "post_attention_layernorm" in Llama-style blocks, while in Gemma 3's
// four-norm blocks that name is the norm of the attention output and the norm before the MLP is
// "pre_feedforward_layernorm". GGUF names both the same way for every architecture.
#pragma once

#include <string>
#include <vector>

#include "mlxn/model/config.h"

namespace mlxn::model {

enum class TensorRole {
  // once per model
  embed,
  final_norm,
  lm_head,
  // once per layer
  input_norm,  // before attention
  attn_q,
  attn_k,
  attn_v,
  attn_o,
  attn_q_bias,
  attn_k_bias,
  attn_v_bias,
  attn_o_bias,
  q_norm,          // per-head RMSNorm of the queries
  k_norm,          // per-head RMSNorm of the keys
  post_attn_norm,  // of the attention output (four-norm blocks)
  pre_ffn_norm,    // before the MLP
  post_ffn_norm,   // of the MLP output (four-norm blocks)
  ffn_gate,
  ffn_up,
  ffn_down,
  ffn_gate_bias,
  ffn_up_bias,
  ffn_down_bias,
};

// "embed", "attn_q", "pre_ffn_norm", ...
const char* tensor_role_name(TensorRole role);
bool is_layer_role(TensorRole role);

// The roles the model has, in load order: the global ones (lm_head only when the embeddings are
// not tied), and those of every layer (biases, q/k norms and the extra norms only where the
// config says so).
std::vector<TensorRole> global_tensor_roles(const ModelConfig& config);
std::vector<TensorRole> layer_tensor_roles(const ModelConfig& config);

// "model.layers.3.self_attn.q_proj.weight" (with config.hf_prefix in front) and
// "blk.3.attn_q.weight". `layer` is used by layer roles only and must be in [0, num_layers).
// Throws Error("[model] ...") for a role the model does not have or a layer out of range.
std::string hf_tensor_name(const ModelConfig& config, TensorRole role, int64_t layer = -1);
std::string gguf_tensor_name(const ModelConfig& config, TensorRole role, int64_t layer = -1);

}  // namespace mlxn::model
