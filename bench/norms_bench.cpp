// Row normalisations on the GPU, 8192 rows x 4096 bf16 (a prefill chunk of a 4096-wide model),
// against the device-copy ceiling. Bytes: inputs read once and outputs written once (the weight
// is 8 KB). Each case is checked against the CPU reference on its first rows before timing.
#include <cmath>
#include <cstdio>
#include <functional>

#include "harness.h"

using namespace mlxn;
using namespace mlxn::bench;

namespace {

void check_rows(const Buffer& got, const std::vector<float>& want_rows, const std::string& name,
                const Stream& s) {
  const std::vector<uint16_t> bits = got.slice(0, 0, 4).reshape({-1}).to_host<uint16_t>(s);
  double worst = 0;
  for (size_t i = 0; i < want_rows.size(); ++i) {
    const float g = float_bits::bf16_to_f32(bits[i]);
    worst = std::max(
        worst, std::fabs(double{g} - want_rows[i]) / (std::fabs(double{want_rows[i]}) + 1e-3));
  }
  validate(worst < 1e-2,
           name + ": relative error " + std::to_string(worst) + " vs the CPU reference");
}

}  // namespace

int main() {
  try {
    if (!have_gpu()) return 1;
    Stream s(Device::cuda(0));
    Stream cpu(Device::cpu());
    const double copy_gbps = report_copy_ceiling(s);
    const int64_t rows = 8192, n = 4096;
    Buffer x = Buffer::empty({rows, n}, DType::bf16, s),
           r = Buffer::empty({rows, n}, DType::bf16, s);
    Buffer w = Buffer::empty({n}, DType::bf16, s), b = Buffer::empty({n}, DType::bf16, s);
    Buffer out = Buffer::empty({rows, n}, DType::bf16, s),
           sum = Buffer::empty({rows, n}, DType::bf16, s);
    fill_random(x, {Distribution::normal, 1, 0, 1}, s);
    fill_random(r, {Distribution::normal, 2, 0, 1}, s);
    fill_random(w, {Distribution::normal, 3, 1.0f, 0.1f}, s);
    fill_random(b, {Distribution::normal, 4, 0.0f, 0.1f}, s);
    // The first 4 rows on the CPU, as the reference for each case.
    const auto on_cpu = [&](const Buffer& t) {
      Buffer h = Buffer::empty(t.shape(), t.dtype(), cpu);
      copy(t, h, s);
      return h;
    };
    const Buffer xc = on_cpu(x.slice(0, 0, 4)), rc = on_cpu(r.slice(0, 0, 4));
    const Buffer wc = on_cpu(w), bc = on_cpu(b);
    struct Op {
      const char* name;
      double bytes;
      std::function<void(const Stream&, const Buffer&, const Buffer&, const Buffer&, const Buffer&,
                         const Buffer&, const Buffer&)>
          run;
    };
    const double plane = 2.0 * rows * n;
    const Op ops[] = {
        {"rms_norm_bf16_8192x4096", 2 * plane,
         [](const Stream& st, const Buffer& xx, const Buffer&, const Buffer& ww, const Buffer&,
            const Buffer&, const Buffer& oo) { rms_norm(xx, ww, 1e-6f, oo, st); }},
        {"add_rms_norm_bf16_8192x4096", 4 * plane,
         [](const Stream& st, const Buffer& xx, const Buffer& rr, const Buffer& ww, const Buffer&,
            const Buffer& ss, const Buffer& oo) { add_rms_norm(xx, rr, ww, 1e-6f, ss, oo, st); }},
        {"layer_norm_bf16_8192x4096", 2 * plane,
         [](const Stream& st, const Buffer& xx, const Buffer&, const Buffer& ww, const Buffer& bb,
            const Buffer&, const Buffer& oo) { layer_norm(xx, ww, bb, 1e-5f, oo, st); }},
        {"l2_norm_bf16_8192x4096", 2 * plane,
         [](const Stream& st, const Buffer& xx, const Buffer&, const Buffer&, const Buffer&,
            const Buffer&, const Buffer& oo) { l2_norm(xx, 1e-6f, oo, st); }},
    };
    for (const Op& op : ops) {
      op.run(s, x, r, w, b, sum, out);
      Buffer oc = Buffer::empty({4, n}, DType::f32, cpu),
             sc = Buffer::empty({4, n}, DType::bf16, cpu);
      op.run(cpu, xc, rc, wc, bc, sc, oc);
      check_rows(out, oc.to_host<float>(cpu), op.name, s);
      Case c;
      c.name = op.name;
      c.shape = {{"rows", rows}, {"n", n}};
      c.timing = time_device(s, [&](int) { op.run(s, x, r, w, b, sum, out); });
      c.bytes = op.bytes;
      emit(c, copy_gbps);
    }
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "norms bench failed: %s\n", e.what());
    return 1;
  }
}
