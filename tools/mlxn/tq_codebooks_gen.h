// `mlxn tq-codebooks`: prints src/portable/tq_codebooks.h, the shipped TurboQuant codebooks,
// from the Lloyd-Max generator (src/turboquant/lloyd_max.h).
#pragma once

namespace mlxn::cli {

// Writes the header to stdout; returns the process exit status (0).
int print_tq_codebook_header();

}  // namespace mlxn::cli
