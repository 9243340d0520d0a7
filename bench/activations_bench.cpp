// Activations and softmax on the GPU against the device-copy ceiling: the gated MLP activations,
// logit soft-capping and softmax / log-softmax over 8192 rows x 4096 bf16 (a prefill chunk of a
// 4096-wide model), the gated form also on the two halves of a fused [8192, 8192] gate/up
// projection, and a softmax over one 151936-entry f32 vocabulary row (a sampling step; its 1.2 MB
// stay in L2 between runs, here and in the PyTorch peer). Bytes: inputs read once and outputs
// written once. Each case is checked against the CPU reference on its first rows before timing.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "harness.h"

using namespace mlxn;
using namespace mlxn::bench;

namespace {

using Run = std::function<void(const Stream&, const Buffer& a, const Buffer& b, const Buffer& out)>;

struct Op {
  const char* name;
  Buffer a, b, out;  // on the GPU; b undefined for one-input ops
  double bytes;
  Run run;
};

// The first `rows` rows of a GPU buffer (or view) as a contiguous CPU buffer.
Buffer head_on_cpu(const Buffer& t, int64_t rows, const Stream& gpu, const Stream& cpu) {
  Buffer g = Buffer::empty({rows, t.dim(-1)}, t.dtype(), gpu);
  copy(t.slice(0, 0, rows), g, gpu);
  Buffer h = Buffer::empty(g.shape(), g.dtype(), cpu);
  copy(g, h, gpu);
  return h;
}

std::vector<float> as_f32(const Buffer& h, const Stream& cpu) {
  Buffer f = Buffer::empty(h.shape(), DType::f32, cpu);
  cast(h, f, cpu);
  return f.to_host<float>(cpu);
}

// The op on the first rows, on the CPU, against the GPU's output there: within the output's
// rounding (bf16: 2^-8 relative) with room for the f32 evaluation.
void check_rows(const Op& op, const Stream& gpu, const Stream& cpu) {
  const int64_t rows = std::min<int64_t>(4, op.out.dim(0));
  const Buffer a = head_on_cpu(op.a, rows, gpu, cpu);
  const Buffer b = op.b.defined() ? head_on_cpu(op.b, rows, gpu, cpu) : Buffer();
  Buffer want = Buffer::empty(a.shape(), op.out.dtype(), cpu);
  op.run(cpu, a, b, want);
  const std::vector<float> w = as_f32(want, cpu);
  const std::vector<float> g = as_f32(head_on_cpu(op.out, rows, gpu, cpu), cpu);
  double worst = 0;
  for (size_t i = 0; i < w.size(); ++i) {
    const double err = std::fabs(double{g[i]} - w[i]) / (std::fabs(double{w[i]}) + 1e-30);
    worst = std::max(worst, std::isnan(err) ? INFINITY : err);
  }
  validate(worst < 1e-2, std::string(op.name) + ": relative error " + std::to_string(worst) +
                             " vs the CPU reference");
}

}  // namespace

int main() {
  try {
    if (!have_gpu()) return 1;
    Stream s(Device::cuda(0));
    Stream cpu(Device::cpu());
    const double copy_gbps = report_copy_ceiling(s);
    const int64_t rows = 8192, n = 4096, vocab = 151936;
    const auto random = [&](Shape shape, DType t, uint64_t seed, float sigma) {
      Buffer b = Buffer::empty(std::move(shape), t, s);
      fill_random(b, {Distribution::normal, seed, 0.0f, sigma}, s);
      return b;
    };
    const Buffer g = random({rows, n}, DType::bf16, 1, 2.0f);
    const Buffer u = random({rows, n}, DType::bf16, 2, 1.0f);
    const Buffer fused = random({rows, 2 * n}, DType::bf16, 3, 2.0f);
    const Buffer logits = random({1, vocab}, DType::f32, 4, 3.0f);
    const Buffer out = Buffer::empty({rows, n}, DType::bf16, s);
    const Buffer probs = Buffer::empty({1, vocab}, DType::f32, s);
    const auto gated = [](Activation act) -> Run {
      return [act](const Stream& st, const Buffer& a, const Buffer& b, const Buffer& o) {
        gated_activation(a, b, act, o, st);
      };
    };
    const double plane = 2.0 * rows * n;
    const Op ops[] = {
        {"silu_mul_bf16_8192x4096", g, u, out, 3 * plane, gated(Activation::silu)},
        {"silu_mul_fused_bf16_8192x4096", fused.slice(1, 0, n), fused.slice(1, n, 2 * n), out,
         3 * plane, gated(Activation::silu)},
        {"gelu_tanh_mul_bf16_8192x4096", g, u, out, 3 * plane, gated(Activation::gelu_tanh)},
        {"sigmoid_mul_bf16_8192x4096", g, u, out, 3 * plane, gated(Activation::sigmoid)},
        {"softcap_bf16_8192x4096", g, Buffer(), out, 2 * plane,
         [](const Stream& st, const Buffer& a, const Buffer&, const Buffer& o) {
           softcap(a, 30.0f, o, st);
         }},
        {"softmax_bf16_8192x4096", g, Buffer(), out, 2 * plane,
         [](const Stream& st, const Buffer& a, const Buffer&, const Buffer& o) {
           softmax(a, o, st);
         }},
        {"log_softmax_bf16_8192x4096", g, Buffer(), out, 2 * plane,
         [](const Stream& st, const Buffer& a, const Buffer&, const Buffer& o) {
           log_softmax(a, o, st);
         }},
        {"softmax_f32_1x151936", logits, Buffer(), probs, 2.0 * 4 * vocab,
         [](const Stream& st, const Buffer& a, const Buffer&, const Buffer& o) {
           softmax(a, o, st);
         }},
    };
    for (const Op& op : ops) {
      op.run(s, op.a, op.b, op.out);
      check_rows(op, s, cpu);
      Case c;
      c.name = op.name;
      c.shape = {{"rows", op.out.dim(0)}, {"n", op.out.dim(1)}};
      c.timing = time_device(s, [&](int) { op.run(s, op.a, op.b, op.out); });
      c.bytes = op.bytes;
      emit(c, copy_gbps);
    }
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "activations bench failed: %s\n", e.what());
    return 1;
  }
}
