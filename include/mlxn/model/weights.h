// A model's weights by role (tensor_names.h), loaded from a Hugging Face / MLX safetensors
// checkpoint or a GGUF file onto a stream's device, each tensor's shape checked against the
// ModelConfig.
//
// Shapes (H heads, KV key/value heads, D head_dim, I intermediate_size), as Weights [out, in]:
//   embed, lm_head [vocab, hidden]   q [H·D, hidden]   k, v [KV·D, hidden]   o [hidden, H·D]
//   gate, up [I, hidden]   down [hidden, I]
// and as 1-D buffers: every block norm and final_norm [hidden], q_norm and k_norm [D], the
// biases [out] of their projection.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "mlxn/core/buffer.h"
#include "mlxn/core/stream.h"
#include "mlxn/model/config.h"
#include "mlxn/model/tensor_names.h"
#include "mlxn/ops/weights.h"

namespace mlxn::io {
class HfConfig;
class GgufFile;
}  // namespace mlxn::io

namespace mlxn::model {

// A role the config does not give the model leaves its member undefined.
struct LayerWeights {
  Weight q, k, v, o;      // attn_q, attn_k, attn_v, attn_o
  Weight gate, up, down;  // ffn_gate, ffn_up, ffn_down
  // Biases: config.qkv_bias, o_bias and mlp_bias.
  Buffer q_bias, k_bias, v_bias, o_bias;
  Buffer gate_bias, up_bias, down_bias;
  Buffer input_norm;      // before attention
  Buffer post_attn_norm;  // of the attention output (four-norm blocks)
  Buffer pre_ffn_norm;    // before the MLP
  Buffer post_ffn_norm;   // of the MLP output (four-norm blocks)
  Buffer q_norm, k_norm;  // per-head, [head_dim] (config.qk_norm)
};

struct ModelWeights {
  Weight embed;
  Buffer final_norm;
  Weight lm_head;  // the embedding itself when the config ties them
  std::vector<LayerWeights> layers;

  // The member that holds `role` (of `layer`; ignored for embed, lm_head and final_norm), or
  // nullptr when the role is not a matrix (weight) or not a 1-D tensor (buffer). `layer` must be
  // in range for a per-layer role.
  const Weight* weight(TensorRole role, int64_t layer) const;
  const Buffer* buffer(TensorRole role, int64_t layer) const;

  // Bytes held on the device (a tied head counted once).
  int64_t bytes() const;
  // One line per global tensor and per role of layer 0, then the total, for `mlxn inspect`.
  std::string describe() const;
};

// From `model_dir`: model.safetensors.index.json with its shards, else model.safetensors. Every
// role the config requires is found by its Hugging Face name, its dtype and shape checked, and
// copied to the stream's device. A matrix whose module `hf.quantization()` quantizes (MLX
// affine) is read as "<module>.weight" (u32 codes), "<module>.scales" and "<module>.biases".
// Tensors of no role (a vision tower, a layer index past num_layers) are not read. Throws
// Error("[model] <file>: ...") naming the tensor and its role for a missing tensor, a wrong
// dtype or shape (expected and found), or a quantized module without scales or biases.
ModelWeights load_hf_weights(const ModelConfig& config, const io::HfConfig& hf,
                             const std::string& model_dir, const Stream& stream);

// The same from a GGUF file: F32 / F16 / BF16 matrices as dense weights, Q4_0 / Q8_0 / Q4_K /
// Q5_K / Q6_K as GGML block weights, 1-D tensors (norms, biases) as F32 / F16 / BF16 buffers.
ModelWeights load_gguf_weights(const ModelConfig& config, const io::GgufFile& file,
                               const Stream& stream);

}  // namespace mlxn::model
