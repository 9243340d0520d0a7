#include "mlxn/ops/turboquant.h"

#include <string>

#include "backend/cpu/turboquant.h"
#include "mlxn/core/device_errors.h"
#include "mlxn/core/dispatch.h"
#include "mlxn/ops/memory.h"
#include "ops/backend.h"
#include "turboquant/codebook.h"
#include "turboquant/encode_job.h"
#if MLXN_WITH_CUDA
#include "backend/cuda/turboquant/turboquant.h"
#endif

namespace mlxn {

namespace {

std::string str(int64_t v) { return std::to_string(v); }

void require_i32_vector(const Buffer& b, const char* op, const char* name) {
  b.require_dtype(DType::i32, op, name);
  if (b.rank() != 1) throw Error(op, std::string(name) + " must be 1-D, got " + b.describe());
  b.require_contiguous(op, name);
}

}  // namespace

TqCache TqCache::allocate(int64_t num_pages, int kv_heads, int page_size, int dim, int bits,
                          const Stream& stream) {
  tq::require_bits(bits, "tq_cache");
  tq::require_dim(dim, "tq_cache");
  ops_detail::require_page_size(page_size, "tq_cache");
  if (num_pages <= 0 || kv_heads <= 0) {
    throw Error("tq_cache", "num_pages " + str(num_pages) + " and kv_heads " + str(kv_heads) +
                                " must be positive");
  }
  TqCache c;
  c.bits = bits;
  c.dim = dim;
  c.payload = Buffer::empty_exact({num_pages, kv_heads, page_size, tq::payload_bytes(dim, bits)},
                                  DType::u8, stream);
  c.scales = Buffer::empty_exact({num_pages, kv_heads, page_size}, DType::f16, stream);
  fill(c.payload, 0, stream);
  fill(c.scales, 0.0, stream);
  return c;
}

void TqCache::validate(const char* op) const {
  tq::require_bits(bits, op);
  tq::require_dim(dim, op);
  if (!payload.defined() || !scales.defined()) throw Error(op, "cache buffers are undefined");
  payload.require_dtype(DType::u8, op, "cache payload");
  scales.require_dtype(DType::f16, op, "cache scales");
  if (payload.rank() != 4 || scales.rank() != 3) {
    throw Error(op,
                "cache payload must be [pages, kv_heads, page_size, dim*bits/8] and scales "
                "[pages, kv_heads, page_size], got " +
                    payload.describe() + " and " + scales.describe());
  }
  if (payload.dim(3) != tq::payload_bytes(dim, bits)) {
    throw Error(op, "cache payload rows are " + str(payload.dim(3)) + " bytes, tq" + str(bits) +
                        " at dim " + str(dim) + " needs " + str(tq::payload_bytes(dim, bits)));
  }
  if (scales.shape() != Shape{payload.dim(0), payload.dim(1), payload.dim(2)}) {
    throw Error(op, "cache scales " + shape_str(scales.shape()) + " do not match payload " +
                        shape_str(payload.shape()));
  }
  ops_detail::require_page_size(payload.dim(2), op);
  payload.require_contiguous(op, "cache payload");
  scales.require_contiguous(op, "cache scales");
  if (payload.device() != scales.device())
    throw Error(op, "cache payload and scales on different devices");
}

namespace {

void encode_impl(const Buffer* xs[2], const TqCache* caches[2], int count, const Buffer& positions,
                 const Buffer& page_table, const Stream& stream, std::string_view label) {
  const char* op = "tq_encode";
  require_i32_vector(positions, op, "positions");
  require_i32_vector(page_table, op, "page_table");
  ops_detail::prepare(op, stream, {{"positions", &positions}, {"page_table", &page_table}});
  tq::EncodeJob jobs[2];
  const char* names[2] = {count == 2 ? "K" : "", "V"};
  for (int k = 0; k < count; ++k) {
    const Buffer& x = *xs[k];
    const TqCache& cache = *caches[k];
    cache.validate(op);
    ops_detail::prepare(
        op, stream,
        {{"x", &x}, {"cache payload", &cache.payload}, {"cache scales", &cache.scales}});
    dispatch_dtype<tq::InputDTypes>(
        op, x.dtype(), [](auto) {}, "input dtype");
    if (x.rank() != 3 || x.dim(1) != cache.kv_heads() || x.dim(2) != cache.dim) {
      throw Error(op, "input must be [tokens, " + str(cache.kv_heads()) + ", " + str(cache.dim) +
                          "] for this cache, got " + x.describe());
    }
    if (x.dim(0) != positions.numel()) {
      throw Error(op, str(x.dim(0)) + " tokens but " + str(positions.numel()) + " positions");
    }
    if (x.strides()[2] != 1 || x.strides()[1] != cache.dim || !x.is_aligned(16) ||
        (x.strides()[0] * x.element_size()) % 16 != 0) {
      throw Error(op,
                  "input rows must be contiguous [kv_heads, dim] blocks, 16-byte aligned, "
                  "with a token stride of whole 16-byte units (shape " +
                      shape_str(x.shape()) + ", strides " + shape_str(x.strides()) +
                      "); copy it into a contiguous buffer first");
    }
    if (k == 1) {
      if (x.shape() != xs[0]->shape() || x.dtype() != xs[0]->dtype()) {
        throw Error(op, "K " + xs[0]->describe() + " and V " + x.describe() + " differ");
      }
      if (cache.num_pages() != caches[0]->num_pages() ||
          cache.page_size() != caches[0]->page_size()) {
        throw Error(op, "K and V caches differ in pages or page size");
      }
    }
    std::string subject(label);
    if (*names[k]) subject += std::string(" ") + names[k];
    jobs[k] = {&x, &cache, register_error_site(op, subject)};
  }
  const uint32_t index_site =
      register_error_site(op, "positions/page_table of " + std::string(label));
  if (stream.device().is_cpu()) {
    cpu::tq_encode(jobs, count, positions, page_table, index_site, stream);
  } else {
    MLXN_CUDA_BACKEND(cuda::tq_encode(jobs, count, positions, page_table, index_site, stream));
  }
}

}  // namespace

void tq_encode(const Buffer& x, const Buffer& positions, const Buffer& page_table,
               const TqCache& cache, const Stream& stream, std::string_view label) {
  const Buffer* xs[2] = {&x, nullptr};
  const TqCache* caches[2] = {&cache, nullptr};
  encode_impl(xs, caches, 1, positions, page_table, stream, label);
}

void tq_encode_kv(const Buffer& k, const Buffer& v, const Buffer& positions,
                  const Buffer& page_table, const TqCache& k_cache, const TqCache& v_cache,
                  const Stream& stream, std::string_view label) {
  const Buffer* xs[2] = {&k, &v};
  const TqCache* caches[2] = {&k_cache, &v_cache};
  encode_impl(xs, caches, 2, positions, page_table, stream, label);
}

void tq_dequantize(const TqCache& cache, const Buffer& page_table, int64_t start, const Buffer& out,
                   TqDomain domain, const Stream& stream) {
  const char* op = "tq_dequantize";
  cache.validate(op);
  require_i32_vector(page_table, op, "page_table");
  ops_detail::prepare(op, stream,
                      {{"cache payload", &cache.payload},
                       {"cache scales", &cache.scales},
                       {"page_table", &page_table},
                       {"out", &out}});
  using Outputs = DTypeList<DType::f32, DType::bf16>;
  dispatch_dtype<Outputs>(
      op, out.dtype(), [](auto) {}, "output dtype");
  if (out.rank() != 3 || out.dim(1) != cache.kv_heads() || out.dim(2) != cache.dim) {
    throw Error(op, "out must be [count, " + str(cache.kv_heads()) + ", " + str(cache.dim) +
                        "], got " + out.describe());
  }
  out.require_contiguous(op, "out");
  if (!out.is_aligned(16)) throw Error(op, "out must be 16-byte aligned");
  const int64_t capacity = page_table.numel() * cache.page_size();
  if (start < 0 || start + out.dim(0) > capacity) {
    throw Error(op, "positions [" + str(start) + ", " + str(start + out.dim(0)) +
                        ") outside the sequence's " + str(capacity) + " slots (" +
                        str(page_table.numel()) + " pages of " + str(cache.page_size()) + ")");
  }
  const uint32_t index_site = register_error_site(op, "page_table");
  if (stream.device().is_cpu()) {
    cpu::tq_dequantize(cache, page_table, start, out, domain, index_site, stream);
  } else {
    MLXN_CUDA_BACKEND(
        cuda::tq_dequantize(cache, page_table, start, out, domain, index_site, stream));
  }
}

void tq_rotate(const Buffer& x, const Buffer& out, bool inverse, const Stream& stream) {
  const char* op = "tq_rotate";
  ops_detail::prepare(op, stream, {{"x", &x}, {"out", &out}});
  if (x.rank() < 1) throw Error(op, "x must have a head_dim axis");
  tq::require_dim(static_cast<int>(x.dim(-1)), op);
  dispatch_dtype<tq::InputDTypes>(
      op, x.dtype(), [](auto) {}, "input dtype");
  dispatch_dtype<tq::InputDTypes>(
      op, out.dtype(), [](auto) {}, "output dtype");
  ops_detail::require_same_shape(op, x, "x", out, "out");
  x.require_contiguous(op, "x");
  out.require_contiguous(op, "out");
  if (!x.is_aligned(16) || !out.is_aligned(16))
    throw Error(op, "x and out must be 16-byte aligned");
  if (stream.device().is_cpu()) {
    cpu::tq_rotate(x, out, inverse, stream);
  } else {
    MLXN_CUDA_BACKEND(cuda::tq_rotate(x, out, inverse, stream));
  }
}

namespace tq {

namespace {
thread_local Encoder t_forced_encoder = Encoder::automatic;
}  // namespace

Encoder forced_encoder() { return t_forced_encoder; }
ForceEncoder::ForceEncoder(Encoder e) : previous_(t_forced_encoder) { t_forced_encoder = e; }
ForceEncoder::~ForceEncoder() { t_forced_encoder = previous_; }

}  // namespace tq

}  // namespace mlxn
