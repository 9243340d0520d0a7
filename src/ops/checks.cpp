#include "mlxn/ops/checks.h"

#include "backend/cpu/checks.h"
#include "mlxn/core/device_errors.h"
#include "mlxn/core/dispatch.h"
#include "ops/backend.h"
#if MLXN_WITH_CUDA
#include "backend/cuda/checks/checks.h"
#endif

namespace mlxn {

void assert_finite(const Buffer& x, std::string_view label, const Stream& stream) {
  ops_detail::prepare("assert_finite", stream, {{"x", &x}});
  dispatch_dtype<FloatDTypes>("assert_finite", x.dtype(), [](auto) {});
  const uint32_t site = register_error_site("assert_finite", label);
  if (stream.device().is_cpu()) {
    cpu::assert_finite(x, site, stream);
  } else {
    MLXN_CUDA_BACKEND(cuda::assert_finite(x, site, stream));
  }
}

}  // namespace mlxn
