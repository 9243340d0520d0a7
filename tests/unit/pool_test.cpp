// BufferPool and ScratchArena on the CPU device (the same code serves CUDA; the GPU-only
// stream-ordering cases are in tests/gpu/runtime_gpu_test.cpp).
#include <gtest/gtest.h>

#include <cstring>

#include "support/support.h"

using namespace mlxn;
using mlxn::test::error_of;
using mlxn::test::throws_error;

namespace {}  // namespace

TEST(Pool, SizeClassesCoverTheRequestWithBoundedWaste) {
  for (int64_t bytes :
       std::initializer_list<int64_t>{1, 255, 256, 257, 4095, 4096, 4097, 10000, 1 << 20,
                                      (1 << 20) + 1, 123456789, int64_t{3} << 33}) {
    const int64_t c = BufferPool::size_class(bytes);
    EXPECT_GE(c, bytes);
    EXPECT_EQ(c % 256, 0) << bytes;
    if (bytes > 4096) {
      EXPECT_LE(static_cast<double>(c), static_cast<double>(bytes) * 1.125) << bytes;
    }
  }
  EXPECT_EQ(BufferPool::size_class(0), 256);
}

TEST(Pool, FreedBlockIsReusedForTheSameClass) {
  BufferPool pool(Device::cpu());
  Stream s(Device::cpu());
  void* first = nullptr;
  {
    auto a = pool.allocate(10000, s);
    first = a->data();
    EXPECT_EQ(pool.stats().in_use_bytes, BufferPool::size_class(10000));
    EXPECT_EQ(pool.stats().requested_bytes, 10000);
  }
  EXPECT_EQ(pool.stats().in_use_bytes, 0);
  EXPECT_EQ(pool.stats().cached_bytes, BufferPool::size_class(10000));
  auto b = pool.allocate(9990, s);  // same size class
  EXPECT_EQ(b->data(), first);
  const PoolStats st = pool.stats();
  EXPECT_EQ(st.allocations, 2);
  EXPECT_EQ(st.cache_hits, 1);
  EXPECT_EQ(st.device_allocations, 1);
  EXPECT_EQ(st.cached_bytes, 0);
}

TEST(Pool, ExactAllocationsHaveNoSizeClassWaste) {
  BufferPool pool(Device::cpu());
  Stream s(Device::cpu());
  const int64_t weight_bytes = (int64_t{1} << 24) + 512;  // a size class would add 2 MiB
  auto w = pool.allocate(weight_bytes, s, AllocationKind::exact);
  EXPECT_EQ(w->size(), weight_bytes);
  EXPECT_EQ(pool.stats().in_use_bytes, weight_bytes);
  auto odd = pool.allocate(1000, s, AllocationKind::exact);
  EXPECT_EQ(odd->size(), 1024);  // rounded to the 256-byte granule only
  EXPECT_EQ(reinterpret_cast<uintptr_t>(w->data()) % 256, 0u);
}

TEST(Pool, PeakAndTrim) {
  BufferPool pool(Device::cpu());
  Stream s(Device::cpu());
  {
    auto a = pool.allocate(1 << 20, s);
    auto b = pool.allocate(1 << 20, s);
    EXPECT_EQ(pool.stats().peak_in_use_bytes, 2 << 20);
  }
  EXPECT_EQ(pool.stats().cached_bytes, 2 << 20);
  EXPECT_EQ(pool.trim(), 2 << 20);
  const PoolStats st = pool.stats();
  EXPECT_EQ(st.cached_bytes, 0);
  EXPECT_EQ(st.device_frees, 2);
  EXPECT_EQ(st.peak_in_use_bytes, 2 << 20);
}

TEST(Pool, LimitGivesACleanOutOfMemoryErrorWithTheSizes) {
  BufferPool pool(Device::cpu());
  Stream s(Device::cpu());
  pool.set_limit(4 << 20);
  auto a = pool.allocate(3 << 20, s);
  const std::string message = error_of([&] { pool.allocate(2 << 20, s); });
  EXPECT_EQ(message.rfind("[pool] out of memory on cpu", 0), 0u) << message;
  EXPECT_NE(message.find("cannot allocate 2.00 MiB"), std::string::npos) << message;
  EXPECT_NE(message.find("in use 3.00 MiB"), std::string::npos) << message;
  EXPECT_NE(message.find("pool limit 4.00 MiB"), std::string::npos) << message;
  // The pool is still usable after the error.
  EXPECT_NO_THROW(pool.allocate(1 << 20, s));
}

