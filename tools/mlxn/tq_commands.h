// The CLI's TurboQuant subcommands: tq-eval (quality table, optional GPU encode speed) and
// tq encode / tq decode (raw little-endian float32 vectors <-> the documented payload layout).
#pragma once

#include <string>

namespace mlxn::cli {

struct TqEvalOptions {
  bool quick = false;  // D = 128 only, 2,000 vectors per case: a few seconds on one core
  int64_t vectors = 10000;
};
int run_tq_eval(const TqEvalOptions& options);

// OUT holds N payload rows (dim * bits / 8 bytes each) followed by N fp16 scales (little-endian).
int run_tq_encode(int bits, int dim, const std::string& in_path, const std::string& out_path);
// Writes N * dim float32 values, original domain unless `rotated`.
int run_tq_decode(int bits, int dim, const std::string& in_path, const std::string& out_path,
                  bool rotated);

}  // namespace mlxn::cli
