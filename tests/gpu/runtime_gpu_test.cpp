// The core runtime on a real GPU: device properties, pool stream safety and OOM, CUDA-graph
// capture/replay/update, the device error flag, events.
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>

#include "support/support.h"

using namespace mlxn;

namespace {

// Keeps `s` busy for a while: repeated fills of a large buffer (tens of milliseconds).
void occupy(const Stream& s, const Buffer& big) {
  for (int i = 0; i < 40; ++i) fill(big, static_cast<double>(i), s);
}

}  // namespace

TEST(GpuRuntime, DevicePropertiesAreRead) {
  MLXN_REQUIRE_CUDA();
  const DeviceProperties& p = device_properties(Device::cuda(0));
  EXPECT_FALSE(p.name.empty());
  EXPECT_GT(p.multiprocessors, 0);
  EXPECT_GT(p.l2_cache_bytes, 0);
  EXPECT_GE(p.shared_memory_per_block_optin, 48 * 1024);
  EXPECT_GE(p.compute_major, 7);
  std::printf("device: %s, sm_%d%d, %d SMs, L2 %lld MiB, %lld KiB smem/block opt-in\n",
              p.name.c_str(), p.compute_major, p.compute_minor, p.multiprocessors,
              static_cast<long long>(p.l2_cache_bytes >> 20),
              static_cast<long long>(p.shared_memory_per_block_optin >> 10));
  EXPECT_THROW(device_properties(Device::cuda(cuda_device_count())), Error);
}

TEST(GpuRuntime, PoolReusesOnTheSameStreamAtOnce) {
  MLXN_REQUIRE_CUDA();
  BufferPool pool(Device::cuda(0));
  Stream s(Device::cuda(0));
  void* first = nullptr;
  {
    auto a = pool.allocate(1 << 20, s);
    first = a->data();
  }
  auto b = pool.allocate(1 << 20, s);
  EXPECT_EQ(b->data(), first);
  EXPECT_EQ(pool.stats().device_allocations, 1);
}

TEST(GpuRuntime, PoolWithholdsABlockFromOtherStreamsUntilItsWorkIsDone) {
  MLXN_REQUIRE_CUDA();
  BufferPool pool(Device::cuda(0));
  Stream a(Device::cuda(0)), b(Device::cuda(0));
  Buffer big = Buffer::empty({int64_t{1} << 29}, DType::f32, a);  // 2 GiB of work per fill
  void* first = nullptr;
  {
    auto block = pool.allocate(1 << 20, a);
    first = block->data();
    Buffer view(block, {1 << 18}, {1}, DType::f32, 0);
    occupy(a, big);
    fill(view, 1.0, a);  // still queued behind the big fills when the block is freed
  }
  auto other = pool.allocate(1 << 20, b);
  EXPECT_NE(other->data(), first) << "a block with pending work went to another stream";
  a.synchronize();
  auto later = pool.allocate(1 << 20, b);
  EXPECT_EQ(later->data(), first) << "a finished block was not reused";
}

TEST(GpuRuntime, RecordStreamProtectsCrossStreamUse) {
  MLXN_REQUIRE_CUDA();
  BufferPool pool(Device::cuda(0));
  Stream a(Device::cuda(0)), b(Device::cuda(0));
  Buffer big = Buffer::empty({int64_t{1} << 29}, DType::f32, b);
  void* first = nullptr;
  {
    auto block = pool.allocate(1 << 20, a);
    first = block->data();
    Buffer view(block, {1 << 18}, {1}, DType::f32, 0);
    view.record_stream(b);
    occupy(b, big);
    fill(view, 1.0, b);  // used on b, allocated on a
  }
  // Even the owning stream must not get it back while b may still write to it.
  auto again = pool.allocate(1 << 20, a);
  EXPECT_NE(again->data(), first);
  b.synchronize();
}

TEST(GpuRuntime, OutOfMemoryIsACleanError) {
  MLXN_REQUIRE_CUDA();
  Stream s(Device::cuda(0));
  try {
    Buffer::empty({int64_t{1} << 40}, DType::f32, s);  // 4 TiB
    FAIL() << "a 4 TiB allocation succeeded";
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_EQ(m.rfind("[pool] out of memory on cuda:0: cannot allocate 4.00 TiB", 0), 0u) << m;
    EXPECT_NE(m.find("device has"), std::string::npos) << m;
  }
  Buffer fine = Buffer::empty({1024}, DType::f32, s);  // the device is still usable
  fill(fine, 1.0, s);
  EXPECT_EQ(fine.to_host<float>(s)[1023], 1.0f);
}

TEST(GpuRuntime, ArenaOnTheDevice) {
  MLXN_REQUIRE_CUDA();
  Stream s(Device::cuda(0));
  ScratchArena arena(1 << 24, s);
  for (int step = 0; step < 3; ++step) {
    Buffer a = arena.allocate({1000}, DType::f32);
    Buffer b = arena.allocate({1000}, DType::f32);
    fill(a, step, s);
    add(a, a, b, s);
    EXPECT_EQ(b.to_host<float>(s)[999], 2.0f * static_cast<float>(step));
    a = Buffer();
    b = Buffer();
    arena.reset();
  }
}

