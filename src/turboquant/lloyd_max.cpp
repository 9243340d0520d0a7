#include "turboquant/lloyd_max.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>

#include "mlxn/core/error.h"

namespace mlxn::tq {

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr double kInvSqrt2 = 0.70710678118654752440;
constexpr double kInvSqrt2Pi = 0.39894228040143267794;
// Newton converges in a handful of steps; plain Lloyd steps are only a fallback.
constexpr int kMaxIterations = 10000;

double pdf(double x) { return std::isinf(x) ? 0.0 : kInvSqrt2Pi * std::exp(-0.5 * x * x); }
double x_pdf(double x) { return std::isinf(x) ? 0.0 : x * pdf(x); }

// P(X > x) and P(X < x) through erfc, accurate in the far tails where 1 - Phi(x) would cancel.
double upper_tail(double x) { return 0.5 * std::erfc(x * kInvSqrt2); }
double lower_tail(double x) { return 0.5 * std::erfc(-x * kInvSqrt2); }

// P(a < X < b), always as a difference of the two smaller tail probabilities.
double probability(double a, double b) {
  if (a >= 0.0) return upper_tail(a) - upper_tail(b);
  if (b <= 0.0) return lower_tail(b) - lower_tail(a);
  return 1.0 - upper_tail(b) - lower_tail(a);
}

// The moments of N(0, 1) restricted to (a, b): integrals of phi, x phi and x^2 phi.
struct Cell {
  double p, s1, s2;
};

Cell cell(double a, double b) {
  const double p = probability(a, b);
  // x phi(x) = -phi'(x) and x^2 phi(x) = (Phi(x) - x phi(x))'.
  return {p, pdf(a) - pdf(b), p + x_pdf(a) - x_pdf(b)};
}

// Decision boundaries of a quantizer: -inf, the midpoints of adjacent centroids, +inf.
std::vector<double> boundaries(const std::vector<double>& c) {
  std::vector<double> t(c.size() + 1);
  t.front() = -kInf;
  t.back() = kInf;
  for (size_t k = 1; k < c.size(); ++k) t[k] = 0.5 * (c[k - 1] + c[k]);
  return t;
}

// One application of Lloyd's map T (centroid k <- conditional mean of cell k) with its
// Jacobian, which is tridiagonal: cell k moves only with centroids k-1, k and k+1.
struct LloydMap {
  std::vector<double> next;          // T(c)
  std::vector<double> lower, upper;  // d next_k / d c_{k-1}, d next_k / d c_{k+1}
};

LloydMap lloyd_map(const std::vector<double>& c) {
  const std::vector<double> t = boundaries(c);
  const size_t n = c.size();
  LloydMap m{std::vector<double>(n), std::vector<double>(n), std::vector<double>(n)};
  for (size_t k = 0; k < n; ++k) {
    const double a = t[k], b = t[k + 1];
    const Cell q = cell(a, b);
    const double mean = q.s1 / q.p;
    m.next[k] = mean;
    // d mean / d a = phi(a) (mean - a) / p, d mean / d b = phi(b) (b - mean) / p; each
    // boundary is the average of two centroids, hence the halves.
    m.lower[k] = std::isinf(a) ? 0.0 : 0.5 * pdf(a) * (mean - a) / q.p;
    m.upper[k] = std::isinf(b) ? 0.0 : 0.5 * pdf(b) * (b - mean) / q.p;
  }
  return m;
}

// Solves (I - J) d = r for the tridiagonal Jacobian J of `m` (Thomas algorithm). I - J is
// diagonally dominant here (the Lloyd map of a log-concave density is a contraction).
std::vector<double> newton_step(const LloydMap& m, const std::vector<double>& r) {
  const size_t n = r.size();
  std::vector<double> sup(n), rhs(n), d(n);
  for (size_t k = 0; k < n; ++k) {
    const double sub = -m.lower[k];
    double diag = 1.0 - m.lower[k] - m.upper[k];
    double right = r[k];
    if (k > 0) {
      diag -= sub * sup[k - 1];
      right -= sub * rhs[k - 1];
    }
    sup[k] = -m.upper[k] / diag;
    rhs[k] = right / diag;
  }
  for (size_t k = n; k-- > 0;) d[k] = rhs[k] - (k + 1 < n ? sup[k] * d[k + 1] : 0.0);
  return d;
}

// Averages c_k with -c_{n-1-k}: the optimum is symmetric, and rounding must not tilt it.
void symmetrize(std::vector<double>& c) {
  const size_t n = c.size();
  for (size_t k = 0; k < n / 2; ++k) {
    const double v = 0.5 * (c[n - 1 - k] - c[k]);
    c[k] = -v;
    c[n - 1 - k] = v;
  }
}

bool strictly_increasing(const std::vector<double>& c) {
  return std::adjacent_find(c.begin(), c.end(), std::greater_equal<double>()) == c.end();
}

double max_abs_difference(const std::vector<double>& a, const std::vector<double>& b) {
  double m = 0.0;
  for (size_t k = 0; k < a.size(); ++k) m = std::max(m, std::abs(a[k] - b[k]));
  return m;
}

// x with P(X < x) = p, by bisection (only the starting point depends on it).
double normal_quantile(double p) {
  double lo = -40.0, hi = 40.0;
  for (int i = 0; i < 200 && hi - lo > 1e-15; ++i) {
    const double mid = 0.5 * (lo + hi);
    (lower_tail(mid) < p ? lo : hi) = mid;
  }
  return 0.5 * (lo + hi);
}

}  // namespace

