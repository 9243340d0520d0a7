// Launch overhead: a 200-launch sequence of small elementwise ops (the shape of a decode step)
// issued eagerly vs replayed as one captured graph.
#include <cstdio>

#include "harness.h"

using namespace mlxn;
using namespace mlxn::bench;

int main() {
  try {
    if (!have_gpu()) return 1;
    Stream s(Device::cuda(0));
    Stream cpu(Device::cpu());
    for (int64_t elements : {int64_t{4096}, int64_t{1} << 20}) {
      Buffer x = Buffer::empty({elements}, DType::bf16, s);
      Buffer y = Buffer::empty({elements}, DType::bf16, s);
      fill_random(x, {Distribution::normal, 1, 0, 1}, s);
      fill_random(y, {Distribution::normal, 2, 0, 1}, s);
      auto sequence = [&] {
        for (int i = 0; i < 100; ++i) {
          add(x, y, x, s);
          scale(x, 0.5, x, s);
        }
      };
      Graph g = Graph::capture(s, sequence);
      validate(g.node_count() == 200, "graph has 200 nodes");
      {
        // Replay and eager execution must agree before either is timed.
        Buffer x0 = Buffer::empty({elements}, DType::bf16, s);
        copy(x, x0, s);
        g.replay(s);
        Buffer replayed = Buffer::empty({elements}, DType::bf16, s);
        copy(x, replayed, s);
        copy(x0, x, s);
        sequence();
        validate(replayed.to_host<uint16_t>(s) == x.to_host<uint16_t>(s), "replay == eager");
      }
      const Timing eager = time_device(
          s, [&](int) { sequence(); }, 3, 30);
      const Timing replay = time_device(
          s, [&](int) { g.replay(s); }, 3, 30);
      const nlohmann::json shape = {{"launches", 200}, {"elements", elements}, {"dtype", "bf16"}};
      emit({"sequence_eager", shape, eager, 0, 0});
      auto j = emit({"sequence_graph_replay", shape, replay, 0, 0});
      std::printf("%s\n", nlohmann::json({{"name", "graph_launch_saving"},
                                          {"shape", shape},
                                          {"eager_us_per_launch", eager.median_us / 200},
                                          {"replay_us_per_launch", replay.median_us / 200},
                                          {"speedup", eager.median_us / replay.median_us}})
                              .dump()
                              .c_str());
    }
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "mlxn_bench_graph: %s\n", e.what());
    return 1;
  }
}
