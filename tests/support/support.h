// Shared test support: device selection, seeded random buffers, output poisoning, and
// comparisons whose failures show the worst element, its index and a few pairs.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>
#include <vector>

#include "mlxn/mlxn.h"

// Skips the current test, with the reason, when no CUDA device is usable.
#define MLXN_REQUIRE_CUDA()                                                    \
  do {                                                                         \
    if (::mlxn::cuda_device_count() == 0)                                      \
      GTEST_SKIP() << "no CUDA device: " << ::mlxn::cuda_unavailable_reason(); \
  } while (0)

namespace mlxn::test {

// The CPU stream most tests use.
const Stream& cpu_stream();

// A CPU and a GPU stream for tests that compare the two backends.
struct CpuGpu {
  Stream cpu{Device::cpu()};
  Stream gpu{Device::cuda(0)};
  // A GPU copy of a (CPU) buffer: the same bytes on both devices.
  Buffer to_gpu(const Buffer& host) const;
  // A 1-D i32 buffer on the stream's device.
  static Buffer i32(const std::vector<int32_t>& values, const Stream& stream);
};

// A contiguous buffer of `dtype` filled with seeded normal (or uniform) values.
Buffer random_buffer(const Shape& shape, DType dtype, uint64_t seed, const Stream& stream,
                     Distribution distribution = Distribution::normal);

// Overwrites every element with a value no op produces by accident (NaN for floats, a sentinel
// for integers), so an element an op failed to write shows up in the comparison.
void poison(const Buffer& buffer, const Stream& stream);

// Element values as f64 in row-major order of the view (any dtype, any strides, any device).
std::vector<double> to_f64(const Buffer& buffer, const Stream& stream);
// Raw element bits in row-major order (elements widened to u64).
std::vector<uint64_t> to_bits(const Buffer& buffer, const Stream& stream);

// Rounds an exact (f64) value to `dtype` the way the library stores it, back as f64.
double round_to(double value, DType dtype);

// Unit roundoff (half an ulp at 1) and smallest normal of a float dtype; 0 for integers.
double unit_roundoff(DType dtype);
double smallest_normal(DType dtype);

struct Tolerance {
  double atol;
  double rtol;
};
// For a result stored in `out` after an f32 computation with `reduction_length` terms: the
// output rounding (two units in the last place) plus sqrt(n) f32 roundings, and an absolute
// floor of the dtype's smallest normal.
Tolerance tolerance_for(DType out, int64_t reduction_length = 1);

// |actual - expected| <= atol + rtol * |expected| everywhere; NaN only matches NaN.
::testing::AssertionResult all_close(const std::vector<double>& actual,
                                     const std::vector<double>& expected, Tolerance tol,
                                     const Shape& shape);
// |actual - expected| <= bound[i] for every element i (error bounds that vary by element);
// NaN only matches NaN, an infinity only itself.
::testing::AssertionResult all_within(const std::vector<double>& actual,
                                      const std::vector<double>& expected,
                                      const std::vector<double>& bound, const Shape& shape);
// Same bits everywhere; NaN matches any NaN (payloads are not part of the contract).
::testing::AssertionResult same_bits(const Buffer& actual, const Buffer& expected,
                                     const Stream& actual_stream, const Stream& expected_stream);

// Pearson's chi-square statistic of `observed` counts against `expected` probabilities (bins
// with an expected count below 5 are pooled into one), and the statistic's number of degrees of
// freedom. A sampler passes when the statistic stays below chi_square_bound(df).
struct ChiSquare {
  double statistic;
  int df;
};
ChiSquare chi_square(const std::vector<int64_t>& observed, const std::vector<double>& expected);
// The 1 - 1e-6 quantile of the chi-square distribution (Wilson-Hilferty approximation, within
// a percent or so for df >= 3): a correct sampler exceeds it once in a million runs.
double chi_square_bound(int df);

// The message of the mlxn::Error that fn() throws, or "no error".
template <class Fn>
std::string error_of(Fn&& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}

// Succeeds when fn throws mlxn::Error whose message starts with `prefix` and contains every one
// of `parts`.
template <class Fn>
::testing::AssertionResult throws_error(Fn&& fn, std::string_view prefix,
                                        std::initializer_list<std::string_view> parts = {}) {
  try {
    fn();
  } catch (const Error& e) {
    const std::string message = e.what();
    if (!message.starts_with(prefix)) {
      return ::testing::AssertionFailure()
             << "message \"" << message << "\" does not start with \"" << prefix << "\"";
    }
    for (std::string_view part : parts) {
      if (message.find(part) == std::string::npos) {
        return ::testing::AssertionFailure()
               << "message \"" << message << "\" does not contain \"" << part << "\"";
      }
    }
    return ::testing::AssertionSuccess();
  } catch (const std::exception& e) {
    return ::testing::AssertionFailure() << "threw a non-mlxn exception: " << e.what();
  }
  return ::testing::AssertionFailure() << "did not throw";
}

}  // namespace mlxn::test