LloydMax lloyd_max_gaussian(int bits, double tolerance) {
  if (bits != 2 && bits != 3 && bits != 4 && bits != 5 && bits != 6 && bits != 8) {
    throw Error("turboquant",
                "unsupported bit width " + std::to_string(bits) + "; supported: 2, 3, 4, 5, 6, 8");
  }
  if (!(tolerance > 0.0) || std::isinf(tolerance)) {
    throw Error("turboquant", "Lloyd-Max tolerance must be positive and finite, got " +
                                  std::to_string(tolerance));
  }
  const size_t n = size_t{1} << bits;

  // Start at the high-resolution optimum (Panter-Dite: point density ~ phi^(1/3), i.e. the
  // quantiles of N(0, 3)), already close for every b, so Newton's method converges at once.
  std::vector<double> c(n);
  for (size_t k = 0; k < n; ++k) {
    c[k] =
        std::sqrt(3.0) * normal_quantile((static_cast<double>(k) + 0.5) / static_cast<double>(n));
  }
  symmetrize(c);

  // Solve the fixed point c = T(c) of Lloyd's map with Newton's method. A Newton step is taken
  // only if it keeps the centroids ordered and lowers the residual |T(c) - c|; otherwise a plain
  // Lloyd step (which always converges, slowly) is taken instead.
  LloydMap map = lloyd_map(c);
  for (int iteration = 1; iteration <= kMaxIterations; ++iteration) {
    const double residual = max_abs_difference(map.next, c);
    std::vector<double> r(n);
    for (size_t k = 0; k < n; ++k) r[k] = map.next[k] - c[k];
    std::vector<double> d = newton_step(map, r);
    std::vector<double> candidate(n);
    for (size_t k = 0; k < n; ++k) candidate[k] = c[k] + d[k];
    symmetrize(candidate);
    bool accepted = false;
    if (strictly_increasing(candidate)) {
      LloydMap candidate_map = lloyd_map(candidate);
      if (max_abs_difference(candidate_map.next, candidate) < residual) {
        map = std::move(candidate_map);
        accepted = true;
      }
    }
    if (!accepted) {
      candidate = map.next;
      symmetrize(candidate);
      map = lloyd_map(candidate);
    }
    const double change = max_abs_difference(candidate, c);
    c = std::move(candidate);
    if (change < tolerance) {
      LloydMax result{std::move(c), 0.0, iteration};
      const std::vector<double> t = boundaries(result.centroids);
      // Per cell: E[X^2] - 2 c E[X] + c^2 P, summed from the small outer cells inwards.
      for (size_t k = 0; k < n; ++k) {
        const double ck = result.centroids[k];
        const Cell q = cell(t[k], t[k + 1]);
        result.mse += q.s2 - 2.0 * ck * q.s1 + ck * ck * q.p;
      }
      return result;
    }
  }
  throw Error("turboquant", "Lloyd-Max for " + std::to_string(bits) + " bits did not converge to " +
                                std::to_string(tolerance) + " in " +
                                std::to_string(kMaxIterations) + " iterations");
}

}  // namespace mlxn::tq
