#include "backend/cpu/turboquant.h"

#include <cmath>
#include <cstring>
#include <vector>

#include "backend/cpu/cpu_types.h"
#include "mlxn/core/device_errors.h"
#include "mlxn/core/dispatch.h"
#include "portable/error_state.h"
#include "turboquant/codebook.h"
#include "turboquant/reference.h"

namespace mlxn::cpu {

namespace {

// `count` elements of any float dtype at `src` as f32.
void load_f32(const Buffer& b, const void* src, int64_t count, float* dst) {
  dispatch_dtype<tq::InputDTypes>("turboquant", b.dtype(), [&](auto tag) {
    using T = host_type_t<decltype(tag)::value>;
    const auto* in = static_cast<const T*>(src);
    for (int64_t i = 0; i < count; ++i) dst[i] = to_f32(in[i]);
  });
}

void store_from_f32(const Buffer& b, void* dst, int64_t count, const float* src) {
  dispatch_dtype<tq::InputDTypes>("turboquant", b.dtype(), [&](auto tag) {
    using T = host_type_t<decltype(tag)::value>;
    auto* out = static_cast<T*>(dst);
    for (int64_t i = 0; i < count; ++i) out[i] = from_f32<T>(src[i]);
  });
}

}  // namespace

void tq_encode(const tq::EncodeJob* jobs, int job_count, const Buffer& positions,
               const Buffer& page_table, uint32_t index_site, const Stream& stream) {
  // Buffers are handles: copy them into the closure so a recorded graph keeps them.
  std::vector<Buffer> xs;
  std::vector<TqCache> caches;
  std::vector<uint32_t> sites;
  for (int k = 0; k < job_count; ++k) {
    xs.push_back(*jobs[k].x);
    caches.push_back(*jobs[k].cache);
    sites.push_back(jobs[k].data_site);
  }
  DeviceErrorState* flag = device_error_state(Device::cpu());
  stream.submit_host([xs, caches, sites, positions, page_table, index_site, flag] {
    const auto* pos = positions.data_as<const int32_t>();
    const auto* pages = page_table.data_as<const int32_t>();
    const int64_t tokens = xs[0].dim(0);
    for (size_t k = 0; k < xs.size(); ++k) {
      const Buffer& x = xs[k];
      const TqCache& cache = caches[k];
      const int heads = cache.kv_heads(), dim = cache.dim, page_size = cache.page_size();
      const int64_t row_bytes = tq::payload_bytes(dim, cache.bits);
      std::vector<float> v(static_cast<size_t>(dim));
      for (int64_t t = 0; t < tokens; ++t) {
        const int64_t p = pos[t];
        const int64_t page_index = p >= 0 ? p / page_size : -1;
        if (p < 0 || page_index >= page_table.numel()) {
          report_device_error(flag, DeviceErrorCode::index_out_of_range, index_site, t, p, 0);
          continue;
        }
        const int64_t page = pages[page_index];
        if (page < 0 || page >= cache.num_pages()) {
          report_device_error(flag, DeviceErrorCode::index_out_of_range, index_site, page_index,
                              page, 0);
          continue;
        }
        for (int h = 0; h < heads; ++h) {
          const char* src = static_cast<const char*>(x.data()) +
                            (t * x.strides()[0] + int64_t{h} * dim) * x.element_size();
          load_f32(x, src, dim, v.data());
          const int64_t slot = (page * heads + h) * page_size + p % page_size;
          uint16_t scale = 0;
          const bool finite = tq::reference::encode(
              v.data(), dim, cache.bits, cache.payload.data_as<uint8_t>() + slot * row_bytes,
              &scale, true);
          cache.scales.data_as<uint16_t>()[slot] = scale;
          if (!finite) {
            float bad = 0;
            for (float f : v) {
              if (!std::isfinite(f)) {
                bad = f;
                break;
              }
            }
            report_device_error(flag, DeviceErrorCode::non_finite, sites[k], t * heads + h, 0, bad);
          }
        }
      }
    }
  });
}

void tq_dequantize(const TqCache& cache, const Buffer& page_table, int64_t start, const Buffer& out,
                   TqDomain domain, uint32_t index_site, const Stream& stream) {
  DeviceErrorState* flag = device_error_state(Device::cpu());
  stream.submit_host([cache, page_table, start, out, domain, index_site, flag] {
    const auto* pages = page_table.data_as<const int32_t>();
    const int heads = cache.kv_heads(), dim = cache.dim, page_size = cache.page_size();
    const int64_t row_bytes = tq::payload_bytes(dim, cache.bits);
    std::vector<float> v(static_cast<size_t>(dim));
    for (int64_t i = 0; i < out.dim(0); ++i) {
      const int64_t p = start + i;
      const int64_t page = pages[p / page_size];
      const bool valid = page >= 0 && page < cache.num_pages();
      if (!valid) {
        report_device_error(flag, DeviceErrorCode::index_out_of_range, index_site, p / page_size,
                            page, 0);
      }
      for (int h = 0; h < heads; ++h) {
        if (valid) {
          const int64_t slot = (page * heads + h) * page_size + p % page_size;
          const uint8_t* payload = cache.payload.data_as<const uint8_t>() + slot * row_bytes;
          const uint16_t scale = cache.scales.data_as<const uint16_t>()[slot];
          if (domain == TqDomain::rotated) {
            tq::reference::decode_rotated(payload, scale, dim, cache.bits, v.data());
          } else {
            tq::reference::decode_original(payload, scale, dim, cache.bits, v.data());
          }
        } else {
          std::fill(v.begin(), v.end(), 0.0f);
        }
        char* dst = static_cast<char*>(out.data()) + ((i * heads + h) * dim) * out.element_size();
        store_from_f32(out, dst, dim, v.data());
      }
    }
  });
}

void tq_rotate(const Buffer& x, const Buffer& out, bool inverse, const Stream& stream) {
  stream.submit_host([x, out, inverse] {
    const int dim = static_cast<int>(x.dim(-1));
    const int64_t vectors = x.numel() / dim;
    std::vector<float> in(static_cast<size_t>(dim)), result(static_cast<size_t>(dim));
    for (int64_t i = 0; i < vectors; ++i) {
      load_f32(x, static_cast<const char*>(x.data()) + i * dim * x.element_size(), dim, in.data());
      if (inverse) {
        tq::reference::inverse_rotate(in.data(), result.data(), dim);
      } else {
        tq::reference::rotate(in.data(), result.data(), dim);
      }
      store_from_f32(out, static_cast<char*>(out.data()) + i * dim * out.element_size(), dim,
                     result.data());
    }
  });
}

}  // namespace mlxn::cpu
