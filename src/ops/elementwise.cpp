#include "mlxn/ops/elementwise.h"

#include "backend/cpu/elementwise.h"
#include "mlxn/core/dispatch.h"
#include "ops/backend.h"
#if MLXN_WITH_CUDA
#include "backend/cuda/elementwise/elementwise.h"
#endif

namespace mlxn {

namespace {

Buffer broadcast_input(const char* op, const Buffer& in, const char* name, const Buffer& out) {
  if (in.dtype() != out.dtype()) {
    throw Error(op, std::string(name) + " is " + in.describe() + " but out is " + out.describe() +
                        " (inputs and output share one dtype; cast first)");
  }
  if (in.shape() == out.shape()) return in;
  try {
    return in.broadcast_to(out.shape());
  } catch (const Error&) {
    throw Error(op, std::string(name) + " " + shape_str(in.shape()) +
                        " does not broadcast to out " + shape_str(out.shape()));
  }
}

void binary_op(BinaryOp kind, const char* op, const Buffer& a, const Buffer& b, const Buffer& out,
               const Stream& stream) {
  ops_detail::prepare(op, stream, {{"a", &a}, {"b", &b}, {"out", &out}});
  dispatch_dtype<ComputeDTypes>(op, out.dtype(), [](auto) {});
  const Buffer ab = broadcast_input(op, a, "a", out);
  const Buffer bb = broadcast_input(op, b, "b", out);
  ops_detail::require_no_partial_overlap(op, ab, "a", out);
  ops_detail::require_no_partial_overlap(op, bb, "b", out);
  if (stream.device().is_cpu()) {
    cpu::binary(kind, ab, bb, out, stream);
  } else {
    MLXN_CUDA_BACKEND(cuda::binary(kind, ab, bb, out, stream));
  }
}

}  // namespace

void add(const Buffer& a, const Buffer& b, const Buffer& out, const Stream& stream) {
  binary_op(BinaryOp::add, "add", a, b, out, stream);
}

void mul(const Buffer& a, const Buffer& b, const Buffer& out, const Stream& stream) {
  binary_op(BinaryOp::mul, "mul", a, b, out, stream);
}

void scale(const Buffer& x, ScalarArg factor, const Buffer& out, const Stream& stream) {
  ops_detail::prepare("scale", stream, {{"x", &x}, {"out", &out}});
  dispatch_dtype<ComputeDTypes>("scale", out.dtype(), [](auto) {});
  if (factor.is_indirect()) {
    const Buffer& f = factor.buffer();
    ops_detail::prepare("scale", stream, {{"factor", &f}});
    if (f.dtype() != DType::f32 || f.numel() != 1) {
      throw Error("scale", "an indirect factor must be one f32 element, got " + f.describe());
    }
  }
  const Buffer xb = broadcast_input("scale", x, "x", out);
  ops_detail::require_no_partial_overlap("scale", xb, "x", out);
  if (stream.device().is_cpu()) {
    cpu::scale(xb, factor, out, stream);
  } else {
    MLXN_CUDA_BACKEND(cuda::scale(xb, factor, out, stream));
  }
}

}  // namespace mlxn
