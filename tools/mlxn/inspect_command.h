// `mlxn inspect PATH`: what a model checkpoint is, without loading its weights: the validated
// model description, the KV cache's bytes per token for each cache type, and the tensors by dtype
// (safetensors) or GGML type (GGUF).
#pragma once

#include <string>

#include "mlxn/model/config.h"

namespace mlxn::cli {

// The report for a model directory (config.json + safetensors) or a .gguf file. Throws the
// library's Error for an unreadable or unsupported checkpoint.
std::string inspect_report(const std::string& path);

// The KV cache's bytes per token for each cache type (bf16, fp8, tq8 .. tq2) on the full-attention
// layers, and the fixed ring a sequence holds on the sliding-window layers, from the cache's own
// sizing (KvCache::required_bytes). Part of inspect_report.
std::string kv_cache_report(const model::ModelConfig& config);

// Prints the report; returns the exit code.
int run_inspect(const std::string& path);

}  // namespace mlxn::cli
