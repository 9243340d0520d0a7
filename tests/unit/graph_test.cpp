// Graph capture and replay on the CPU backend (the CUDA-graph path is in tests/gpu).
#include <gtest/gtest.h>

#include "support/support.h"

using namespace mlxn;

namespace {

// 200 launches: alternating adds and scales that an eager run and a replay must agree on.
void record_sequence(const Buffer& x, const Buffer& y, const Stream& s) {
  for (int i = 0; i < 100; ++i) {
    add(x, y, x, s);
    scale(x, 0.5, x, s);
  }
}

}  // namespace

TEST(Graph, ReplayOf200LaunchesMatchesEagerExecution) {
  Stream s(Device::cpu());
  Buffer x = test::random_buffer({1000}, DType::f32, 1, s);
  Buffer y = test::random_buffer({1000}, DType::f32, 2, s);
  Buffer x_eager = Buffer::empty({1000}, DType::f32, s);
  copy(x, x_eager, s);
  const std::vector<double> before = test::to_f64(x, s);

  Graph g = Graph::capture(s, [&] { record_sequence(x, y, s); });
  EXPECT_EQ(g.node_count(), 200);
  // Capture records; it does not run anything.
  EXPECT_EQ(test::to_f64(x, s), before);

  record_sequence(x_eager, y, s);
  g.replay(s);
  EXPECT_TRUE(test::same_bits(x, x_eager, s, s));
  record_sequence(x_eager, y, s);
  g.replay(s);
  EXPECT_TRUE(test::same_bits(x, x_eager, s, s));
}

TEST(Graph, IndirectScalarsChangeBetweenReplaysWithoutRecapture) {
  Stream s(Device::cpu());
  Buffer x = Buffer::empty({8}, DType::f32, s);
  Buffer factor = Buffer::empty({1}, DType::f32, s);
  fill(x, 1.0, s);
  Graph g = Graph::capture(s, [&] { scale(x, ScalarArg::from_buffer(factor), x, s); });
  for (float f : {3.0f, 0.25f, -2.0f}) {
    factor.copy_from_host(&f, sizeof f, s);
    g.replay(s);
  }
  EXPECT_EQ(x.to_host<float>(s)[7], 1.0f * 3.0f * 0.25f * -2.0f);
}

TEST(Graph, KeepsItsBuffersAlive) {
  Stream s(Device::cpu());
  Buffer out = Buffer::empty({4}, DType::f32, s);
  Graph g = [&] {
    Buffer temp = Buffer::empty({4}, DType::f32, s);  // dropped after capture
    return Graph::capture(s, [&] {
      fill(temp, 7.0, s);
      copy(temp, out, s);
    });
  }();
  g.replay(s);
  EXPECT_EQ(out.to_host<float>(s), std::vector<float>(4, 7.0f));
}

TEST(Graph, UpdateReplacesFrozenArguments) {
  Stream s(Device::cpu());
  Buffer x = Buffer::empty({4}, DType::f32, s);
  Graph g = Graph::capture(s, [&] { fill(x, 1.0, s); });
  EXPECT_EQ(g.update(s, [&] { fill(x, 5.0, s); }), Graph::UpdateResult::updated_in_place);
  g.replay(s);
  EXPECT_EQ(x.to_host<float>(s)[0], 5.0f);
  EXPECT_EQ(g.update(s,
                     [&] {
                       fill(x, 2.0, s);
                       scale(x, 4.0, x, s);
                     }),
            Graph::UpdateResult::reinstantiated);
  g.replay(s);
  EXPECT_EQ(x.to_host<float>(s)[3], 8.0f);
}

TEST(Graph, AFailedCaptureLeavesTheStreamUsable) {
  Stream s(Device::cpu());
  Buffer x = Buffer::empty({4}, DType::f32, s);
  Buffer wrong = Buffer::empty({5}, DType::f32, s);
  EXPECT_THROW(Graph::capture(s, [&] { copy(x, wrong, s); }), Error);
  EXPECT_FALSE(s.is_capturing());
  fill(x, 2.0, s);  // runs eagerly again
  EXPECT_EQ(x.to_host<float>(s)[0], 2.0f);
}

TEST(Graph, MisuseDuringCaptureIsAnError) {
  Stream s(Device::cpu());
  Buffer x = Buffer::empty({4}, DType::f32, s);
  EXPECT_THROW(Graph::capture(s, [&] { Graph::capture(s, [] {}); }), Error);
  EXPECT_THROW(Graph::capture(s, [&] { s.synchronize(); }), Error);
  EXPECT_THROW(Graph::capture(s, [&] { (void)x.to_host<float>(s); }), Error);
  EXPECT_FALSE(s.is_capturing());
}

TEST(Graph, ReplayOnAnotherDeviceIsRejected) {
  MLXN_REQUIRE_CUDA();
  Stream cpu(Device::cpu());
  Buffer x = Buffer::empty({4}, DType::f32, cpu);
  Graph g = Graph::capture(cpu, [&] { fill(x, 1.0, cpu); });
  EXPECT_THROW(g.replay(Stream(Device::cuda(0))), Error);
}
