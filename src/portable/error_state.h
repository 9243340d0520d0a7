// The device-side error flag. Kernels cannot throw; when one meets bad input (a non-finite value
// where none may be, an index outside a buffer) it records the first such event here and carries
// on with a defined result (e.g. writes zeros). The host reads the flag when a stream on that
// device synchronises and throws an mlxn::Error built from it (src/core/device_errors.cpp).
#pragma once

#include "portable/host_device.h"

#if !defined(__CUDA_ARCH__)
#include <atomic>
#endif

namespace mlxn {

enum class DeviceErrorCode : uint32_t {
  none = 0,
  non_finite = 1,          // index: element or vector index; value: the offending value
  index_out_of_range = 2,  // index: position in the index buffer; detail: the bad index
};

struct DeviceErrorState {
  uint32_t code;     // DeviceErrorCode of the first report; 0 while clear
  uint32_t site;     // id from register_error_site(): which op and which buffer
  int64_t index;     // where (meaning per code)
  int64_t detail;    // the bad index, for index_out_of_range
  float value;       // the bad value, for non_finite
  uint32_t reports;  // how many reports arrived (first one wins)
};

// First report wins; later ones only count.
MLXN_HD void report_device_error(DeviceErrorState* state, DeviceErrorCode code, uint32_t site,
                                 int64_t index, int64_t detail, float value) {
#if defined(__CUDA_ARCH__)
  if (atomicCAS(&state->code, 0u, static_cast<uint32_t>(code)) == 0u) {
    state->site = site;
    state->index = index;
    state->detail = detail;
    state->value = value;
  }
  atomicAdd(&state->reports, 1u);
  __threadfence_system();
#else
  uint32_t expected = 0;
  std::atomic_ref<uint32_t> code_ref(state->code);
  if (code_ref.compare_exchange_strong(expected, static_cast<uint32_t>(code))) {
    state->site = site;
    state->index = index;
    state->detail = detail;
    state->value = value;
  }
  std::atomic_ref<uint32_t>(state->reports).fetch_add(1);
#endif
}

}  // namespace mlxn