TEST(GpuRuntime, Graph200LaunchesReplayCorrectlyAndSaveLaunchTime) {
  MLXN_REQUIRE_CUDA();
  Stream s(Device::cuda(0));
  Stream cpu(Device::cpu());
  Buffer x = test::random_buffer({4096}, DType::f32, 1, s);
  Buffer y = test::random_buffer({4096}, DType::f32, 2, s);
  Buffer hx = test::random_buffer({4096}, DType::f32, 1, cpu);
  Buffer hy = test::random_buffer({4096}, DType::f32, 2, cpu);
  auto sequence = [](const Buffer& a, const Buffer& b, const Stream& st) {
    for (int i = 0; i < 100; ++i) {
      add(a, b, a, st);
      scale(a, 0.5, a, st);
    }
  };
  Graph g = Graph::capture(s, [&] { sequence(x, y, s); });
  EXPECT_EQ(g.node_count(), 200);
  g.replay(s);
  sequence(hx, hy, cpu);
  EXPECT_TRUE(test::same_bits(x, hx, s, cpu));

  // Launch cost: 200 eager launches vs one replay, same work (median of 20 runs each).
  auto time_us = [&](auto&& run) {
    std::vector<double> t;
    for (int i = 0; i < 23; ++i) {
      s.synchronize();
      const auto t0 = std::chrono::steady_clock::now();
      run();
      s.synchronize();
      if (i >= 3)
        t.push_back(std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0)
                        .count());
    }
    std::sort(t.begin(), t.end());
    return t[t.size() / 2];
  };
  const double eager = time_us([&] { sequence(x, y, s); });
  const double replay = time_us([&] { g.replay(s); });
  std::printf("200 launches: eager %.1f us, graph replay %.1f us (%.2f us saved per launch)\n",
              eager, replay, (eager - replay) / 200.0);
  EXPECT_LT(replay, eager);
}

TEST(GpuRuntime, GraphSeesNewIndirectScalarsAndUpdatesInPlace) {
  MLXN_REQUIRE_CUDA();
  Stream s(Device::cuda(0));
  Buffer x = Buffer::empty({256}, DType::f32, s);
  Buffer factor = Buffer::empty({1}, DType::f32, s);
  fill(x, 1.0, s);
  Graph g = Graph::capture(s, [&] { scale(x, ScalarArg::from_buffer(factor), x, s); });
  for (float f : {3.0f, 0.25f, -2.0f}) {
    factor.copy_from_host(&f, sizeof f, s);
    g.replay(s);
  }
  EXPECT_EQ(x.to_host<float>(s)[255], -1.5f);
  // Same topology, new immediate: patched in place.
  EXPECT_EQ(g.update(s, [&] { fill(x, 5.0, s); }), Graph::UpdateResult::updated_in_place);
  g.replay(s);
  EXPECT_EQ(x.to_host<float>(s)[0], 5.0f);
  // Different topology: rebuilt.
  EXPECT_EQ(g.update(s,
                     [&] {
                       fill(x, 2.0, s);
                       scale(x, 4.0, x, s);
                     }),
            Graph::UpdateResult::reinstantiated);
  g.replay(s);
  EXPECT_EQ(x.to_host<float>(s)[0], 8.0f);
}

TEST(GpuRuntime, GraphReplayOnAnotherStreamAndAbandonedCapture) {
  MLXN_REQUIRE_CUDA();
  Stream s(Device::cuda(0)), t(Device::cuda(0));
  Buffer x = Buffer::empty({64}, DType::f32, s);
  Graph g = Graph::capture(s, [&] { fill(x, 3.0, s); });
  g.replay(t);
  t.synchronize();
  EXPECT_EQ(x.to_host<float>(s)[0], 3.0f);
  Buffer wrong = Buffer::empty({65}, DType::f32, s);
  EXPECT_THROW(Graph::capture(s, [&] { copy(x, wrong, s); }), Error);
  EXPECT_FALSE(s.is_capturing());
  fill(x, 4.0, s);
  EXPECT_EQ(x.to_host<float>(s)[63], 4.0f);
}

TEST(GpuRuntime, DeviceErrorFlagReportsNonFiniteValues) {
  MLXN_REQUIRE_CUDA();
  Stream s(Device::cuda(0));
  Buffer x = Buffer::empty({3, 1000}, DType::bf16, s);
  fill(x, 1.0, s);
  fill(x.select(0, 1).slice(0, 999, 1000), std::nan(""), s);
  assert_finite(x.slice(0, 0, 1), "rows 0", s);
  EXPECT_NO_THROW(s.synchronize());
  assert_finite(x, "v_cache layer 7", s);
  try {
    s.synchronize();
    FAIL() << "the NaN was not reported";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(),
                 "[assert_finite] non-finite value nan at index 1999 of v_cache layer 7 on cuda:0");
  }
  EXPECT_NO_THROW(s.synchronize());  // cleared
  // Inside a graph too: the flag pointer is fixed at capture.
  Graph g = Graph::capture(s, [&] { assert_finite(x, "graph check", s); });
  g.replay(s);
  EXPECT_THROW(s.synchronize(), Error);
}

TEST(GpuRuntime, EventsTimeDeviceWork) {
  MLXN_REQUIRE_CUDA();
  Stream s(Device::cuda(0));
  Buffer big = Buffer::empty({int64_t{1} << 28}, DType::f32, s);
  Event start(Device::cuda(0)), stop(Device::cuda(0));
  start.record(s);
  fill(big, 1.0, s);
  stop.record(s);
  stop.synchronize();
  EXPECT_TRUE(stop.query());
  const float ms = start.elapsed_ms(stop);
  EXPECT_GT(ms, 0.0f);
  std::printf("fill of 1 GiB: %.3f ms (%.0f GB/s written)\n", ms, 1073741824.0 / (ms * 1e6));
}
