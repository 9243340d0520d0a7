#include "mlxn/ops/activations.h"

#include <cmath>
#include <string>

#include "backend/cpu/activations.h"
#include "mlxn/core/dispatch.h"
#include "ops/backend.h"
#if MLXN_WITH_CUDA
#include "backend/cuda/activations/activations.h"
#endif

namespace mlxn {

namespace {

void check_activation(const char* op, Activation act) {
  switch (act) {
    case Activation::silu:
    case Activation::gelu_tanh:
    case Activation::gelu_erf:
    case Activation::sigmoid:
      return;
  }
  throw Error(op, "unknown Activation " + std::to_string(static_cast<int>(act)));
}

// Inputs share out's dtype and shape exactly: no broadcasting, no implicit casts.
void check_input(const char* op, const Buffer& in, const char* name, const Buffer& out) {
  if (in.dtype() != out.dtype()) {
    throw Error(op, std::string(name) + " is " + in.describe() + " but out is " + out.describe() +
                        " (inputs and output share one dtype; cast first)");
  }
  ops_detail::require_same_shape(op, in, name, out, "out");
  ops_detail::require_no_partial_overlap(op, in, name, out);
}

void check_out(const char* op, const Buffer& out) {
  dispatch_dtype<ComputeDTypes>(
      op, out.dtype(), [](auto) {}, "out dtype");
}

}  // namespace

void activate(const Buffer& x, Activation act, const Buffer& out, const Stream& stream) {
  const char* op = "activate";
  ops_detail::prepare(op, stream, {{"x", &x}, {"out", &out}});
  check_activation(op, act);
  check_out(op, out);
  check_input(op, x, "x", out);
  if (out.numel() == 0) return;
  if (stream.device().is_cpu()) {
    cpu::activate(x, Buffer(), act, out, stream);
  } else {
    MLXN_CUDA_BACKEND(cuda::activate(x, Buffer(), act, out, stream));
  }
}

void gated_activation(const Buffer& gate, const Buffer& up, Activation act, const Buffer& out,
                      const Stream& stream) {
  const char* op = "gated_activation";
  ops_detail::prepare(op, stream, {{"gate", &gate}, {"up", &up}, {"out", &out}});
  check_activation(op, act);
  check_out(op, out);
  check_input(op, gate, "gate", out);
  check_input(op, up, "up", out);
  if (out.numel() == 0) return;
  if (stream.device().is_cpu()) {
    cpu::activate(gate, up, act, out, stream);
  } else {
    MLXN_CUDA_BACKEND(cuda::activate(gate, up, act, out, stream));
  }
}

void softcap(const Buffer& x, float cap, const Buffer& out, const Stream& stream) {
  const char* op = "softcap";
  ops_detail::prepare(op, stream, {{"x", &x}, {"out", &out}});
  if (!(cap > 0.0f) || !std::isfinite(cap)) {
    throw Error(op, "cap must be finite and > 0, got " + std::to_string(cap));
  }
  check_out(op, out);
  check_input(op, x, "x", out);
  if (out.numel() == 0) return;
  if (stream.device().is_cpu()) {
    cpu::softcap(x, cap, out, stream);
  } else {
    MLXN_CUDA_BACKEND(cuda::softcap(x, cap, out, stream));
  }
}

const char* activation_name(Activation act) {
  switch (act) {
    case Activation::silu:
      return "silu";
    case Activation::gelu_tanh:
      return "gelu_tanh";
    case Activation::gelu_erf:
      return "gelu_erf";
    case Activation::sigmoid:
      return "sigmoid";
  }
  return "unknown";
}

}  // namespace mlxn
