// RoPE on the GPU: a prefill chunk (8192 tokens x 32 heads x 128, bf16: the 8192 x 4096 input of
// the issue) and a decode step (one token, Q and K heads), plus per-head RMSNorm + RoPE fused
// against the unfused pair (rms_norm then rope). Bytes: input read once, output written once.
// Each case is checked against the CPU reference on its first tokens before timing; the decode
// cases are timed as graph replays (as a decode step runs), the prefill cases eagerly.
#include <cmath>
#include <cstdio>
#include <functional>

#include "harness.h"

using namespace mlxn;
using namespace mlxn::bench;

namespace {

void check_tokens(const Buffer& got, const Buffer& want_cpu, const std::string& name,
                  const Stream& s) {
  const int64_t t = want_cpu.dim(0);
  Buffer g = Buffer::empty(want_cpu.shape(), DType::f32, s);
  cast(got.slice(0, 0, t), g, s);
  const auto gv = g.to_host<float>(s);
  Buffer w = Buffer::empty(want_cpu.shape(), DType::f32, Stream(Device::cpu()));
  cast(want_cpu, w, Stream(Device::cpu()));
  const auto wv = w.to_host<float>(Stream(Device::cpu()));
  double worst = 0;
  for (size_t i = 0; i < wv.size(); ++i)
    worst = std::max(worst, std::fabs(double{gv[i]} - wv[i]) / (std::fabs(double{wv[i]}) + 0.05));
  validate(worst < 2e-2, name + ": error " + std::to_string(worst) + " vs the CPU reference");
}

}  // namespace

int main() {
  try {
    if (!have_gpu()) return 1;
    Stream s(Device::cuda(0));
    Stream cpu(Device::cpu());
    const double copy_gbps = report_copy_ceiling(s);
    RopeConfig cfg;
    cfg.head_dim = 128;
    cfg.theta = 500000.0;
    cfg.scaling = RopeScaling::llama3;
    cfg.factor = 8;
    cfg.original_max_position = 8192;
    const RopeTable tg(cfg, s), tc(cfg, cpu);
    struct Shape {
      const char* tag;
      int64_t tokens, heads;
      bool graph;
    };
    for (const Shape sh : {Shape{"8192x32x128", 8192, 32, false}, Shape{"1x32x128", 1, 32, true},
                           Shape{"1x8x128", 1, 8, true}}) {
      const int64_t t = sh.tokens, h = sh.heads, d = 128;
      Buffer x = Buffer::empty({t, h, d}, DType::bf16, s),
             out = Buffer::empty({t, h, d}, DType::bf16, s);
      Buffer normed = Buffer::empty({t, h, d}, DType::bf16, s);
      Buffer w = Buffer::empty({d}, DType::bf16, s);
      fill_random(x, {Distribution::normal, 1, 0, 1}, s);
      fill_random(w, {Distribution::normal, 2, 1.0f, 0.1f}, s);
      std::vector<int32_t> p(static_cast<size_t>(t));
      for (size_t i = 0; i < p.size(); ++i) p[i] = static_cast<int32_t>(i + 100000 * (t == 1));
      Buffer pos = Buffer::from_host(std::span<const int32_t>(p), {t}, DType::i32, s);
      const int64_t check_t = std::min<int64_t>(t, 4);
      Buffer xc = Buffer::empty({check_t, h, d}, DType::bf16, cpu),
             wc = Buffer::empty({d}, DType::bf16, cpu);
      copy(x.slice(0, 0, check_t), xc, s);
      copy(w, wc, s);
      Buffer pc =
          Buffer::from_host(std::span<const int32_t>(p.data(), static_cast<size_t>(check_t)),
                            {check_t}, DType::i32, cpu);
      const double bytes = 2.0 * 2.0 * static_cast<double>(t * h * d);
      struct Op {
        std::string name;
        std::function<void(const Stream&, const Buffer&, const Buffer&, const Buffer&,
                           const RopeTable&, const Buffer&)>
            run;
      };
      const Op ops[] = {
          {std::string("rope_bf16_") + sh.tag,
           [](const Stream& st, const Buffer& xx, const Buffer&, const Buffer& pp,
              const RopeTable& tt, const Buffer& oo) { rope(xx, pp, tt, oo, st); }},
          {std::string("rms_norm_rope_bf16_") + sh.tag,
           [](const Stream& st, const Buffer& xx, const Buffer& ww, const Buffer& pp,
              const RopeTable& tt, const Buffer& oo) {
             rms_norm_rope(xx, ww, 1e-6f, RmsWeight::multiply, pp, tt, oo, st);
           }},
          {std::string("rms_norm_then_rope_bf16_") + sh.tag,
           [&normed](const Stream& st, const Buffer& xx, const Buffer& ww, const Buffer& pp,
                     const RopeTable& tt, const Buffer& oo) {
             const int64_t tk = xx.dim(0);
             Buffer n = st.device().is_cpu() ? Buffer::empty(xx.shape(), xx.dtype(), st)
                                             : normed.slice(0, 0, tk);
             rms_norm(xx.reshape({-1, xx.dim(2)}), ww, 1e-6f, n.reshape({-1, xx.dim(2)}), st);
             rope(n, pp, tt, oo, st);
           }},
      };
      for (const Op& op : ops) {
        op.run(s, x, w, pos, tg, out);
        Buffer oc = Buffer::empty({check_t, h, d}, DType::bf16, cpu);
        op.run(cpu, xc, wc, pc, tc, oc);
        check_tokens(out, oc, op.name, s);
        Case c;
        c.name = op.name;
        c.shape = {{"tokens", t}, {"heads", h}, {"head_dim", d}};
        const bool unfused = op.name.starts_with("rms_norm_then");
        // The unfused pair moves the tensor twice more (the normed copy written and read).
        c.bytes = unfused ? 2 * bytes : bytes;
        if (sh.graph) {
          const Graph g = Graph::capture(s, [&] { op.run(s, x, w, pos, tg, out); });
          c.timing = time_device(s, [&](int) { g.replay(s); });
          c.shape["timing"] = "graph";
        } else {
          c.timing = time_device(s, [&](int) { op.run(s, x, w, pos, tg, out); });
          c.shape["timing"] = "eager";
        }
        emit(c, copy_gbps);
      }
    }
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "rope bench failed: %s\n", e.what());
    return 1;
  }
}
