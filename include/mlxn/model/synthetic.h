// Synthetic models for benchmarks and smoke runs: the shapes of published checkpoints (their
// config.json values, read by from_hf_config so every architecture rule applies) with random
// weights in MLX's affine format, built on the device without any file.
#pragma once

#include <string>
#include <vector>

#include "mlxn/core/stream.h"
#include "mlxn/model/config.h"
#include "mlxn/model/weights.h"

namespace mlxn::model {

// "tiny" (a small llama: hidden 256, 4 layers, vocab 1024, quick enough for the CPU), then
// "llama3_8b", "qwen3_8b" and "gemma3_12b" (the public configs of Llama-3-8B, Qwen3-8B and
// Gemma-3-12B, trimmed to what the forward pass reads).
std::vector<std::string> synthetic_model_names();

// The config of a name from synthetic_model_names(). Throws Error("[model] ...") listing the
// names for any other.
ModelConfig synthetic_config(const std::string& name);

// Random weights for `config` on the stream's device: every matrix MLX affine with `bits` (2, 3,
// 4, 5, 6 or 8) and `group_size` (32, 64 or 128, dividing every matrix's input size), its values
// normal with standard deviation 0.02 (scales like a trained layer's); norms are the identity
// (ones, or zeros for Gemma's 1 + w) and biases zero. Deterministic: one 64-row block per input
// size is quantized on the CPU from fixed seeds and repeated down the rows on the device, so
// building a model of 8B parameters takes seconds. A tied head is the embedding itself.
ModelWeights random_mlx_weights(const ModelConfig& config, int bits, int group_size,
                                const Stream& stream);

}  // namespace mlxn::model
