// `mlxn inspect PATH`: what a model checkpoint is, without loading its weights: the validated
// model description and the tensors by dtype (safetensors) or GGML type (GGUF).
#pragma once

#include <string>

namespace mlxn::cli {

// The report for a model directory (config.json + safetensors) or a .gguf file. Throws the
// library's Error for an unreadable or unsupported checkpoint.
std::string inspect_report(const std::string& path);

// Prints the report; returns the exit code.
int run_inspect(const std::string& path);

}  // namespace mlxn::cli
