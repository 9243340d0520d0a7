#include "backend/cuda/device/map.cuh"
#include "backend/cuda/device/types.cuh"
#include "backend/cuda/elementwise/elementwise.h"
#include "mlxn/core/dispatch.h"

namespace mlxn::cuda {

namespace {

// __fadd_rn / __fmul_rn: one rounding each, never fused, exactly as the CPU reference computes.
template <class T, BinaryOp kOp>
struct Binary {
  __device__ T operator()(int64_t, const T (&v)[2]) const {
    const float a = to_float(v[0]), b = to_float(v[1]);
    return from_float<T>(kOp == BinaryOp::add ? __fadd_rn(a, b) : __fmul_rn(a, b));
  }
};

template <class T>
struct Scale {
  float factor;
  const float* indirect;  // [1] f32 read at run time, or nullptr
  __device__ T operator()(int64_t, const T (&v)[1]) const {
    return from_float<T>(__fmul_rn(to_float(v[0]), indirect ? *indirect : factor));
  }
};

}  // namespace

void binary(BinaryOp op, const Buffer& a, const Buffer& b, const Buffer& out,
            const Stream& stream) {
  dispatch_dtype<ComputeDTypes>(op == BinaryOp::add ? "add" : "mul", out.dtype(), [&](auto tag) {
    using T = device_type_t<decltype(tag)::value>;
    if (op == BinaryOp::add) {
      launch_map<2, T, T>(out, {&a, &b}, Binary<T, BinaryOp::add>{}, stream);
    } else {
      launch_map<2, T, T>(out, {&a, &b}, Binary<T, BinaryOp::mul>{}, stream);
    }
  });
}

void scale(const Buffer& x, ScalarArg factor, const Buffer& out, const Stream& stream) {
  const float f = static_cast<float>(factor.value());
  const float* indirect = factor.is_indirect() ? factor.buffer().data_as<const float>() : nullptr;
  dispatch_dtype<ComputeDTypes>("scale", out.dtype(), [&](auto tag) {
    using T = device_type_t<decltype(tag)::value>;
    launch_map<1, T, T>(out, {&x}, Scale<T>{f, indirect}, stream);
  });
}

}  // namespace mlxn::cuda
