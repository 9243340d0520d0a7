#include "backend/cpu/kv_cache.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "backend/cpu/cpu_types.h"
#include "mlxn/core/device_errors.h"
#include "mlxn/core/dispatch.h"
#include "portable/error_state.h"
#include "portable/turboquant.h"
#include "turboquant/codebook.h"
#include "turboquant/reference.h"

namespace mlxn::cpu {

void rotate_f64(std::vector<double>& v, bool inverse) {
  const int dim = static_cast<int>(v.size());
  if (!inverse)
    for (int j = 0; j < dim; ++j)
      if (tq::sign_is_negative(j)) v[j] = -v[j];
  for (int h = 1; h < dim; h *= 2)
    for (int i = 0; i < dim; i += 2 * h)
      for (int j = i; j < i + h; ++j) {
        const double a = v[j], b = v[j + h];
        v[j] = a + b;
        v[j + h] = a - b;
      }
  const double norm = 1.0 / std::sqrt(static_cast<double>(dim));
  for (int j = 0; j < dim; ++j) {
    v[j] *= norm;
    if (inverse && tq::sign_is_negative(j)) v[j] = -v[j];
  }
}

void load_cached_vector(const KvStore& store, int64_t slot, int head, float* out) {
  const int dim = store.dim, heads = store.kv_heads(), P = store.page_size();
  const int64_t row = (slot / P * heads + head) * P + slot % P;
  switch (store.type) {
    case KvType::bf16:
      for (int j = 0; j < dim; ++j)
        out[j] = to_f32(store.data.data_as<const BFloat16>()[row * dim + j]);
      return;
    case KvType::f16:
      for (int j = 0; j < dim; ++j)
        out[j] = to_f32(store.data.data_as<const Half>()[row * dim + j]);
      return;
    case KvType::f32:
      std::copy_n(store.data.data_as<const float>() + row * dim, dim, out);
      return;
    case KvType::fp8: {
      const float scale = store.scales.data_as<const float>()[head];
      for (int j = 0; j < dim; ++j)
        out[j] =
            float_bits::f8e4m3_to_f32(store.data.data_as<const uint8_t>()[row * dim + j]) * scale;
      return;
    }
    default: {
      const int bits = kv_type_bits(store.type);
      tq::reference::decode_rotated(
          store.data.data_as<const uint8_t>() + row * tq::payload_bytes(dim, bits),
          store.scales.data_as<const uint16_t>()[row], dim, bits, out);
    }
  }
}

void kv_write(const Buffer& x, const Buffer& slots, const KvStore& store, bool calibrate_fp8,
              uint32_t value_site, uint32_t index_site, const Stream& stream) {
  DeviceErrorState* flag = device_error_state(Device::cpu());
  stream.submit_host([x, slots, store, calibrate_fp8, value_site, index_site, flag] {
    const int64_t tokens = x.dim(0);
    const int heads = store.kv_heads(), dim = store.dim, P = store.page_size();
    const int64_t slot_count = store.num_pages() * P;
    const auto* slot = slots.data_as<const int32_t>();
    std::vector<float> v(static_cast<size_t>(dim));
    if (calibrate_fp8) {
      for (int h = 0; h < heads; ++h) {
        float amax = 0;
        for (int64_t t = 0; t < tokens; ++t)
          for (int j = 0; j < dim; ++j) {
            const float a = std::fabs(load_float(x, (t * heads + h) * dim + j));
            if (std::isfinite(a)) amax = std::max(amax, a);
          }
        store.scales.data_as<float>()[h] = amax > 0 ? amax / 448.0f : 1.0f;
      }
    }
    for (int64_t t = 0; t < tokens; ++t) {
      if (slot[t] < 0 || slot[t] >= slot_count) {
        report_device_error(flag, DeviceErrorCode::index_out_of_range, index_site, t, slot[t], 0);
        continue;
      }
      for (int h = 0; h < heads; ++h) {
        bool finite = true;
        float bad = 0;
        for (int j = 0; j < dim; ++j) {
          v[j] = load_float(x, (t * heads + h) * dim + j);
          if (!std::isfinite(v[j]) && finite) {
            finite = false;
            bad = v[j];
          }
        }
        if (!finite) {
          std::fill(v.begin(), v.end(), 0.0f);
          report_device_error(flag, DeviceErrorCode::non_finite, value_site, t * heads + h, 0, bad);
        }
        const int64_t row = (slot[t] / P * heads + h) * P + slot[t] % P;
        for (int j = 0; j < dim; ++j) {
          const int64_t e = row * dim + j;
          switch (store.type) {
            case KvType::bf16:
              store.data.data_as<BFloat16>()[e] = from_f32<BFloat16>(v[j]);
              break;
            case KvType::f16:  // saturated, as on the GPU: the cache never holds an infinity
              store.data.data_as<Half>()[e] = from_f32<Half>(std::clamp(v[j], -65504.0f, 65504.0f));
              break;
            case KvType::f32:
              store.data.data_as<float>()[e] = v[j];
              break;
            default:
              store.data.data_as<uint8_t>()[e] =
                  float_bits::f32_to_f8e4m3(v[j] / store.scales.data_as<const float>()[h]);
          }
        }
      }
    }
  });
}

void decode_attention(const attention::DecodeJob& job_in, const Stream& stream) {
  DeviceErrorState* flag = device_error_state(Device::cpu());
  // Buffers are handles: copy them (and the job's scalars) into the closure.
  const KvLayerStorage layer = *job_in.layer;
  const Buffer q = *job_in.q, page_table = *job_in.page_table, lengths = *job_in.lengths,
               out = *job_in.out;
  const Buffer sinks = job_in.sinks ? *job_in.sinks : Buffer();
  attention::DecodeJob job = job_in;
  stream.submit_host([job, layer, q, page_table, lengths, out, sinks, flag] {
    const int D = job.dim, P = layer.k.page_size(), group = job.q_heads / job.kv_heads;
    const bool tq = kv_type_is_tq(layer.k.type);
    const auto* table = page_table.data_as<const int32_t>();
    const auto* lens = lengths.data_as<const int32_t>();
    std::vector<float> k(static_cast<size_t>(D)), v(static_cast<size_t>(D));
    std::vector<double> qv(static_cast<size_t>(D)), acc(static_cast<size_t>(D));
    std::vector<double> scores;
    for (int b = 0; b < job.batch; ++b) {
      const int64_t len = lens[b];
      const bool bad_length =
          len < job.q_len || (layer.ring_pages == 0 && len > int64_t{job.table_width} * P);
      if (bad_length) {
        report_device_error(flag, DeviceErrorCode::index_out_of_range, job.index_site, b, len, 0);
      }
      for (int i = 0; i < job.q_len; ++i) {
        const int64_t pos = attention::query_position(len, job.q_len, i);
        const int64_t first = attention::first_visible_key(pos, job.window);
        for (int h = 0; h < job.q_heads; ++h) {
          const int kvh = h / group;
          const int64_t qrow = (int64_t{b} * job.q_len + i) * job.q_heads + h;
          for (int j = 0; j < D; ++j) qv[j] = load_float(q, qrow * D + j);
          if (tq) rotate_f64(qv, false);
          std::fill(acc.begin(), acc.end(), 0.0);
          scores.clear();
          double m = -std::numeric_limits<double>::infinity();
          bool ok = !bad_length;
          // Two passes over the keys: logits (and their max), then the weighted sum.
          for (int pass = 0; pass < 2 && ok; ++pass) {
            double denom = 0;
            for (int64_t t = first; t <= pos && ok; ++t) {
              const int64_t n = layer.ring_pages > 0 ? (t / P) % layer.ring_pages : t / P;
              const int64_t page = table[int64_t{b} * job.table_width + n];
              if (page < 0 || page >= layer.k.num_pages()) {
                report_device_error(flag, DeviceErrorCode::index_out_of_range, job.index_site,
                                    int64_t{b} * job.table_width + n, page, 0);
                ok = false;
                break;
              }
              const int64_t slot = page * P + t % P;
              if (pass == 0) {
                load_cached_vector(layer.k, slot, kvh, k.data());
                double s = 0;
                for (int j = 0; j < D; ++j) s += qv[j] * k[j];
                s *= job.scale;
                if (job.softcap > 0) s = job.softcap * std::tanh(s / job.softcap);
                scores.push_back(s);
                m = std::max(m, s);
              } else {
                const double p = std::exp(scores[static_cast<size_t>(t - first)] - m);
                denom += p;
                load_cached_vector(layer.v, slot, kvh, v.data());
                for (int j = 0; j < D; ++j) acc[j] += p * v[j];
              }
            }
            if (pass == 1) {
              if (sinks.defined()) {
                const double sink = sinks.data_as<const float>()[h];
                const double mm = std::max(m, sink);
                // Rescale to the larger max so exp() cannot overflow.
                const double f = std::exp(m - mm);
                denom = denom * f + std::exp(sink - mm);
                for (auto& a : acc) a *= f;
              }
              for (auto& a : acc) a /= denom;
            }
          }
          if (!ok) std::fill(acc.begin(), acc.end(), 0.0);
          if (tq) rotate_f64(acc, true);
          for (int j = 0; j < D; ++j) store_float(out, qrow * D + j, static_cast<float>(acc[j]));
        }
      }
    }
  });
}

}  // namespace mlxn::cpu
