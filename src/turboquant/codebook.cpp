#include "turboquant/codebook.h"

#include <array>
#include <string>

#include "mlxn/core/error.h"
#include "portable/tq_codebooks.h"
#include "portable/turboquant_codebook.h"

namespace mlxn::tq {

bool supported_bits(int bits) { return Bits::contains(bits); }
bool supported_dim(int dim) { return Dims::contains(dim); }

void require_bits(int bits, const char* op) {
  if (!supported_bits(bits)) {
    throw Error(op, "TurboQuant bits " + std::to_string(bits) +
                        " unsupported (supported: " + Bits::names() + ")");
  }
}

void require_dim(int dim, const char* op) {
  if (!supported_dim(dim)) {
    throw Error(op, "TurboQuant head_dim " + std::to_string(dim) +
                        " unsupported (supported: " + Dims::names() + ")");
  }
}

namespace {

Codebook build(int bits) {
  Codebook book;
  book.bits = bits;
  const int levels = 1 << bits;
  const float* magnitudes = tq_magnitudes(bits);
  book.centroids.resize(static_cast<size_t>(levels));
  for (int c = 0; c < levels; ++c)
    book.centroids[static_cast<size_t>(c)] = centroid(magnitudes, bits, c);
  book.boundaries.resize(static_cast<size_t>(levels - 1));
  for (int k = 0; k + 1 < levels; ++k)
    book.boundaries[static_cast<size_t>(k)] = boundary(magnitudes, bits, k);
  return book;
}

}  // namespace

const Codebook& codebook(int bits) {
  require_bits(bits, "turboquant");
  static const std::array<Codebook, 9> books = [] {
    std::array<Codebook, 9> all;
    for (int b : {2, 3, 4, 5, 6, 8}) all[static_cast<size_t>(b)] = build(b);
    return all;
  }();
  return books[static_cast<size_t>(bits)];
}

}  // namespace mlxn::tq
