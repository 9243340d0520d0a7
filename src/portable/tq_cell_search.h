// Constant-time code search for the bulk TurboQuant encoder. The reference's rule, "the code is
// the number of decision boundaries strictly below u", costs b - 1 dependent steps as a binary
// search. Here u is first mapped to one of `cells` + 1 uniform cells; the cells are narrower than
// the smallest gap between boundaries, so a cell holds at most one boundary and
//   code(u) = entry.code_below + (u > entry.boundary)
// with one table read and one compare. The mapping
// is two correctly rounded fmas and a clamp, so it is monotone and identical on host and device;
// the entries are derived from that exact mapping (never from real-number cell edges), which makes
// the lookup equal to the reference for every float u, not just for most. A CPU test checks that
// for all bit widths.
#pragma once

#include "portable/host_device.h"
#include "portable/turboquant_codebook.h"

namespace mlxn::tq {

struct CellGrid {
  float scale;  // 1 / (2R): the grid covers u in [-R, R], every boundary inside
  int cells;    // cells + 1 entries: index `cells` holds u >= R
};

// R = 4 covers the largest boundary up to 6 bits (3.49), R = 8 the 8-bit one (4.40); 2^(b+3)
// cells make each at most half the smallest boundary gap (8 bits: 0.0078 vs 0.0169).
MLXN_HD constexpr CellGrid cell_grid(int bits) {
  return bits == 8 ? CellGrid{0.0625f, 2048} : CellGrid{0.125f, 8 << bits};
}

// Monotone non-decreasing in u, in [0, grid.cells] for every float (NaN included).
MLXN_HD int cell_of(float u, CellGrid grid) {
  // Clamped to [0, 1] with NaN to 0: on the GPU the fma's own saturate modifier (fma.rn.sat).
#if defined(__CUDA_ARCH__)
  const float t = __saturatef(portable::fma_rn(u, grid.scale, 0.5f));
#else
  float t = portable::fma_rn(u, grid.scale, 0.5f);
  t = t > 1.0f ? 1.0f : (t >= 0.0f ? t : 0.0f);
#endif
  // 1.5 * 2^23 pushes t * cells (<= 2^11) into the low mantissa bits, rounded to an integer.
  constexpr float kMagic = 12582912.0f;
  return static_cast<int>(
      portable::float_to_bits(portable::fma_rn(t, static_cast<float>(grid.cells), kMagic)) -
      portable::float_to_bits(kMagic));
}

struct CellEntry {
  float boundary;  // the one boundary inside the cell, or +Inf (the compare is then always false)
  int code_below;  // the code of the cell's smallest u
};

// The smallest float above a finite f.
MLXN_HD float next_up(float f) {
  const uint32_t bits = portable::float_to_bits(f);
  if ((bits & 0x7fffffffu) == 0) return portable::bits_to_float(1u);  // +-0 -> smallest subnormal
  return portable::bits_to_float(bits >> 31 ? bits - 1 : bits + 1);
}

// Entry `cell` of the table for a b-bit book. Boundary k is crossed between boundary(k) and
// next_up(boundary(k)) (u on the boundary takes the lower code). Every boundary in an earlier
// cell is below all of this cell's u; the first boundary not in an earlier cell, if it lies in
// this cell together with its next_up, is the one compare left. Independent per cell, so GPU
// threads build a table in parallel.
MLXN_HD CellEntry cell_entry(const float* magnitudes, int bits, CellGrid grid, int cell) {
  const int boundaries = (1 << bits) - 1;
  int lo = 0, hi = boundaries;  // first k with cell_of(boundary k) >= cell
  while (lo < hi) {
    const int mid = (lo + hi) / 2;
    if (cell_of(boundary(magnitudes, bits, mid), grid) < cell) {
      lo = mid + 1;
    } else {
      hi = mid;
    }
  }
  CellEntry e{portable::bits_to_float(0x7f800000u), lo};
  if (lo < boundaries) {
    const float b = boundary(magnitudes, bits, lo);
    if (cell_of(b, grid) == cell && cell_of(next_up(b), grid) == cell) e.boundary = b;
  }
  return e;
}

}  // namespace mlxn::tq