TEST(Pool, LimitReleasesTheCacheBeforeGivingUp) {
  BufferPool pool(Device::cpu());
  Stream s(Device::cpu());
  pool.set_limit(4 << 20);
  { auto a = pool.allocate(3 << 20, s); }
  EXPECT_EQ(pool.stats().cached_bytes, 3 << 20);
  auto b = pool.allocate(int64_t{7} << 19, s);  // a different class: fits only without the cache
  EXPECT_EQ(pool.stats().cached_bytes, 0);
  EXPECT_EQ(pool.stats().device_frees, 1);
}

TEST(Pool, HostAllocationFailureIsAnError) {
  BufferPool pool(Device::cpu());
  Stream s(Device::cpu());
  const std::string message = error_of([&] { pool.allocate(int64_t{1} << 60, s); });
  EXPECT_EQ(message.rfind("[pool] out of memory on cpu", 0), 0u) << message;
}

TEST(Pool, AllocationsMayOutliveTheirPool) {
  Stream s(Device::cpu());
  std::shared_ptr<Allocation> survivor;
  {
    BufferPool pool(Device::cpu());
    survivor = pool.allocate(4096, s);
  }
  std::memset(survivor->data(), 1, 4096);  // still valid memory
  survivor.reset();                        // and freeing it is safe
  SUCCEED();
}

TEST(Pool, StreamOfAnotherDeviceIsRejected) {
  MLXN_REQUIRE_CUDA();
  BufferPool pool(Device::cpu());
  Stream gpu(Device::cuda(0));
  EXPECT_THROW(pool.allocate(256, gpu), Error);
}

TEST(Pool, CpuBlocksMoveFreelyBetweenStreams) {
  // CPU streams run work at submission, so a freed block is safe on any stream at once.
  BufferPool pool(Device::cpu());
  Stream a(Device::cpu()), b(Device::cpu());
  void* first = nullptr;
  {
    auto x = pool.allocate(8192, a);
    first = x->data();
  }
  auto y = pool.allocate(8192, b);
  EXPECT_EQ(y->data(), first);
}

TEST(Arena, BumpAllocatesAlignedAndResets) {
  Stream s(Device::cpu());
  BufferPool pool(Device::cpu());
  ScratchArena arena(1 << 20, s, &pool);
  EXPECT_EQ(arena.capacity_bytes(), 1 << 20);
  {
    Buffer a = arena.allocate({100}, DType::f32);  // 400 bytes
    Buffer b = arena.allocate({3}, DType::bf16);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(b.data()) - reinterpret_cast<uintptr_t>(a.data()), 512u);
    EXPECT_TRUE(b.is_aligned(256));
    EXPECT_EQ(arena.live_buffers(), 2);
    EXPECT_EQ(arena.used_bytes(), 512 + 6);
    // Arena memory is real memory.
    fill(a, 3.0, s);
    EXPECT_EQ(a.to_host<float>(s)[99], 3.0f);
  }
  EXPECT_EQ(arena.live_buffers(), 0);
  arena.reset();
  EXPECT_EQ(arena.used_bytes(), 0);
  EXPECT_EQ(arena.high_water_bytes(), 512 + 6);
  // One device allocation for the whole arena, whatever was handed out.
  EXPECT_EQ(pool.stats().device_allocations, 1);
}

TEST(Arena, RefusesToResetUnderLiveBuffers) {
  Stream s(Device::cpu());
  ScratchArena arena(4096, s);
  Buffer keep = arena.allocate({16}, DType::f32);
  const std::string message = error_of([&] { arena.reset(); });
  EXPECT_EQ(message, "[arena] reset() while 1 buffer(s) from this arena are alive");
  Buffer view = keep.slice(0, 2, 4);  // views count through their shared allocation
  keep = Buffer();
  EXPECT_THROW(arena.reset(), Error);
  view = Buffer();
  EXPECT_NO_THROW(arena.reset());
}

TEST(Arena, OverflowIsAnErrorThatNamesTheSizes) {
  Stream s(Device::cpu());
  ScratchArena arena(4096, s);
  Buffer a = arena.allocate({512}, DType::f32);  // 2 KiB
  const std::string message = error_of([&] { arena.allocate({1024}, DType::f32); });
  EXPECT_NE(message.find("[arena] out of scratch space: [1024] f32 needs 4.00 KiB"),
            std::string::npos)
      << message;
  EXPECT_NE(message.find("2.00 KiB of 4.00 KiB already used"), std::string::npos) << message;
}
