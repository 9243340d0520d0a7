#include "mlxn/ops/rope.h"

#include <algorithm>
#include <cmath>
#include <numbers>
#include <string>

#include "backend/cpu/rope.h"
#include "mlxn/core/device_errors.h"
#include "mlxn/core/dispatch.h"
#include "ops/backend.h"
#include "rope/rope_job.h"
#if MLXN_WITH_CUDA
#include "backend/cuda/rope/rope.h"
#endif

namespace mlxn {

namespace {

constexpr const char* kFreqOp = "rope_frequencies";

void require(bool ok, const std::string& what) {
  if (!ok) throw Error(kFreqOp, what);
}

bool positive_finite(double v) { return std::isfinite(v) && v > 0; }

// Each step below is the f32 operation transformers' modeling_rope_utils performs on its f32
// tensors (Python scalars enter as f32), so the frequencies agree with it to the bit wherever
// f32 pow does: theta^(f32(2i) / f32(dim)), then 1 / that.
std::vector<float> default_pos_freqs(double theta, int64_t dim) {
  std::vector<float> f(static_cast<size_t>(dim / 2));
  const auto base = static_cast<float>(theta);
  for (int64_t i = 0; i < dim / 2; ++i) {
    const float e = static_cast<float>(2 * i) / static_cast<float>(dim);
    f[static_cast<size_t>(i)] = static_cast<float>(std::pow(double{base}, double{e}));
  }
  return f;
}

std::vector<float> default_inv_freq(double theta, int64_t dim) {
  std::vector<float> f = default_pos_freqs(theta, dim);
  for (float& v : f) v = 1.0f / v;
  return f;
}

void apply_llama3(const RopeConfig& c, std::vector<float>& f) {
  require(c.original_max_position > 0, "llama3 needs original_max_position > 0");
  require(positive_finite(c.low_freq_factor) && positive_finite(c.high_freq_factor) &&
              c.low_freq_factor < c.high_freq_factor,
          "llama3 needs 0 < low_freq_factor < high_freq_factor");
  const auto factor = static_cast<float>(c.factor);
  const auto old_len = static_cast<float>(c.original_max_position);
  const auto low = static_cast<float>(c.low_freq_factor);
  const auto low_wavelen =
      static_cast<float>(static_cast<double>(c.original_max_position) / c.low_freq_factor);
  const auto high_wavelen =
      static_cast<float>(static_cast<double>(c.original_max_position) / c.high_freq_factor);
  for (float& inv : f) {
    const float wavelen = static_cast<float>(2 * std::numbers::pi) / inv;
    const float scaled = wavelen > low_wavelen ? inv / factor : inv;
    if (wavelen < high_wavelen || wavelen > low_wavelen) {
      inv = scaled;
    } else {
      const float smooth =
          (old_len / wavelen - low) / static_cast<float>(c.high_freq_factor - c.low_freq_factor);
      inv = (1.0f - smooth) * scaled / factor + smooth * scaled;
    }
  }
}

double yarn_mscale(double scale, double mscale) {
  return scale <= 1 ? 1.0 : 0.1 * mscale * std::log(scale) + 1.0;
}

// Replaces the frequencies; returns the attention scaling.
double apply_yarn(const RopeConfig& c, double theta, int64_t dim, std::vector<float>& f) {
  require(c.original_max_position > 0, "yarn needs original_max_position > 0");
  require(positive_finite(c.beta_fast) && positive_finite(c.beta_slow),
          "yarn needs beta_fast and beta_slow > 0");
  const double d = static_cast<double>(dim);
  const double max_pos = static_cast<double>(c.original_max_position);
  // The dimension whose wavelength makes `rotations` turns over the original context.
  const auto correction_dim = [&](double rotations) {
    return d * std::log(max_pos / (rotations * 2 * std::numbers::pi)) / (2 * std::log(theta));
  };
  double low = correction_dim(c.beta_fast), high = correction_dim(c.beta_slow);
  if (c.truncate) {
    low = std::floor(low);
    high = std::ceil(high);
  }
  low = std::max(low, 0.0);
  high = std::min(high, d - 1);
  if (low == high) high += 0.001;  // a ramp of zero width would divide by zero
  const std::vector<float> pos = default_pos_freqs(theta, dim);
  const auto factor = static_cast<float>(c.factor);
  for (size_t i = 0; i < f.size(); ++i) {
    const float extrapolated = 1.0f / pos[i];
    const float interpolated = 1.0f / (factor * pos[i]);
    const float ramp = std::clamp(
        (static_cast<float>(i) - static_cast<float>(low)) / static_cast<float>(high - low), 0.0f,
        1.0f);
    const float keep = 1.0f - ramp;  // weight of the extrapolated (unscaled) frequency
    f[i] = interpolated * (1.0f - keep) + extrapolated * keep;
  }
  if (c.mscale != 0 && c.mscale_all_dim != 0) {
    return yarn_mscale(c.factor, c.mscale) / yarn_mscale(c.factor, c.mscale_all_dim);
  }
  return yarn_mscale(c.factor, 1.0);
}

}  // namespace

RopeFrequencies rope_frequencies(const RopeConfig& c, int64_t seq_len) {
  require(c.head_dim > 0, "head_dim must be > 0, got " + std::to_string(c.head_dim));
  const int64_t dim = c.rotary_dim == 0 ? c.head_dim : c.rotary_dim;
  require(dim > 0 && dim % 2 == 0 && dim <= c.head_dim, "rotary_dim " + std::to_string(dim) +
                                                            " must be even and in (0, head_dim " +
                                                            std::to_string(c.head_dim) + "]");
  require(positive_finite(c.theta) && c.theta != 1.0, "theta must be finite, > 0 and not 1");
  require(positive_finite(c.factor), "factor must be finite and > 0");
  require(seq_len >= 0, "seq_len must be >= 0");
  if (c.attention_factor) {
    require(positive_finite(*c.attention_factor), "attention_factor must be finite and > 0");
  }
  double theta = c.theta, scaling = 1.0;
  if (c.scaling == RopeScaling::dynamic_ntk) {
    require(c.max_position > 0, "dynamic_ntk needs max_position > 0");
    require(dim > 2, "dynamic_ntk needs rotary_dim > 2");
    const double len = static_cast<double>(std::max(seq_len, c.max_position));
    theta *= std::pow(c.factor * len / static_cast<double>(c.max_position) - (c.factor - 1),
                      static_cast<double>(dim) / static_cast<double>(dim - 2));
  }
  std::vector<float> f = default_inv_freq(theta, dim);
  switch (c.scaling) {
    case RopeScaling::none:
    case RopeScaling::dynamic_ntk:
      break;
    case RopeScaling::linear:
      for (float& inv : f) inv /= static_cast<float>(c.factor);
      break;
    case RopeScaling::llama3:
      apply_llama3(c, f);
      break;
    case RopeScaling::yarn:
      scaling = apply_yarn(c, theta, dim, f);
      break;
  }
  if (!c.freq_factors.empty()) {
    require(static_cast<int64_t>(c.freq_factors.size()) == dim / 2,
            "freq_factors needs rotary_dim / 2 = " + std::to_string(dim / 2) + " entries, got " +
                std::to_string(c.freq_factors.size()));
    for (size_t i = 0; i < f.size(); ++i) {
      require(positive_finite(c.freq_factors[i]), "freq_factors must be finite and > 0");
      f[i] /= c.freq_factors[i];
    }
  }
  if (c.attention_factor) scaling = *c.attention_factor;
  RopeFrequencies out;
  out.inv_freq = std::move(f);
  out.attention_scaling = static_cast<float>(scaling);
  return out;
}

RopeTable::RopeTable(const RopeConfig& config, const Stream& stream, int64_t seq_len)
    : config_(config) {
  const RopeFrequencies f = rope_frequencies(config, seq_len);
  rotary_dim_ = static_cast<int64_t>(f.inv_freq.size()) * 2;
  attention_scaling_ = f.attention_scaling;
  inv_freq_ =
      Buffer::from_host(std::span<const float>(f.inv_freq), {rotary_dim_ / 2}, DType::f32, stream);
}

namespace {

using FloatDTypes = DTypeList<DType::f32, DType::bf16, DType::f16>;

// [tokens, heads, head_dim] with the last two axes contiguous.
void check_heads(const char* op, const Buffer& b, const char* name, int64_t head_dim) {
  dispatch_dtype<FloatDTypes>(
      op, b.dtype(), [](auto) {}, (std::string(name) + " dtype").c_str());
  if (b.rank() != 3 || b.dim(2) != head_dim) {
    throw Error(op, std::string(name) + " must be [tokens, heads, " + std::to_string(head_dim) +
                        "], got " + b.describe());
  }
  if (b.strides()[2] != 1 || (b.dim(1) > 1 && b.strides()[1] != head_dim) || b.strides()[0] < 0) {
    throw Error(op, std::string(name) + " needs contiguous heads (strides [*, " +
                        std::to_string(head_dim) + ", 1]), got " + b.describe());
  }
}

void run(const char* op, rotary::Job& job, const RopeTable& table, const Stream& stream) {
  ops_detail::prepare(op, stream,
                      {{"x", &job.x}, {"positions", &job.positions}, {"out", &job.out}});
  const Buffer& inv_freq = table.inv_freq();
  if (inv_freq.device() != stream.device()) {
    throw Error(op, "the RopeTable is on " + inv_freq.device().str() + " but the stream is on " +
                        stream.device().str());
  }
  stream.retain_for_capture(inv_freq.allocation());
  const int64_t head_dim = table.config().head_dim;
  check_heads(op, job.x, "x", head_dim);
  check_heads(op, job.out, "out", head_dim);
  ops_detail::require_same_shape(op, job.x, "x", job.out, "out");
  const Buffer& pos = job.positions;
  if (pos.dtype() != DType::i32 || pos.rank() != 1 || pos.dim(0) != job.x.dim(0) ||
      !pos.is_contiguous()) {
    throw Error(op, "positions must be contiguous i32 [" + std::to_string(job.x.dim(0)) +
                        "], got " + pos.describe());
  }
  if (job.x.allocation() == job.out.allocation() &&
      (job.x.offset_bytes() != job.out.offset_bytes() || job.x.strides() != job.out.strides() ||
       job.x.dtype() != job.out.dtype())) {
    throw Error(op, "out shares x's memory without being the same view");
  }
  if (job.weight.defined()) {
    ops_detail::prepare(op, stream, {{"weight", &job.weight}});
    dispatch_dtype<FloatDTypes>(
        op, job.weight.dtype(), [](auto) {}, "weight dtype");
    if (job.weight.rank() != 1 || job.weight.dim(0) != head_dim || !job.weight.is_contiguous()) {
      throw Error(op, "weight must be contiguous [" + std::to_string(head_dim) + "], got " +
                          job.weight.describe());
    }
  }
  job.inv_freq = inv_freq;
  job.attention_scaling = table.attention_scaling();
  job.pairing = table.config().pairing;
  job.tokens = job.x.dim(0);
  job.heads = job.x.dim(1);
  job.head_dim = head_dim;
  job.rotary_dim = table.rotary_dim();
  job.x_token_stride = job.x.strides()[0];
  job.out_token_stride = job.out.strides()[0];
  if (job.tokens == 0 || job.heads == 0) return;
  if (job.tokens > (int64_t{1} << 31) - 1) throw Error(op, "more than 2^31 - 1 tokens");
  static const uint32_t site = register_error_site("rope", "positions (negative)");
  job.position_site = site;
  if (stream.device().is_cpu()) {
    cpu::rope(job, stream);
  } else {
    MLXN_CUDA_BACKEND(cuda::rope(job, stream));
  }
}

}  // namespace

void rope(const Buffer& x, const Buffer& positions, const RopeTable& table, const Buffer& out,
          const Stream& stream) {
  rotary::Job job;
  job.x = x;
  job.positions = positions;
  job.out = out;
  run("rope", job, table, stream);
}

void rms_norm_rope(const Buffer& x, const Buffer& weight, float eps, RmsWeight mode,
                   const Buffer& positions, const RopeTable& table, const Buffer& out,
                   const Stream& stream) {
  const char* op = "rms_norm_rope";
  ops_detail::require_weight_for_mode(op, mode, weight);
  if (!(eps >= 0.0f) || !std::isfinite(eps)) throw Error(op, "eps must be finite and >= 0");
  rotary::Job job;
  job.x = x;
  job.positions = positions;
  job.weight = weight;
  job.out = out;
  job.norm = true;
  job.weight_mode = mode;
  job.eps = eps;
  run(op, job, table, stream);
}

}  // namespace mlxn
