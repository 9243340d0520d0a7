#include "mlxn/ops/weights.h"

#include <cmath>
#include <string>
#include <vector>

#include "backend/cpu/cpu_types.h"
#include "backend/cpu/matmul.h"
#include "formats/ggml.h"
#include "formats/mlx_affine.h"
#include "formats/mlx_affine_quantize.h"
#include "matmul/matmul_job.h"
#include "mlxn/core/device_errors.h"
#include "mlxn/core/dispatch.h"
#include "mlxn/ops/memory.h"
#include "ops/backend.h"
#if MLXN_WITH_CUDA
#include "backend/cuda/matmul/matmul.h"
#endif

namespace mlxn {

namespace {

void require_2d(const char* op, const Buffer& b, const char* name) {
  if (b.rank() != 2) throw Error(op, std::string(name) + " must be 2-D, got " + b.describe());
  b.require_contiguous(op, name);
}

bool is_ggml(WeightFormat f) {
  return f == WeightFormat::q4_0 || f == WeightFormat::q8_0 || f == WeightFormat::q4_k ||
         f == WeightFormat::q5_k || f == WeightFormat::q6_k;
}

}  // namespace

std::string_view weight_format_name(WeightFormat format) {
  switch (format) {
    case WeightFormat::dense:
      return "dense";
    case WeightFormat::mlx_affine:
      return "mlx_affine";
    case WeightFormat::q4_0:
      return "q4_0";
    case WeightFormat::q8_0:
      return "q8_0";
    case WeightFormat::q4_k:
      return "q4_k";
    case WeightFormat::q5_k:
      return "q5_k";
    case WeightFormat::q6_k:
      return "q6_k";
  }
  return "unknown";
}

int64_t ggml_block_elements(WeightFormat format) {
  switch (format) {
    case WeightFormat::q4_0:
    case WeightFormat::q8_0:
      return formats::kQK;
    case WeightFormat::q4_k:
    case WeightFormat::q5_k:
    case WeightFormat::q6_k:
      return formats::kQKK;
    default:
      return 1;
  }
}

int64_t ggml_block_bytes(WeightFormat format) {
  switch (format) {
    case WeightFormat::q4_0:
      return sizeof(formats::BlockQ4_0);
    case WeightFormat::q8_0:
      return sizeof(formats::BlockQ8_0);
    case WeightFormat::q4_k:
      return sizeof(formats::BlockQ4_K);
    case WeightFormat::q5_k:
      return sizeof(formats::BlockQ5_K);
    case WeightFormat::q6_k:
      return sizeof(formats::BlockQ6_K);
    default:
      throw Error("weight", std::string(weight_format_name(format)) + " has no GGML block");
  }
}

Weight Weight::dense(Buffer w) {
  const char* op = "weight";
  if (!w.defined()) throw Error(op, "dense weight is an undefined buffer");
  require_2d(op, w, "dense weight");
  ops_detail::require_float(op, w, "dense weight");
  if (w.dim(0) == 0 || w.dim(1) == 0) throw Error(op, "dense weight " + w.describe() + " is empty");
  Weight r;
  r.format_ = WeightFormat::dense;
  r.out_features_ = w.dim(0);
  r.in_features_ = w.dim(1);
  r.data_ = std::move(w);
  return r;
}

Weight Weight::mlx_affine(Buffer packed, Buffer scales, Buffer biases, int bits, int group_size) {
  const char* op = "weight";
  if (!formats::mlx_affine_bits_supported(bits)) {
    throw Error(op, "mlx_affine bits " + std::to_string(bits) +
                        " unsupported (supported: 2, 3, 4, 5, 6, 8)");
  }
  if (!formats::mlx_affine_group_supported(group_size)) {
    throw Error(op, "mlx_affine group_size " + std::to_string(group_size) +
                        " unsupported (supported: 32, 64, 128)");
  }
  if (!packed.defined() || !scales.defined() || !biases.defined()) {
    throw Error(op, "mlx_affine needs packed codes, scales and biases");
  }
  require_2d(op, packed, "packed");
  require_2d(op, scales, "scales");
  require_2d(op, biases, "biases");
  packed.require_dtype(DType::u32, op, "packed");
  ops_detail::require_float(op, scales, "scales");
  if (biases.dtype() != scales.dtype() || biases.shape() != scales.shape()) {
    throw Error(op, "biases " + biases.describe() + " must match scales " + scales.describe());
  }
  const int64_t n = packed.dim(0), k = packed.dim(1) * 32 / bits;
  if (n == 0 || k == 0 || packed.dim(1) * 32 % bits != 0 || k % group_size != 0) {
    throw Error(op, "packed " + packed.describe() + " does not hold whole groups of " +
                        std::to_string(group_size) + " " + std::to_string(bits) + "-bit codes");
  }
  if (scales.dim(0) != n || scales.dim(1) != k / group_size) {
    throw Error(op, "scales must be [" + std::to_string(n) + ", " + std::to_string(k / group_size) +
                        "] for packed " + packed.describe() + " at " + std::to_string(bits) +
                        " bits, group " + std::to_string(group_size) + "; got " +
                        scales.describe());
  }
  if (packed.device() != scales.device() || packed.device() != biases.device()) {
    throw Error(op, "packed, scales and biases must be on one device");
  }
  Weight r;
  r.format_ = WeightFormat::mlx_affine;
  r.out_features_ = n;
  r.in_features_ = k;
  r.bits_ = bits;
  r.group_size_ = group_size;
  r.data_ = std::move(packed);
  r.scales_ = std::move(scales);
  r.biases_ = std::move(biases);
  return r;
}

Weight Weight::ggml(WeightFormat format, Buffer blocks, int64_t in_features) {
  const char* op = "weight";
  if (!is_ggml(format)) {
    throw Error(op, std::string(weight_format_name(format)) + " is not a GGML block format");
  }
  if (!blocks.defined()) throw Error(op, "GGML weight is an undefined buffer");
  require_2d(op, blocks, "blocks");
  blocks.require_dtype(DType::u8, op, "blocks");
  const int64_t elems = ggml_block_elements(format), bytes = ggml_block_bytes(format);
  if (in_features <= 0 || in_features % elems != 0) {
    throw Error(op, std::string(weight_format_name(format)) + " in_features " +
                        std::to_string(in_features) + " must be a positive multiple of " +
                        std::to_string(elems));
  }
  if (blocks.dim(0) == 0 || blocks.dim(1) != in_features / elems * bytes) {
    throw Error(op, std::string(weight_format_name(format)) + " rows of " +
                        std::to_string(in_features) + " elements take " +
                        std::to_string(in_features / elems * bytes) + " bytes, blocks are " +
                        blocks.describe());
  }
  Weight r;
  r.format_ = format;
  r.out_features_ = blocks.dim(0);
  r.in_features_ = in_features;
  r.data_ = std::move(blocks);
  return r;
}

int64_t Weight::nbytes() const {
  return data_.nbytes() + (scales_.defined() ? scales_.nbytes() + biases_.nbytes() : 0);
}

std::string Weight::describe() const {
  if (!defined()) return "undefined weight";
  std::string s(weight_format_name(format_));
  if (format_ == WeightFormat::mlx_affine) {
    s.append(" ")
        .append(std::to_string(bits_))
        .append("-bit g")
        .append(std::to_string(group_size_));
  }
  s.append(" ").append(shape_str({out_features_, in_features_}));
  if (format_ == WeightFormat::dense) s.append(" ").append(dtype_name(data_.dtype()));
  if (format_ == WeightFormat::mlx_affine) {
    s.append(" (").append(dtype_name(scales_.dtype())).append(" scales)");
  }
  return s.append(" on ").append(device().str());
}

namespace {

// Every buffer of the weight on the stream's device, retained by a graph being captured.
void prepare_weight(const char* op, const Stream& stream, const Weight& w) {
  if (!w.defined()) throw Error(op, "the weight is undefined");
  ops_detail::prepare(op, stream, {{"weight", &w.data()}});
  if (w.format() == WeightFormat::mlx_affine) {
    ops_detail::prepare(op, stream, {{"scales", &w.scales()}, {"biases", &w.biases()}});
  }
}

}  // namespace

void dequantize(const Weight& w, const Buffer& out, const Stream& stream) {
  const char* op = "dequantize";
  prepare_weight(op, stream, w);
  ops_detail::prepare(op, stream, {{"out", &out}});
  ops_detail::require_float(op, out, "out");
  out.require_contiguous(op, "out");
  if (out.shape() != Shape{w.out_features(), w.in_features()}) {
    throw Error(op, "out must be " + shape_str({w.out_features(), w.in_features()}) + " for " +
                        w.describe() + ", got " + out.describe());
  }
  ops_detail::require_disjoint(op, w.data(), "weight", out);
  if (out.numel() == 0) return;
  if (stream.device().is_cpu()) {
    cpu::dequantize(w, out, stream);
  } else {
    MLXN_CUDA_BACKEND(cuda::dequantize(w, out, stream));
  }
}

bool same_layout(const Weight& a, const Weight& b) {
  return a.defined() && b.defined() && a.format() == b.format() &&
         a.in_features() == b.in_features() && a.bits() == b.bits() &&
         a.group_size() == b.group_size() && a.data().dtype() == b.data().dtype() &&
         a.scales().defined() == b.scales().defined() &&
         (!a.scales().defined() || a.scales().dtype() == b.scales().dtype()) &&
         a.device() == b.device();
}

Weight concat_rows(std::span<const Weight> parts, const Stream& stream) {
  const char* op = "concat_rows";
  if (parts.empty()) throw Error(op, "needs at least one weight");
  const Weight& first = parts[0];
  int64_t rows = 0;
  for (size_t i = 0; i < parts.size(); ++i) {
    const Weight& w = parts[i];
    const std::string which = "weight " + std::to_string(i) + " (" + w.describe() + ")";
    if (!w.defined()) throw Error(op, "weight " + std::to_string(i) + " is undefined");
    if (!same_layout(w, first)) {
      throw Error(op, which + " differs in format, K, dtypes or device from weight 0 (" +
                          first.describe() + ")");
    }
    if (w.device() != stream.device()) {
      throw Error(op, which + " is not on the stream's device " + stream.device().str());
    }
    rows += w.out_features();
  }
  // Each member buffer as [rows, bytes or elements per row], stacked.
  const auto stack = [&](const auto& member) {
    const Buffer& b0 = member(first);
    const Buffer flat0 = b0.reshape({first.out_features(), -1});
    Buffer out = Buffer::empty_exact({rows, flat0.dim(1)}, b0.dtype(), stream);
    int64_t r = 0;
    for (const Weight& w : parts) {
      copy(member(w).reshape({w.out_features(), -1}), out.slice(0, r, r + w.out_features()),
           stream);
      r += w.out_features();
    }
    return out;
  };
  const auto data = [](const Weight& w) -> const Buffer& { return w.data(); };
  switch (first.format()) {
    case WeightFormat::dense:
      return Weight::dense(stack(data));
    case WeightFormat::mlx_affine:
      return Weight::mlx_affine(stack(data),
                                stack([](const Weight& w) -> const Buffer& { return w.scales(); }),
                                stack([](const Weight& w) -> const Buffer& { return w.biases(); }),
                                first.bits(), first.group_size());
    default:
      return Weight::ggml(first.format(), stack(data), first.in_features());
  }
}

void embedding(const Buffer& ids, const Weight& table, const Buffer& out, const Stream& stream) {
  const char* op = "embedding";
  static const uint32_t site = register_error_site(op, "ids (token id outside [0, vocab))");
  prepare_weight(op, stream, table);
  ops_detail::prepare(op, stream, {{"ids", &ids}, {"out", &out}});
  ids.require_dtype(DType::i32, op, "ids");
  ids.require_contiguous(op, "ids");
  if (ids.rank() != 1) throw Error(op, "ids must be 1-D, got " + ids.describe());
  ops_detail::require_float(op, out, "out");
  out.require_contiguous(op, "out");
  if (out.shape() != Shape{ids.dim(0), table.in_features()}) {
    throw Error(op, "out must be " + shape_str({ids.dim(0), table.in_features()}) + " for ids " +
                        ids.describe() + " and table " + table.describe() + ", got " +
                        out.describe());
  }
  ops_detail::require_disjoint(op, table.data(), "table", out);
  ops_detail::require_disjoint(op, ids, "ids", out);
  linear::EmbeddingJob job{ids, table, out, ids.dim(0), site};
  if (job.tokens == 0) return;
  if (stream.device().is_cpu()) {
    cpu::embedding(job, stream);
  } else {
    MLXN_CUDA_BACKEND(cuda::embedding(job, stream));
  }
}

Weight quantize_mlx_affine(const Buffer& w, int bits, int group_size, const Stream& stream) {
  const char* op = "quantize_mlx_affine";
  ops_detail::prepare(op, stream, {{"w", &w}});
  if (!stream.device().is_cpu()) {
    throw Error(op, "runs on the CPU (the converter's path); w is " + w.describe());
  }
  require_2d(op, w, "w");
  ops_detail::require_float(op, w, "w");
  if (!formats::mlx_affine_bits_supported(bits)) {
    throw Error(op, "bits " + std::to_string(bits) + " unsupported (supported: 2, 3, 4, 5, 6, 8)");
  }
  if (!formats::mlx_affine_group_supported(group_size)) {
    throw Error(
        op, "group_size " + std::to_string(group_size) + " unsupported (supported: 32, 64, 128)");
  }
  const int64_t n = w.dim(0), k = w.dim(1);
  if (k == 0 || k % group_size != 0) {
    throw Error(op, "the last axis of w " + w.describe() + " must be a positive multiple of " +
                        std::to_string(group_size));
  }
  Buffer packed = Buffer::empty_exact({n, k * bits / 32}, DType::u32, stream);
  Buffer scales = Buffer::empty_exact({n, k / group_size}, w.dtype(), stream);
  Buffer biases = Buffer::empty_exact({n, k / group_size}, w.dtype(), stream);
  std::vector<float> row(static_cast<size_t>(k)), s(static_cast<size_t>(k / group_size)),
      b(s.size());
  dispatch_dtype<DTypeList<DType::f32, DType::bf16, DType::f16>>(op, w.dtype(), [&](auto tag) {
    using T = cpu::host_type_t<decltype(tag)::value>;
    const T* src = w.data_as<const T>();
    for (int64_t r = 0; r < n; ++r) {
      for (int64_t c = 0; c < k; ++c) {
        row[static_cast<size_t>(c)] = cpu::to_f32(src[r * k + c]);
        if (!std::isfinite(row[static_cast<size_t>(c)])) {
          throw Error(op, "w[" + std::to_string(r) + ", " + std::to_string(c) +
                              "] is not finite; MLX's quantizer is undefined there");
        }
      }
      formats::mlx_affine_quantize_row(
          row.data(), k, bits, group_size,
          reinterpret_cast<uint8_t*>(packed.data_as<uint32_t>() + r * (k * bits / 32)), s.data(),
          b.data());
      for (size_t g = 0; g < s.size(); ++g) {
        scales.data_as<T>()[r * (k / group_size) + static_cast<int64_t>(g)] =
            cpu::from_f32<T>(s[g]);
        biases.data_as<T>()[r * (k / group_size) + static_cast<int64_t>(g)] =
            cpu::from_f32<T>(b[g]);
      }
    }
  });
  return Weight::mlx_affine(std::move(packed), std::move(scales), std::move(biases), bits,
                            group_size);
}

}  // namespace mlxn
