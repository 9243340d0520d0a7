#include "backend/cpu/attention.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "backend/cpu/cpu_types.h"
#include "backend/cpu/kv_cache.h"
#include "mlxn/core/device_errors.h"
#include "mlxn/core/dispatch.h"
#include "portable/error_state.h"

namespace mlxn::cpu {

namespace {

using FloatTypes = DTypeList<DType::f32, DType::bf16, DType::f16>;

// `count` elements from element `first` of a contiguous f32 / bf16 / f16 buffer, exactly, as f64.
void load_f64(const Buffer& b, int64_t first, int64_t count, double* dst) {
  dispatch_dtype<FloatTypes>("prefill_attention", b.dtype(), [&](auto tag) {
    using T = host_type_t<decltype(tag)::value>;
    const T* src = b.data_as<const T>() + first;
    for (int64_t i = 0; i < count; ++i) dst[i] = static_cast<double>(to_f32(src[i]));
  });
}

// Rounded to f32 and then to the buffer's dtype: the library's output rounding.
void store_f64(const Buffer& b, int64_t first, int64_t count, const double* src) {
  dispatch_dtype<FloatTypes>("prefill_attention", b.dtype(), [&](auto tag) {
    using T = host_type_t<decltype(tag)::value>;
    T* dst = b.data_as<T>() + first;
    for (int64_t i = 0; i < count; ++i) dst[i] = from_f32<T>(static_cast<float>(src[i]));
  });
}

}  // namespace

void prefill_attention(const attention::PrefillJob& job_in, const Stream& stream) {
  DeviceErrorState* flag = device_error_state(Device::cpu());
  // Buffers are handles: copy them (and the job's scalars) into the closure, so that a captured
  // graph keeps them; the job's pointers are not used past this call.
  const Buffer q = *job_in.q, k = *job_in.k, v = *job_in.v, cu_q = *job_in.cu_q,
               cu_k = *job_in.cu_k, out = *job_in.out;
  const Buffer sinks = job_in.sinks ? *job_in.sinks : Buffer();
  const Buffer lse = job_in.lse ? *job_in.lse : Buffer();
  attention::PrefillJob job = job_in;
  job.q = job.k = job.v = job.cu_q = job.cu_k = job.out = job.sinks = job.lse = nullptr;
  stream.submit_host([job, q, k, v, cu_q, cu_k, out, sinks, lse, flag] {
    const int D = job.dim, group = job.q_heads / job.kv_heads;
    const int64_t q_row = int64_t{job.q_heads} * D, k_row = int64_t{job.kv_heads} * D;
    const auto* cq = cu_q.data_as<const int32_t>();
    const auto* ck = cu_k.data_as<const int32_t>();
    const float* sink = sinks.defined() ? sinks.data_as<const float>() : nullptr;
    float* lse_out = lse.defined() ? lse.data_as<float>() : nullptr;
    const double kInf = std::numeric_limits<double>::infinity();
    std::vector<double> kd, vd, qv(static_cast<size_t>(D)), acc(static_cast<size_t>(D)), scores;
    const std::vector<double> zeros(static_cast<size_t>(q_row), 0.0);

    for (int b = 0; b < job.batch; ++b) {
      const int64_t q0 = cq[b], q1 = cq[b + 1], k0 = ck[b], k1 = ck[b + 1];
      // The first broken rule, as (position in cu_seqlens, offending value).
      int64_t bad_at = -1, bad_value = 0;
      if (q0 < 0 || q0 > job.total_q) {
        bad_at = b, bad_value = q0;
      } else if (q1 < q0 || q1 > job.total_q) {
        bad_at = b + 1, bad_value = q1;
      } else if (k0 < 0 || k0 > job.total_k) {
        bad_at = b, bad_value = k0;
      } else if (k1 < k0 || k1 > job.total_k) {
        bad_at = b + 1, bad_value = k1;
      } else if (job.causal && k1 - k0 < q1 - q0) {
        bad_at = b + 1, bad_value = k1;  // fewer keys than causal queries
      } else if (q1 - q0 > job.max_q_len) {
        bad_at = b + 1, bad_value = q1;  // more queries than the promised bound
      }
      if (bad_at >= 0) {
        report_device_error(flag, DeviceErrorCode::index_out_of_range, job.index_site, bad_at,
                            bad_value, 0);
        // Zeros (lse -inf) for whatever rows of the output the sequence names.
        const int64_t lo = std::clamp<int64_t>(q0, 0, job.total_q);
        const int64_t hi = std::clamp<int64_t>(q1, 0, job.total_q);
        for (int64_t r = lo; r < hi; ++r) {
          store_f64(out, r * q_row, q_row, zeros.data());
          if (lse_out)
            for (int h = 0; h < job.q_heads; ++h)
              lse_out[h * job.total_q + r] = -std::numeric_limits<float>::infinity();
        }
        continue;
      }

      const int64_t len_q = q1 - q0, len_k = k1 - k0;
      kd.resize(static_cast<size_t>(len_k * k_row));
      vd.resize(static_cast<size_t>(len_k * k_row));
      load_f64(k, k0 * k_row, len_k * k_row, kd.data());
      load_f64(v, k0 * k_row, len_k * k_row, vd.data());
      for (int64_t i = 0; i < len_q; ++i) {
        const int64_t pos = attention::prefill_query_position(len_q, len_k, i);
        // Visible keys: [first, last) of 0 .. len_k - 1.
        const int64_t last = job.causal ? std::clamp<int64_t>(pos + 1, 0, len_k) : len_k;
        const int64_t first =
            job.window > 0 ? std::clamp<int64_t>(pos - job.window + 1, 0, last) : 0;
        const int64_t row = q0 + i;
        for (int h = 0; h < job.q_heads; ++h) {
          const int kvh = h / group;
          load_f64(q, row * q_row + int64_t{h} * D, D, qv.data());
          scores.clear();
          double m = -kInf;
          for (int64_t t = first; t < last; ++t) {
            const double* kt = &kd[static_cast<size_t>(t * k_row + int64_t{kvh} * D)];
            double s = 0;
            for (int j = 0; j < D; ++j) s += qv[j] * kt[j];
            s *= static_cast<double>(job.scale);
            if (job.softcap > 0) s = job.softcap * std::tanh(s / job.softcap);
            scores.push_back(s);
            m = std::max(m, s);
          }
          const double sink_logit = sink ? static_cast<double>(sink[h]) : -kInf;
          m = std::max(m, sink_logit);
          std::fill(acc.begin(), acc.end(), 0.0);
          double lse_value = -kInf;
          if (m > -kInf || std::isnan(m)) {
            double denom = sink ? std::exp(sink_logit - m) : 0.0;
            for (int64_t t = first; t < last; ++t) {
              const double p = std::exp(scores[static_cast<size_t>(t - first)] - m);
              denom += p;
              const double* vt = &vd[static_cast<size_t>(t * k_row + int64_t{kvh} * D)];
              for (int j = 0; j < D; ++j) acc[j] += p * vt[j];
            }
            for (auto& a : acc) a /= denom;
            lse_value = m + std::log(denom);
          }
          // else: no visible key and no sink (or a -inf sink): zeros and lse -inf.
          store_f64(out, row * q_row + int64_t{h} * D, D, acc.data());
          if (lse_out) lse_out[h * job.total_q + row] = static_cast<float>(lse_value);
        }
      }
    }
  });
}

void kv_gather(const KvStore& store, const Buffer& page_table, int ring_pages, int64_t start,
               const Buffer& out, uint32_t index_site, const Stream& stream) {
  DeviceErrorState* flag = device_error_state(Device::cpu());
  stream.submit_host([store, page_table, ring_pages, start, out, index_site, flag] {
    const int heads = store.kv_heads(), dim = store.dim, P = store.page_size();
    const int64_t width = page_table.numel(), count = out.dim(0);
    const auto* table = page_table.data_as<const int32_t>();
    std::vector<float> row(static_cast<size_t>(dim));
    for (int64_t i = 0; i < count; ++i) {
      const int64_t pos = start + i;
      const int64_t n = ring_pages > 0 ? (pos / P) % ring_pages : pos / P;
      int64_t page = -1;
      if (n >= width) {
        report_device_error(flag, DeviceErrorCode::index_out_of_range, index_site, pos, n, 0);
      } else if (table[n] < 0 || table[n] >= store.num_pages()) {
        report_device_error(flag, DeviceErrorCode::index_out_of_range, index_site, n, table[n], 0);
      } else {
        page = table[n];
      }
      for (int h = 0; h < heads; ++h) {
        if (page >= 0) {
          load_cached_vector(store, page * P + pos % P, h, row.data());
        } else {
          std::fill(row.begin(), row.end(), 0.0f);
        }
        const int64_t e = (i * heads + h) * dim;
        for (int j = 0; j < dim; ++j) store_float(out, e + j, row[static_cast<size_t>(j)]);
      }
    }
  });
}

}  // namespace mlxn::cpu
