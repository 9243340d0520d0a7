#include "backend/cpu/elementwise.h"

#include <cstring>

#include "backend/cpu/cpu_types.h"
#include "mlxn/core/dispatch.h"

namespace mlxn::cpu {

void binary(BinaryOp op, const Buffer& a, const Buffer& b, const Buffer& out,
            const Stream& stream) {
  stream.submit_host([op, a, b, out] {
    dispatch_dtype<ComputeDTypes>(op == BinaryOp::add ? "add" : "mul", out.dtype(), [&](auto tag) {
      using T = host_type_t<decltype(tag)::value>;
      for_each_element<3>(out.shape(), {&a, &b, &out}, [&](auto p, int64_t) {
        T x, y;
        std::memcpy(&x, p[0], sizeof(T));
        std::memcpy(&y, p[1], sizeof(T));
        const float r = op == BinaryOp::add ? to_f32(x) + to_f32(y) : to_f32(x) * to_f32(y);
        const T stored = from_f32<T>(r);
        std::memcpy(p[2], &stored, sizeof(T));
      });
    });
  });
}

void scale(const Buffer& x, ScalarArg factor, const Buffer& out, const Stream& stream) {
  stream.submit_host([x, factor, out] {
    const float f = factor.is_indirect() ? *factor.buffer().data_as<const float>()
                                         : static_cast<float>(factor.value());
    dispatch_dtype<ComputeDTypes>("scale", out.dtype(), [&](auto tag) {
      using T = host_type_t<decltype(tag)::value>;
      for_each_element<2>(out.shape(), {&x, &out}, [&](auto p, int64_t) {
        T v;
        std::memcpy(&v, p[0], sizeof(T));
        const T stored = from_f32<T>(to_f32(v) * f);
        std::memcpy(p[1], &stored, sizeof(T));
      });
    });
  });
}

}  // namespace mlxn::cpu
