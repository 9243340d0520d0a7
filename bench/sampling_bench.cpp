// Sampling over a 151936-entry vocabulary (Qwen) of f32 logits, batch 1 and 16: argmax and
// sample() with each warper. Timed as CUDA graph replays (as a decode step runs it), eager
// alongside. Bytes: the logits read once. Each case's first draw is checked against the CPU
// reference (the same Gumbel variates give the same token).
#include <cstdio>

#include "harness.h"

using namespace mlxn;
using namespace mlxn::bench;

int main() {
  try {
    if (!have_gpu()) return 1;
    Stream s(Device::cuda(0));
    Stream cpu(Device::cpu());
    const double copy_gbps = report_copy_ceiling(s);
    const int64_t vocab = 151936;
    struct Mode {
      const char* tag;
      SamplingParams params;
    };
    const Mode modes[] = {
        {"argmax", {0.0f, 0, 1.0f, 0.0f}},     {"temperature", {0.7f, 0, 1.0f, 0.0f}},
        {"top_k50", {0.7f, 50, 1.0f, 0.0f}},   {"top_p0.9", {0.7f, 0, 0.9f, 0.0f}},
        {"min_p0.05", {0.7f, 0, 1.0f, 0.05f}}, {"top_k20_top_p0.8", {0.7f, 20, 0.8f, 0.0f}}};
    for (int64_t batch : {1, 16}) {
      Buffer logits = Buffer::empty({batch, vocab}, DType::f32, s);
      fill_random(logits, {Distribution::normal, 3, 0.0f, 3.0f}, s);
      Buffer lc = Buffer::empty({batch, vocab}, DType::f32, cpu);
      copy(logits, lc, s);
      std::vector<int64_t> seed_values(static_cast<size_t>(batch));
      for (size_t i = 0; i < seed_values.size(); ++i) seed_values[i] = static_cast<int64_t>(i + 1);
      const std::vector<int64_t> zeros(static_cast<size_t>(batch), 0);
      const auto i64s = [&](const std::vector<int64_t>& v, const Stream& st) {
        return Buffer::from_host(std::span<const int64_t>(v), {batch}, DType::i64, st);
      };
      for (const Mode& m : modes) {
        const std::string name = std::string("sample_") + m.tag + "_f32_b" + std::to_string(batch) +
                                 "_v" + std::to_string(vocab);
        Buffer seeds = i64s(seed_values, s), steps = i64s(zeros, s);
        Buffer out = Buffer::empty({batch}, DType::i32, s);
        sample(logits, m.params, seeds, steps, out, s);
        Buffer sc = i64s(seed_values, cpu), stc = i64s(zeros, cpu);
        Buffer oc = Buffer::empty({batch}, DType::i32, cpu);
        sample(lc, m.params, sc, stc, oc, cpu);
        validate(out.to_host<int32_t>(s) == oc.to_host<int32_t>(cpu),
                 name + ": tokens differ from the CPU reference");
        Case c;
        c.name = name;
        c.shape = {{"batch", batch},          {"vocab", vocab},
                   {"top_k", m.params.top_k}, {"top_p", m.params.top_p},
                   {"min_p", m.params.min_p}, {"temperature", m.params.temperature}};
        const Graph g = Graph::capture(s, [&] { sample(logits, m.params, seeds, steps, out, s); });
        c.timing = time_device(
            s, [&](int) { g.replay(s); }, 10, 200);
        c.shape["eager_us"] =
            time_device(
                s, [&](int) { sample(logits, m.params, seeds, steps, out, s); }, 10, 200)
                .median_us;
        c.bytes = 4.0 * static_cast<double>(batch * vocab);
        emit(c, copy_gbps);
      }
    }
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "sampling bench failed: %s\n", e.what());
    return 1;
  }
}
