// Internal to the model description: message building and the validation that the config.json
// and GGUF readers share.
#pragma once

#include <concepts>
#include <string>
#include <string_view>

#include "mlxn/model/config.h"

namespace mlxn::model::detail {

inline constexpr const char* kOp = "model";

// A number as a person would write it: integers without a fraction ("10000"), others in the
// shortest form that reads back exactly ("1e-05", "0.0625").
std::string format_number(double value);
std::string format_number(float value);  // shortest form of the float itself: 1e-06, not 9.99e-07

inline void append_part(std::string& out, std::string_view part) { out.append(part); }
template <std::integral T>
void append_part(std::string& out, T value) {
  out.append(std::to_string(value));
}
inline void append_part(std::string& out, double value) { out.append(format_number(value)); }
inline void append_part(std::string& out, float value) { out.append(format_number(value)); }

// Concatenates strings and numbers. Messages are built this way rather than with
// `"literal" + std::string(...)`, which GCC 12 misreports under -Wrestrict.
template <class... Parts>
std::string cat(const Parts&... parts) {
  std::string out;
  (append_part(out, parts), ...);
  return out;
}

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
