#include "support/support.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <sstream>

namespace mlxn::test {

namespace {

// Contiguous host copy of any view, in row-major order of the view.
std::vector<uint8_t> host_bytes(const Buffer& buffer, const Stream& stream) {
  Buffer contiguous = buffer;
  if (!buffer.is_contiguous()) {
    contiguous = Buffer::empty(buffer.shape(), buffer.dtype(), stream);
    copy(buffer, contiguous, stream);
  }
  std::vector<uint8_t> bytes(static_cast<size_t>(contiguous.nbytes()));
  contiguous.copy_to_host(bytes.data(), contiguous.nbytes(), stream);
  return bytes;
}

double decode(const uint8_t* p, DType dtype) {
  auto load = [p](auto zero) {
    decltype(zero) v;
    std::memcpy(&v, p, sizeof v);
    return v;
  };
  switch (dtype) {
    case DType::f32:
      return load(float{});
    case DType::f16:
      return float_bits::f16_to_f32(load(uint16_t{}));
    case DType::bf16:
      return float_bits::bf16_to_f32(load(uint16_t{}));
    case DType::f8e4m3:
      return float_bits::f8e4m3_to_f32(load(uint8_t{}));
    case DType::f8e5m2:
      return float_bits::f8e5m2_to_f32(load(uint8_t{}));
    case DType::i8:
      return load(int8_t{});
    case DType::u8:
      return load(uint8_t{});
    case DType::i32:
      return load(int32_t{});
    case DType::u32:
      return load(uint32_t{});
    case DType::i64:
      return static_cast<double>(load(int64_t{}));
  }
  return 0;
}

std::string index_str(int64_t linear, const Shape& shape) {
  std::vector<int64_t> index(shape.size());
  for (size_t d = shape.size(); d-- > 0;) {
    index[d] = shape[d] ? linear % shape[d] : 0;
    linear = shape[d] ? linear / shape[d] : 0;
  }
  return shape_str(index);
}

}  // namespace

double unit_roundoff(DType d) {
  switch (d) {
    case DType::f32:
      return 0x1p-24;
    case DType::f16:
      return 0x1p-11;
    case DType::bf16:
      return 0x1p-8;
    case DType::f8e4m3:
      return 0x1p-4;
    case DType::f8e5m2:
      return 0x1p-3;
    default:
      return 0.0;
  }
}

double smallest_normal(DType d) {
  switch (d) {
    case DType::f32:
      return 0x1p-126;
    case DType::f16:
      return 0x1p-14;
    case DType::bf16:
      return 0x1p-126;
    case DType::f8e4m3:
      return 0x1p-6;
    case DType::f8e5m2:
      return 0x1p-14;
    default:
      return 0.0;
  }
}

const Stream& cpu_stream() {
  static const Stream s(Device::cpu());
  return s;
}

Buffer CpuGpu::to_gpu(const Buffer& host) const {
  Buffer b = Buffer::empty(host.shape(), host.dtype(), gpu);
  copy(host, b, gpu);
  return b;
}

Buffer CpuGpu::i32(const std::vector<int32_t>& values, const Stream& stream) {
  return Buffer::from_host(std::span<const int32_t>(values), {static_cast<int64_t>(values.size())},
                           DType::i32, stream);
}

Buffer random_buffer(const Shape& shape, DType dtype, uint64_t seed, const Stream& stream,
                     Distribution distribution) {
  Buffer b = Buffer::empty(shape, dtype, stream);
  RandomSpec spec{distribution, seed, distribution == Distribution::uniform ? -1.0f : 0.0f, 1.0f};
  fill_random(b, spec, stream);
  return b;
}

void poison(const Buffer& buffer, const Stream& stream) {
  if (is_floating(buffer.dtype())) {
    fill(buffer, std::nan(""), stream);
  } else {
    fill(buffer, buffer.dtype() == DType::u8 || buffer.dtype() == DType::u32 ? 0xA5 : -91, stream);
  }
}

std::vector<double> to_f64(const Buffer& buffer, const Stream& stream) {
  const std::vector<uint8_t> bytes = host_bytes(buffer, stream);
  const auto size = static_cast<size_t>(buffer.element_size());
  std::vector<double> values(bytes.size() / size);
  for (size_t i = 0; i < values.size(); ++i)
    values[i] = decode(bytes.data() + i * size, buffer.dtype());
  return values;
}

std::vector<uint64_t> to_bits(const Buffer& buffer, const Stream& stream) {
  const std::vector<uint8_t> bytes = host_bytes(buffer, stream);
  const auto size = static_cast<size_t>(buffer.element_size());
  std::vector<uint64_t> bits(bytes.size() / size, 0);
  for (size_t i = 0; i < bits.size(); ++i) std::memcpy(&bits[i], bytes.data() + i * size, size);
  return bits;
}

double round_to(double value, DType dtype) {
  const float f = static_cast<float>(value);
  switch (dtype) {
    case DType::f32:
      return f;
    case DType::f16:
      return float_bits::f16_to_f32(float_bits::f32_to_f16(f));
    case DType::bf16:
      return float_bits::bf16_to_f32(float_bits::f32_to_bf16(f));
    case DType::f8e4m3:
      return float_bits::f8e4m3_to_f32(float_bits::f32_to_f8e4m3(f));
    case DType::f8e5m2:
      return float_bits::f8e5m2_to_f32(float_bits::f32_to_f8e5m2(f));
    default:
      return value;
  }
}

Tolerance tolerance_for(DType out, int64_t reduction_length) {
  const double n = static_cast<double>(std::max<int64_t>(reduction_length, 1));
  return {smallest_normal(out), 2.0 * unit_roundoff(out) + std::sqrt(n) * 0x1p-24};
}

::testing::AssertionResult all_close(const std::vector<double>& actual,
                                     const std::vector<double>& expected, Tolerance tol,
                                     const Shape& shape) {
  std::vector<double> bound(expected.size());
  for (size_t i = 0; i < expected.size(); ++i)
    bound[i] = tol.atol + tol.rtol * std::fabs(expected[i]);
  return all_within(actual, expected, bound, shape);
}

::testing::AssertionResult all_within(const std::vector<double>& actual,
                                      const std::vector<double>& expected,
                                      const std::vector<double>& bound, const Shape& shape) {
  if (actual.size() != expected.size() || bound.size() != expected.size()) {
    return ::testing::AssertionFailure() << "size " << actual.size() << " vs expected "
                                         << expected.size() << " and " << bound.size() << " bounds";
  }
  int64_t bad = 0, worst = -1;
  double worst_ratio = 0;
  for (size_t i = 0; i < actual.size(); ++i) {
    const double a = actual[i], e = expected[i];
    double ratio;
    if (std::isnan(e) || std::isnan(a)) {
      ratio = std::isnan(e) && std::isnan(a) ? 0.0 : INFINITY;
    } else if (std::isinf(e) || std::isinf(a)) {
      ratio = a == e ? 0.0 : INFINITY;
    } else {
      ratio = a == e ? 0.0 : std::fabs(a - e) / bound[i];
    }
    if (ratio > 1.0) ++bad;
    if (ratio > worst_ratio || (worst < 0 && ratio > 1.0)) {
      worst_ratio = ratio;
      worst = static_cast<int64_t>(i);
    }
  }
  if (bad == 0) return ::testing::AssertionSuccess();
  std::ostringstream os;
  os.precision(9);
  os << bad << " of " << actual.size() << " elements outside their bounds; worst at "
     << index_str(worst, shape) << ": got " << actual[worst] << ", expected " << expected[worst]
     << ", bound " << bound[worst] << " (" << worst_ratio << "x). First pairs:";
  for (size_t i = 0; i < std::min<size_t>(actual.size(), 4); ++i)
    os << " (" << actual[i] << ", " << expected[i] << ")";
  return ::testing::AssertionFailure() << os.str();
}

::testing::AssertionResult same_bits(const Buffer& actual, const Buffer& expected,
                                     const Stream& actual_stream, const Stream& expected_stream) {
  if (actual.dtype() != expected.dtype() || actual.shape() != expected.shape()) {
    return ::testing::AssertionFailure() << actual.describe() << " vs " << expected.describe();
  }
  const auto a = to_bits(actual, actual_stream);
  const auto e = to_bits(expected, expected_stream);
  const auto av = to_f64(actual, actual_stream);
  const auto ev = to_f64(expected, expected_stream);
  int64_t bad = 0, first = -1;
  for (size_t i = 0; i < a.size(); ++i) {
    const bool both_nan = is_floating(actual.dtype()) && std::isnan(av[i]) && std::isnan(ev[i]);
    if (a[i] != e[i] && !both_nan) {
      if (first < 0) first = static_cast<int64_t>(i);
      ++bad;
    }
  }
  if (bad == 0) return ::testing::AssertionSuccess();
  std::ostringstream os;
  os.precision(9);
  os << bad << " of " << a.size() << " elements differ in bits; first at "
     << index_str(first, actual.shape()) << ": got 0x" << std::hex << a[first] << " (" << av[first]
     << "), expected 0x" << e[first] << " (" << ev[first] << ")";
  return ::testing::AssertionFailure() << os.str();
}

ChiSquare chi_square(const std::vector<int64_t>& observed, const std::vector<double>& expected) {
  double n = 0;
  for (int64_t o : observed) n += static_cast<double>(o);
  double stat = 0, pooled_o = 0, pooled_e = 0;
  int bins = 0;
  for (size_t i = 0; i < observed.size(); ++i) {
    const double e = expected[i] * n;
    if (e < 5) {
      pooled_o += static_cast<double>(observed[i]);
      pooled_e += e;
      continue;
    }
    stat += (static_cast<double>(observed[i]) - e) * (static_cast<double>(observed[i]) - e) / e;
    ++bins;
  }
  if (pooled_e > 0 || pooled_o > 0) {  // draws where none may fall make the statistic huge
    stat += (pooled_o - pooled_e) * (pooled_o - pooled_e) / std::max(pooled_e, 1e-300);
    ++bins;
  }
  return {stat, std::max(bins - 1, 1)};
}

double chi_square_bound(int df) {
  const double z = 4.753;  // standard normal 1 - 1e-6 quantile
  const double k = static_cast<double>(df);
  const double t = 1 - 2 / (9 * k) + z * std::sqrt(2 / (9 * k));
  return k * t * t * t;
}

}  // namespace mlxn::test
