// Internal to the model description: message building and the validation that the config.json
// and GGUF readers share.
#pragma once

#include <concepts>
#include <string>
#include <string_view>

#include "core/text.h"
#include "mlxn/model/config.h"

namespace mlxn::model::detail {

inline constexpr const char* kOp = "model";

using text::cat;
using text::format_number;

// How the source spells each checked field, so that a message names the key to fix.
struct FieldKeys {
  std::string vocab_size;
  std::string hidden_size;
  std::string intermediate_size;
  std::string num_layers;
  std::string num_heads;
  std::string num_kv_heads;
  std::string head_dim;
  std::string rms_norm_eps;
  std::string max_position_embeddings;
  std::string sliding_window;
};

// Checks what every reader must guarantee: positive sizes, num_heads a multiple of
// num_kv_heads, an even head_dim, hidden_size == num_heads * head_dim unless the source gave
// head_dim explicitly, one layer entry per layer with a non-negative window, finite positive
// scales. Throws Error("[model] <source>: ...") naming the key.
void validate(const ModelConfig& config, const FieldKeys& keys, bool head_dim_given);

}  // namespace mlxn::model::detail
