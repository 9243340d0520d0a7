// Rotary position embedding (RoPE) and its fused form with per-head RMSNorm.
//
// Frequencies (rope_frequencies) follow Hugging Face transformers' modeling_rope_utils for each
// rope_type, with dim = rotary_dim:
//   default:     inv_freq[i] = 1 / theta^(2i / dim),  i < dim / 2
//   linear:      inv_freq[i] / factor
//   dynamic_ntk: theta' = theta * (factor * L / max_position - (factor - 1))^(dim / (dim - 2)) with
//                L = max(seq_len, max_position), then the default formula with theta'
//   llama3:      wavelengths above original_max_position / low_freq_factor divided by factor,
//                below original_max_position / high_freq_factor kept, the band between blended
//                linearly in original_max_position / wavelength
//   yarn:        interpolated (/ factor) and extrapolated frequencies blended by a linear ramp
//                between the correction dimensions of beta_fast and beta_slow; attention
//                scaling 0.1 * ln(factor) + 1 (or mscale / mscale_all_dim, or given)
//   freq_factors (any type, as GGUF's rope_freqs tensor): inv_freq[i] / freq_factors[i]
// Each step is computed as transformers computes it on f32 tensors (tests/fixtures holds its
// values for every type), so the tables agree to the bit or within an ulp where f32 pow differs.
//
// Application, per token t with position p = positions[t], in f32 exactly as transformers'
// rotary embedding computes cos/sin:
//   angle_i = f32(p) * inv_freq[i]   (one f32 rounding)
//   c_i = cos(angle_i) * attention_scaling,  s_i = sin(angle_i) * attention_scaling   (f32)
//   pairing half (NeoX, transformers' rotate_half): pairs (j, j + dim/2) for j < dim/2
//   pairing interleaved (GPT-J, GGML's normal mode):   pairs (2j, 2j + 1)
//   (a, b) -> (a * c_j - b * s_j, b * c_j + a * s_j); elements from rotary_dim on pass through.
// Each output is rounded once from f32. transformers instead rounds cos/sin to the model dtype
// and rounds after each multiply and add (bf16: a few ulps apart from this op).
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "mlxn/core/buffer.h"
#include "mlxn/core/stream.h"
#include "mlxn/ops/norms.h"

namespace mlxn {

enum class RopePairing { half, interleaved };
enum class RopeScaling { none, linear, dynamic_ntk, llama3, yarn };

struct RopeConfig {
  int64_t head_dim = 0;
  int64_t rotary_dim = 0;  // 0: head_dim. Even, <= head_dim (partial_rotary_factor * head_dim)
  double theta = 10000.0;  // rope_theta
  RopePairing pairing = RopePairing::half;
  RopeScaling scaling = RopeScaling::none;
  double factor = 1.0;                     // linear, dynamic_ntk, llama3, yarn
  int64_t max_position = 0;                // dynamic_ntk: max_position_embeddings
  int64_t original_max_position = 0;       // llama3, yarn: original_max_position_embeddings
  double low_freq_factor = 1.0;            // llama3
  double high_freq_factor = 4.0;           // llama3
  double beta_fast = 32.0;                 // yarn
  double beta_slow = 1.0;                  // yarn
  double mscale = 0.0;                     // yarn (with mscale_all_dim, as DeepSeek configures it)
  double mscale_all_dim = 0.0;             // yarn
  bool truncate = true;                    // yarn: round the correction range outwards
  std::optional<double> attention_factor;  // overrides the type's attention scaling
  std::vector<float> freq_factors;         // empty or rotary_dim / 2 positive factors
};

struct RopeFrequencies {
  std::vector<float> inv_freq;  // rotary_dim / 2
  float attention_scaling = 1.0f;
};

// Validates `config` (clear errors for missing or out-of-range fields) and computes the
// frequencies. seq_len: the longest sequence the table serves (dynamic_ntk only; 0 = none).
RopeFrequencies rope_frequencies(const RopeConfig& config, int64_t seq_len = 0);

// A configuration with its frequencies resident on one device, ready for rope().
class RopeTable {
 public:
  RopeTable(const RopeConfig& config, const Stream& stream, int64_t seq_len = 0);
  const RopeConfig& config() const { return config_; }
  int64_t rotary_dim() const { return rotary_dim_; }
  const Buffer& inv_freq() const { return inv_freq_; }  // f32 [rotary_dim / 2]
  float attention_scaling() const { return attention_scaling_; }

 private:
  RopeConfig config_;
  int64_t rotary_dim_ = 0;
  Buffer inv_freq_;
  float attention_scaling_ = 1.0f;
};

// x, out: [tokens, heads, head_dim] f32/bf16/f16 (each its own dtype); the head and element axes
// contiguous, the token axis any stride (Q or K as a view of a fused QKV projection). positions:
// i32 [tokens], >= 0 (a negative one is reported as a device error; its rows are left unrotated).
// out may be x itself (the same view).
void rope(const Buffer& x, const Buffer& positions, const RopeTable& table, const Buffer& out,
          const Stream& stream);

// Per-head RMSNorm (weight [head_dim], Qwen3 / Gemma 3 Q/K norm) followed by rope() in one pass:
// y = rope(x * rsqrt(mean(x^2) + eps) * w'), the normalised value kept in f32 between the two.
void rms_norm_rope(const Buffer& x, const Buffer& weight, float eps, RmsWeight mode,
                   const Buffer& positions, const RopeTable& table, const Buffer& out,
                   const Stream& stream);

}  // namespace mlxn
