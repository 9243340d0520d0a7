#include "backend/cpu/checks.h"

#include <cmath>
#include <cstring>

#include "backend/cpu/cpu_types.h"
#include "mlxn/core/device_errors.h"
#include "mlxn/core/dispatch.h"
#include "portable/error_state.h"

namespace mlxn::cpu {

void assert_finite(const Buffer& x, uint32_t site, const Stream& stream) {
  DeviceErrorState* flag = device_error_state(Device::cpu());
  stream.submit_host([x, site, flag] {
    dispatch_dtype<FloatDTypes>("assert_finite", x.dtype(), [&](auto tag) {
      using T = host_type_t<decltype(tag)::value>;
      bool reported = false;
      for_each_element<1>(x.shape(), {&x}, [&](auto p, int64_t i) {
        if (reported) return;
        T v;
        std::memcpy(&v, p[0], sizeof(T));
        const float f = to_f32(v);
        if (!std::isfinite(f)) {
          report_device_error(flag, DeviceErrorCode::non_finite, site, i, 0, f);
          reported = true;
        }
      });
    });
  });
}

}  // namespace mlxn::cpu
