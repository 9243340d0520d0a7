// The description of a model's architecture that the forward pass runs from: sizes, per-layer
// attention window and rotary embedding, norms, activation and the scales, read from a
// Hugging Face config.json or from a GGUF file's metadata and validated once here.
//
// Supported: llama (Llama 2 / 3.x), mistral, qwen2, qwen3 and gemma3 (text). docs/model.md lists
// what is read from where and the defaults applied when a key is absent.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "mlxn/core/dtype.h"
#include "mlxn/ops/activations.h"
#include "mlxn/ops/norms.h"
#include "mlxn/ops/rope.h"

namespace mlxn::io {
class HfConfig;
class GgufFile;
}  // namespace mlxn::io

namespace mlxn::model {

enum class Architecture { llama, mistral, qwen2, qwen3, gemma3 };
// "llama", "mistral", "qwen2", "qwen3", "gemma3".
const char* architecture_name(Architecture arch);

struct LayerConfig {
  // 0: global attention. > 0: sliding window, the query at position p sees keys p - window + 1
  // .. p (the attention op's `window`, and transformers' sliding_window).
  int window = 0;
  // This layer's rotary embedding, ready for RopeTable: head_dim, theta, pairing and scaling
  // (none, linear or llama3 from a config.json; GGUF's rope_freqs tensor as freq_factors).
  RopeConfig rope;
};

struct ModelConfig {
  Architecture arch = Architecture::llama;
  std::string source;  // the file it was read from, for messages

  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_layers = 0;
  int64_t num_heads = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;
  float rms_norm_eps = 0.0f;
  int64_t max_position_embeddings = 0;
  std::vector<LayerConfig> layers;  // num_layers entries

  bool qkv_bias = false;  // q, k and v projections carry a bias
  bool o_bias = false;    // the output projection carries a bias
  bool mlp_bias = false;  // gate, up and down projections carry a bias (Llama's mlp_bias)
  bool qk_norm = false;   // RMSNorm over head_dim on each query and key head before RoPE
  // How every RMSNorm applies its weight: multiply, or one_plus (Gemma's x * (1 + w)). A Gemma
  // GGUF stores 1 + w already (llama.cpp's converter adds the 1), so it reads as multiply.
  RmsWeight norm_weight = RmsWeight::multiply;
  // Gemma 3's block: input, post-attention, pre-feedforward and post-feedforward norms. Without
  // it a block has the input norm and the pre-feedforward norm only.
  bool four_norms = false;
  Activation activation = Activation::silu;  // of the gated MLP: silu (SwiGLU), gelu_tanh (GeGLU)

  float embedding_scale = 1.0f;      // embeddings are multiplied by it (Gemma: sqrt(hidden_size))
  float attention_scale = 0.0f;      // softmax scale: head_dim^-0.5 or query_pre_attn_scalar^-0.5
  float attn_logit_softcap = 0.0f;   // 0: none
  float final_logit_softcap = 0.0f;  // 0: none
  bool tie_word_embeddings = false;  // the LM head is the embedding matrix

  std::optional<int64_t> bos_token_id;
  std::vector<int64_t> eos_token_ids;  // config.json may give a list
  std::optional<DType> dtype;          // config.json's torch_dtype / dtype; none from a GGUF

  // Prefix of the text model's tensor names in a Hugging Face checkpoint: "" for a *ForCausalLM
  // checkpoint, "language_model." for Gemma3ForConditionalGeneration (tensor_names.h).
  std::string hf_prefix;

  // One line per field ("name: value"), the layers grouped by kind, for `mlxn inspect`.
  std::string describe() const;
};

// From config.json. The architecture is "architectures"[0], else "model_type"; for
// Gemma3ForConditionalGeneration the text model is read from "text_config". Keys absent from the
// file take transformers' defaults for that architecture, except hidden_size,
// intermediate_size and num_hidden_layers, which every checkpoint states and which are
// required. Throws Error("[model] <file>: ...") naming the key for an unsupported architecture,
// a missing or mistyped key, or values that do not describe a model.
ModelConfig from_hf_config(const io::HfConfig& config);

// From a GGUF file's metadata (general.architecture "llama", "qwen2", "qwen3" or "gemma3"; a
// Mistral GGUF is "llama") and the presence of a few tensors: output.weight (untied head),
// attention biases, rope_freqs.weight (Llama 3.x scaling as per-frequency factors). Keys as
// llama.cpp writes and reads them, with its defaults. Errors as above, naming the GGUF key.
ModelConfig from_gguf(const io::GgufFile& file);

}  // namespace mlxn::model
