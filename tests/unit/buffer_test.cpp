// Buffer on the CPU: construction, host copies, views (contents through any strides), lifetime,
// bounds and rank checks.
#include <gtest/gtest.h>

#include <cstdint>
#include <functional>
#include <initializer_list>
#include <numeric>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "mlxn/mlxn.h"
#include "support/support.h"

using namespace mlxn;
using mlxn::test::error_of;
using mlxn::test::throws_error;

namespace {

// A contiguous f32 buffer holding 0, 1, ..., n-1 in row-major order.
Buffer iota(const Shape& shape, const Stream& s) {
  std::vector<float> values(static_cast<size_t>(shape_numel(shape)));
  std::iota(values.begin(), values.end(), 0.0f);
  return Buffer::from_host(std::span<const float>(values), shape, DType::f32, s);
}

// The values `at(index)` for every index of `shape`, in row-major order.
std::vector<double> expected(const Shape& shape,
                             const std::function<double(const std::vector<int64_t>&)>& at) {
  std::vector<double> out;
  const int64_t n = shape_numel(shape);
  std::vector<int64_t> index(shape.size(), 0);
  for (int64_t i = 0; i < n; ++i) {
    out.push_back(at(index));
    for (size_t d = shape.size(); d-- > 0;) {
      if (++index[d] < shape[d]) break;
      index[d] = 0;
    }
  }
  return out;
}

// Python's range(*slice(start, stop, step).indices(n)) for step > 0.
std::vector<double> python_slice(int64_t n, int64_t start, int64_t stop, int64_t step) {
  auto adjust = [n](int64_t i) {
    if (i < 0) {
      i += n;
      if (i < 0) i = 0;
    } else if (i > n) {
      i = n;
    }
    return i;
  };
  std::vector<double> out;
  for (int64_t i = adjust(start); i < adjust(stop); i += step)
    out.push_back(static_cast<double>(i));
  return out;
}

class BufferTest : public ::testing::Test {
 protected:
  Stream s{Device::cpu()};

  std::vector<double> read(const Buffer& b) { return test::to_f64(b, s); }
};

}  // namespace

// ---------------------------------------------------------------------------------------------
// Construction and host copies.

TEST_F(BufferTest, EmptyIsContiguous) {
  const Buffer b = Buffer::empty({2, 3}, DType::f32, s);
  EXPECT_TRUE(b.defined());
  EXPECT_EQ(b.shape(), (Shape{2, 3}));
  EXPECT_EQ(b.strides(), (Strides{3, 1}));
  EXPECT_EQ(b.rank(), 2);
  EXPECT_EQ(b.dim(0), 2);
  EXPECT_EQ(b.dim(-1), 3);
  EXPECT_EQ(b.numel(), 6);
  EXPECT_EQ(b.element_size(), 4);
  EXPECT_EQ(b.nbytes(), 24);
  EXPECT_EQ(b.offset_bytes(), 0);
  EXPECT_EQ(b.dtype(), DType::f32);
  EXPECT_EQ(b.device(), Device::cpu());
  EXPECT_TRUE(b.is_contiguous());
  EXPECT_EQ(b.describe(), "f32[2,3] on cpu");
  EXPECT_GE(b.allocation()->size(), b.nbytes());

  const Buffer h = Buffer::empty({4, 5, 6}, DType::bf16, s);
  EXPECT_EQ(h.strides(), (Strides{30, 6, 1}));
  EXPECT_EQ(h.numel(), 120);
  EXPECT_EQ(h.nbytes(), 240);
  EXPECT_EQ(h.describe(), "bf16[4,5,6] on cpu");

  const Buffer e = Buffer::empty_exact({3}, DType::i64, s);
  EXPECT_EQ(e.nbytes(), 24);
  EXPECT_EQ(e.describe(), "i64[3] on cpu");

  const Buffer scalar = Buffer::empty({}, DType::f16, s);
  EXPECT_EQ(scalar.rank(), 0);
  EXPECT_EQ(scalar.numel(), 1);
  EXPECT_EQ(scalar.nbytes(), 2);
  EXPECT_EQ(scalar.describe(), "f16[] on cpu");

  EXPECT_FALSE(Buffer().defined());
  EXPECT_TRUE(throws_error(
      [&] {
        (void)Buffer::empty({2, -1}, DType::f32, s);
      },
      "[buffer]", {"negative"}));
  EXPECT_TRUE(throws_error([&] { (void)b.dim(2); }, "[buffer]", {"axis 2"}));
}

TEST_F(BufferTest, HostRoundTrip) {
  const std::vector<float> f = {1.5f, -2.0f, 3.25f, 0.0f, -0.0f, 1e30f};
  const Buffer b = Buffer::from_host(std::span<const float>(f), {2, 3}, DType::f32, s);
  EXPECT_EQ(b.shape(), (Shape{2, 3}));
  EXPECT_TRUE(b.is_contiguous());
  EXPECT_EQ(b.to_host<float>(s), f);

  const std::vector<int32_t> i = {-7, 0, 7, 2147483647};
  const Buffer bi = Buffer::from_host(i.data(), 16, {4}, DType::i32, s);
  EXPECT_EQ(bi.to_host<int32_t>(s), i);

  const std::vector<uint16_t> h = {0x3c00, 0xbc00, 0x7bff, 0x0001, 0x8000};
  const Buffer bh = Buffer::from_host(std::span<const uint16_t>(h), {5}, DType::bf16, s);
  EXPECT_EQ(bh.to_host<uint16_t>(s), h);

  const std::vector<uint8_t> q = {0, 1, 0x7e, 0xfe, 0x80, 255};
  const Buffer bq = Buffer::from_host(std::span<const uint8_t>(q), {3, 2}, DType::u8, s);
  EXPECT_EQ(bq.to_host<uint8_t>(s), q);

  // copy_from_host overwrites in place.
  const std::vector<float> g = {9, 8, 7, 6, 5, 4};
  b.copy_from_host(g.data(), 24, s);
  EXPECT_EQ(b.to_host<float>(s), g);
  std::vector<float> back(6);
  b.copy_to_host(back.data(), 24, s);
  EXPECT_EQ(back, g);
}

TEST_F(BufferTest, HostCopySizeChecks) {
  const std::vector<float> f(6, 1.0f);
  // Byte count that does not match numel * dtype size.
  EXPECT_TRUE(throws_error(
      [&] {
        (void)Buffer::from_host(f.data(), 20, {2, 3}, DType::f32, s);
      },
      "[", {"20", "24"}));
  EXPECT_THROW((void)Buffer::from_host(f.data(), 28, {2, 3}, DType::f32, s), Error);
  EXPECT_THROW((void)Buffer::from_host(std::span<const float>(f).first(5), {2, 3}, DType::f32, s),
               Error);
  // Host element type of the wrong width.
  const std::vector<uint16_t> h(6, 0);
  EXPECT_TRUE(throws_error(
      [&] {
        (void)Buffer::from_host(std::span<const uint16_t>(h), {2, 3}, DType::f32, s);
      },
      "[buffer]", {"host element size 2", "f32"}));

  const Buffer b = iota({2, 3}, s);
  EXPECT_TRUE(throws_error([&] { (void)b.to_host<uint16_t>(s); }, "[buffer]",
                           {"host element size 2", "f32[2,3]"}));
  EXPECT_TRUE(
      throws_error([&] { (void)b.to_host<double>(s); }, "[buffer]", {"host element size 8"}));
  std::vector<float> small(5);
  EXPECT_THROW(b.copy_to_host(small.data(), 20, s), Error);
  // Host copies need a contiguous view.
  EXPECT_TRUE(
      throws_error([&] { (void)b.transpose(0, 1).to_host<float>(s); }, "[", {"contiguous"}));
}

TEST_F(BufferTest, ZeroSizeBuffersAreContiguous) {
  // A buffer without elements has no layout to violate: it is contiguous, whatever the position
  // of its zero extent, and copies zero bytes to and from the host.
  for (const Shape& shape : {Shape{0}, Shape{0, 3}, Shape{3, 0}, Shape{2, 0, 4}, Shape{2, 3, 0}}) {
    const Buffer b = Buffer::empty(shape, DType::f32, s);
    EXPECT_EQ(b.numel(), 0) << b.describe();
    EXPECT_EQ(b.nbytes(), 0) << b.describe();
    EXPECT_TRUE(b.is_contiguous()) << b.describe() << " strides " << shape_str(b.strides());
    std::vector<float> values = {-1.0f};
    EXPECT_NO_THROW(values = b.to_host<float>(s)) << b.describe();
    EXPECT_TRUE(values.empty()) << b.describe();
    EXPECT_NO_THROW((void)Buffer::from_host(nullptr, 0, shape, DType::f32, s)) << b.describe();
  }
}

// ---------------------------------------------------------------------------------------------
// Views: shapes, strides and contents.

TEST_F(BufferTest, SliceContents) {
  const Buffer b = iota({2, 3, 4}, s);
  auto value = [](int64_t i, int64_t j, int64_t k) {
    return static_cast<double>(i * 12 + j * 4 + k);
  };

  const Buffer v = b.slice(2, 1, 3);
  EXPECT_EQ(v.shape(), (Shape{2, 3, 2}));
  EXPECT_EQ(v.strides(), (Strides{12, 4, 1}));
  EXPECT_EQ(v.offset_bytes(), 4);
  EXPECT_FALSE(v.is_contiguous());
  const auto want = expected(v.shape(), [&](auto& x) { return value(x[0], x[1], x[2] + 1); });
  EXPECT_EQ(read(v), want);

  // Negative start/stop count from the end; the axis may be negative too.
  EXPECT_EQ(read(b.slice(-1, -3, -1)), want);
  EXPECT_EQ(b.slice(-1, -3, -1).shape(), (Shape{2, 3, 2}));

  // Step 2.
  const Buffer even = b.slice(2, 0, 4, 2);
  EXPECT_EQ(even.shape(), (Shape{2, 3, 2}));
  EXPECT_EQ(even.strides(), (Strides{12, 4, 2}));
  EXPECT_EQ(read(even),
            expected(even.shape(), [&](auto& x) { return value(x[0], x[1], 2 * x[2]); }));
  const Buffer odd_rows = b.slice(1, 1, 3, 2);  // j = 1 only
  EXPECT_EQ(odd_rows.shape(), (Shape{2, 1, 4}));
  EXPECT_EQ(read(odd_rows),
            expected(odd_rows.shape(), [&](auto& x) { return value(x[0], 1, x[2]); }));
  const Buffer rows02 = b.slice(1, 0, 3, 2);  // j = 0, 2
  EXPECT_EQ(rows02.shape(), (Shape{2, 2, 4}));
  EXPECT_EQ(read(rows02),
            expected(rows02.shape(), [&](auto& x) { return value(x[0], 2 * x[1], x[2]); }));

  // Slicing axis 0 keeps the view contiguous, with an offset.
  const Buffer second = b.slice(0, 1, 2);
  EXPECT_EQ(second.shape(), (Shape{1, 3, 4}));
  EXPECT_TRUE(second.is_contiguous());
  EXPECT_EQ(second.offset_bytes(), 48);
  EXPECT_EQ(read(second), expected(second.shape(), [&](auto& x) { return value(1, x[1], x[2]); }));

  // A slice of a slice accumulates the offset and multiplies the step.
  const Buffer nested = b.slice(2, 1, 4).slice(2, 1, 3);  // k = 2, 3
  EXPECT_EQ(read(nested),
            expected(nested.shape(), [&](auto& x) { return value(x[0], x[1], x[2] + 2); }));
  const Buffer nested_step = b.slice(2, 0, 4, 2).slice(2, 1, 2);  // k = 2
  EXPECT_EQ(nested_step.shape(), (Shape{2, 3, 1}));
  EXPECT_EQ(read(nested_step),
            expected(nested_step.shape(), [&](auto& x) { return value(x[0], x[1], 2); }));

  EXPECT_TRUE(throws_error([&] { (void)b.slice(3, 0, 1); }, "[slice]", {"axis 3"}));
  EXPECT_TRUE(throws_error([&] { (void)b.slice(0, 0, 1, 0); }, "[slice]", {"step"}));
  EXPECT_TRUE(throws_error([&] { (void)b.slice(0, 0, 1, -1); }, "[slice]", {"step"}));
}

TEST_F(BufferTest, SliceClampsLikePython) {
  // Every (start, stop, step) on an extent of 5, against Python's slice.indices().
  constexpr int64_t n = 5;
  const Buffer b = iota({n}, s);
  for (int64_t step = 1; step <= 3; ++step) {
    for (int64_t start = -8; start <= 8; ++start) {
      for (int64_t stop = -8; stop <= 8; ++stop) {
        const std::vector<double> want = python_slice(n, start, stop, step);
        const Buffer v = b.slice(0, start, stop, step);
        ASSERT_EQ(v.numel(), static_cast<int64_t>(want.size()))
            << "slice(" << start << ", " << stop << ", " << step << ")";
        if (!want.empty()) {
          EXPECT_EQ(read(v), want) << "slice(" << start << ", " << stop << ", " << step << ")";
        }
      }
    }
  }
}

TEST_F(BufferTest, SliceEmptyResult) {
  const Buffer b = iota({2, 3, 4}, s);
  for (const Buffer& v : {b.slice(2, 3, 1), b.slice(2, 5, 10), b.slice(2, -1, -3), b.slice(2, 4, 4),
                          b.slice(2, -100, -50)}) {
    EXPECT_EQ(v.shape(), (Shape{2, 3, 0}));
    EXPECT_EQ(v.numel(), 0);
    EXPECT_EQ(v.nbytes(), 0);
    std::vector<double> values = {-1.0};
    EXPECT_NO_THROW(values = read(v)) << "reading an empty " << v.describe();
    EXPECT_TRUE(values.empty());
  }
  // Clamping the other way gives the whole axis.
  EXPECT_EQ(read(b.slice(2, -100, 100)), read(b));
}

TEST_F(BufferTest, SelectContents) {
  const Buffer b = iota({2, 3, 4}, s);
  auto value = [](int64_t i, int64_t j, int64_t k) {
    return static_cast<double>(i * 12 + j * 4 + k);
  };

  const Buffer last_row = b.select(1, -1);
  EXPECT_EQ(last_row.shape(), (Shape{2, 4}));
  EXPECT_EQ(last_row.strides(), (Strides{12, 1}));
  EXPECT_EQ(read(last_row),
            expected(last_row.shape(), [&](auto& x) { return value(x[0], 2, x[1]); }));
  EXPECT_EQ(read(b.select(1, 2)), read(last_row));

  const Buffer first_col = b.select(2, 0);
  EXPECT_EQ(first_col.shape(), (Shape{2, 3}));
  EXPECT_EQ(read(first_col),
            expected(first_col.shape(), [&](auto& x) { return value(x[0], x[1], 0); }));

  const Buffer batch1 = b.select(0, 1);
  EXPECT_TRUE(batch1.is_contiguous());
  EXPECT_EQ(batch1.offset_bytes(), 48);
  EXPECT_EQ(read(batch1), expected(batch1.shape(), [&](auto& x) { return value(1, x[0], x[1]); }));

  // Down to rank 0.
  const Buffer one = b.select(0, -2).select(-1, 3).select(0, 1);
  EXPECT_EQ(one.rank(), 0);
  EXPECT_EQ(one.numel(), 1);
  EXPECT_EQ(read(one), (std::vector<double>{value(0, 1, 3)}));

  EXPECT_TRUE(throws_error([&] { (void)b.select(1, 3); }, "[select]", {"out of range", "3"}));
  EXPECT_TRUE(throws_error([&] { (void)b.select(1, -4); }, "[select]", {"out of range", "-4"}));
  EXPECT_TRUE(throws_error([&] { (void)b.select(-4, 0); }, "[select]", {"axis"}));
}

TEST_F(BufferTest, ReshapeContents) {
  const Buffer b = iota({2, 3, 4}, s);
  const std::vector<double> flat =
      expected({24}, [](auto& x) { return static_cast<double>(x[0]); });

  const Buffer r = b.reshape({6, 4});
  EXPECT_EQ(r.shape(), (Shape{6, 4}));
  EXPECT_EQ(r.strides(), (Strides{4, 1}));
  EXPECT_EQ(read(r), flat);
  EXPECT_EQ(b.reshape({-1, 8}).shape(), (Shape{3, 8}));
  EXPECT_EQ(b.reshape({4, -1}).shape(), (Shape{4, 6}));
  EXPECT_EQ(b.reshape({2, -1, 3}).shape(), (Shape{2, 4, 3}));
  EXPECT_EQ(b.reshape({-1}).shape(), (Shape{24}));
  EXPECT_EQ(read(b.reshape({-1})), flat);
  EXPECT_EQ(read(b.reshape({1, 24, 1})), flat);

  // A contiguous view with an offset keeps it.
  const Buffer tail = b.select(0, 1).reshape({4, 3});
  EXPECT_EQ(tail.offset_bytes(), 48);
  EXPECT_EQ(read(tail),
            expected({4, 3}, [](auto& x) { return static_cast<double>(12 + x[0] * 3 + x[1]); }));

  // Wrong element counts.
  EXPECT_TRUE(throws_error([&] { (void)b.reshape({5, 5}); }, "[reshape]", {"[5,5]", "24"}));
  EXPECT_TRUE(throws_error([&] { (void)b.reshape({-1, 5}); }, "[reshape]"));
  EXPECT_TRUE(throws_error([&] { (void)b.reshape({25}); }, "[reshape]"));
  EXPECT_TRUE(throws_error([&] { (void)b.reshape({-1, -1}); }, "[reshape]"));

  // Non-contiguous sources.
  EXPECT_TRUE(
      throws_error([&] { (void)b.transpose(0, 2).reshape({24}); }, "[reshape]", {"contiguous"}));
  EXPECT_TRUE(
      throws_error([&] { (void)b.slice(2, 0, 4, 2).reshape({-1}); }, "[reshape]", {"contiguous"}));
}

TEST_F(BufferTest, PermuteAndTransposeContents) {
  const Buffer b = iota({2, 3, 4}, s);
  auto value = [](int64_t i, int64_t j, int64_t k) {
    return static_cast<double>(i * 12 + j * 4 + k);
  };

  const Buffer p = b.permute({2, 0, 1});  // p[k][i][j] = b[i][j][k]
  EXPECT_EQ(p.shape(), (Shape{4, 2, 3}));
  EXPECT_EQ(p.strides(), (Strides{1, 12, 4}));
  EXPECT_FALSE(p.is_contiguous());
  EXPECT_EQ(read(p), expected(p.shape(), [&](auto& x) { return value(x[1], x[2], x[0]); }));
  EXPECT_EQ(read(b.permute({-1, 0, 1})), read(p));
  EXPECT_EQ(read(b.permute({0, 1, 2})), read(b));

  const Buffer t = b.transpose(0, 2);  // t[k][j][i]
  EXPECT_EQ(t.shape(), (Shape{4, 3, 2}));
  EXPECT_EQ(read(t), expected(t.shape(), [&](auto& x) { return value(x[2], x[1], x[0]); }));
  const Buffer t12 = b.transpose(-1, -2);  // t12[i][k][j]
  EXPECT_EQ(t12.shape(), (Shape{2, 4, 3}));
  EXPECT_EQ(read(t12), expected(t12.shape(), [&](auto& x) { return value(x[0], x[2], x[1]); }));
  EXPECT_EQ(read(b.transpose(1, 1)), read(b));
  // Transposing twice restores the original layout.
  EXPECT_TRUE(b.transpose(0, 1).transpose(0, 1).is_contiguous());

  // A permuted slice: offset and strides compose.
  const Buffer ps = b.slice(1, 1, 3).permute({1, 2, 0});  // [j'][k][i], j = j' + 1
  EXPECT_EQ(ps.shape(), (Shape{2, 4, 2}));
  EXPECT_EQ(read(ps), expected(ps.shape(), [&](auto& x) { return value(x[2], x[0] + 1, x[1]); }));

  EXPECT_TRUE(throws_error([&] { (void)b.permute({0, 0, 1}); }, "[permute]", {"repeated"}));
  EXPECT_TRUE(throws_error([&] { (void)b.permute({2, -1, 0}); }, "[permute]", {"repeated"}));
  EXPECT_TRUE(throws_error([&] { (void)b.permute({0, 1}); }, "[permute]"));
  EXPECT_TRUE(throws_error([&] { (void)b.permute({0, 1, 3}); }, "[permute]", {"axis"}));
  EXPECT_TRUE(throws_error([&] { (void)b.transpose(0, 3); }, "[transpose]", {"axis"}));
}

TEST_F(BufferTest, BroadcastContents) {
  const Buffer col = iota({3, 1}, s);
  const Buffer bc = col.broadcast_to({2, 3, 4});
  EXPECT_EQ(bc.shape(), (Shape{2, 3, 4}));
  EXPECT_EQ(bc.strides(), (Strides{0, 1, 0}));
  EXPECT_EQ(read(bc), expected(bc.shape(), [](auto& x) { return static_cast<double>(x[1]); }));

  const Buffer row = iota({4}, s);
  const Buffer br = row.broadcast_to({3, 4});
  EXPECT_EQ(br.strides(), (Strides{0, 1}));
  EXPECT_EQ(read(br), expected(br.shape(), [](auto& x) { return static_cast<double>(x[1]); }));

  // Broadcasting a view keeps its offset and strides.
  const Buffer b = iota({2, 3, 4}, s);
  const Buffer v = b.select(0, 1).slice(1, 2, 3);  // [3,1]: 12 + j*4 + 2
  const Buffer bv = v.broadcast_to({2, 3, 5});
  EXPECT_EQ(read(bv),
            expected(bv.shape(), [](auto& x) { return static_cast<double>(14 + 4 * x[1]); }));

  // Same shape: unchanged.
  EXPECT_EQ(read(b.broadcast_to({2, 3, 4})), read(b));
  EXPECT_EQ(b.broadcast_to({2, 3, 4}).strides(), b.strides());

  EXPECT_TRUE(throws_error(
      [&] {
        (void)row.broadcast_to({3, 5});
      },
      "[broadcast]", {"[4]", "[3,5]"}));
  EXPECT_TRUE(throws_error([&] { (void)b.broadcast_to({4}); }, "[broadcast]"));
  EXPECT_TRUE(throws_error([&] { (void)col.broadcast_to({3, 2, 2}); }, "[broadcast]"));
}

// ---------------------------------------------------------------------------------------------
// Lifetime, bounds, layout predicates, rank.

TEST_F(BufferTest, ViewsKeepTheAllocationAlive) {
  Buffer view;
  {
    const Buffer original = iota({4, 8}, s);
    view = original.slice(1, 2, 6).transpose(0, 1);  // [4 (k=2..5), 4 (i)]
    EXPECT_EQ(original.allocation().use_count(), 2);
  }
  EXPECT_EQ(view.allocation().use_count(), 1);
  // New allocations of the same size must not reuse the block the view still holds.
  std::vector<Buffer> others;
  const std::vector<float> junk(32, -1.0f);
  for (int i = 0; i < 4; ++i) {
    others.push_back(Buffer::from_host(std::span<const float>(junk), {4, 8}, DType::f32, s));
    EXPECT_NE(others.back().allocation()->data(), view.allocation()->data());
  }
  EXPECT_EQ(read(view), expected(view.shape(),
                                 [](auto& x) { return static_cast<double>(x[1] * 8 + x[0] + 2); }));

  // A copied handle is the same view of the same memory.
  const Buffer copy = view;
  EXPECT_EQ(copy.data(), view.data());
  EXPECT_EQ(view.allocation().use_count(), 2);
}

TEST_F(BufferTest, ViewOutsideTheAllocationThrows) {
  const Buffer b = Buffer::empty({4}, DType::f32, s);
  const std::shared_ptr<Allocation>& a = b.allocation();
  // Views are bounded by the bytes asked for, not by the pool's size-class slack.
  const int64_t size = a->requested();
  ASSERT_EQ(size, 16);
  EXPECT_TRUE(throws_error([&] { Buffer(a, {5}, {1}, DType::f32, 0); }, "[buffer]", {"outside"}));

  // Inside: the whole allocation, its last element, a reversed view.
  EXPECT_NO_THROW(Buffer(a, {size / 4}, {1}, DType::f32, 0));
  EXPECT_NO_THROW(Buffer(a, {1}, {1}, DType::f32, size - 4));
  EXPECT_NO_THROW(Buffer(a, {4}, {-1}, DType::f32, 12));
  EXPECT_NO_THROW(Buffer(a, {2, 2}, {2, 1}, DType::f32, 0));

  EXPECT_TRUE(
      throws_error([&] { Buffer(a, {1}, {1}, DType::f32, size); }, "[buffer]", {"outside"}));
  EXPECT_TRUE(
      throws_error([&] { Buffer(a, {2}, {1}, DType::f32, size - 4); }, "[buffer]", {"outside"}));
  EXPECT_TRUE(throws_error([&] { Buffer(a, {size / 4 + 1}, {1}, DType::f32, 0); }, "[buffer]",
                           {"outside"}));
  EXPECT_TRUE(throws_error([&] { Buffer(a, {1}, {1}, DType::f32, -4); }, "[buffer]", {"outside"}));
  EXPECT_TRUE(throws_error([&] { Buffer(a, {4}, {-1}, DType::f32, 8); }, "[buffer]", {"outside"}));
  EXPECT_TRUE(
      throws_error([&] { Buffer(a, {2}, {size / 4}, DType::f32, 0); }, "[buffer]", {"outside"}));
  EXPECT_TRUE(throws_error(
      [&] {
        Buffer(a, {2, 2}, {size / 8, size / 8}, DType::f32, 4);
      },
      "[buffer]", {"outside"}));
  // The element size counts: an f64-wide dtype at the last 4 bytes does not fit.
  EXPECT_TRUE(
      throws_error([&] { Buffer(a, {1}, {1}, DType::i64, size - 4); }, "[buffer]", {"outside"}));
  // Shape and strides of different rank.
  EXPECT_TRUE(throws_error([&] { Buffer(a, {2, 2}, {1}, DType::f32, 0); }, "[buffer]", {"rank"}));
}

TEST_F(BufferTest, IsContiguousIgnoresSizeOneAxes) {
  const Buffer b = Buffer::empty({64}, DType::f32, s);
  const auto& a = b.allocation();
  EXPECT_TRUE(Buffer(a, {1, 4}, {999, 1}, DType::f32, 0).is_contiguous());
  EXPECT_TRUE(Buffer(a, {4, 1}, {1, 7}, DType::f32, 0).is_contiguous());
  EXPECT_TRUE(Buffer(a, {2, 1, 3}, {3, 5, 1}, DType::f32, 0).is_contiguous());
  EXPECT_TRUE(Buffer(a, {1, 1}, {3, 5}, DType::f32, 0).is_contiguous());
  EXPECT_TRUE(Buffer(a, {1}, {-3}, DType::f32, 0).is_contiguous());

  EXPECT_FALSE(Buffer(a, {2, 2}, {1, 2}, DType::f32, 0).is_contiguous());
  EXPECT_FALSE(Buffer(a, {2, 3}, {4, 1}, DType::f32, 0).is_contiguous());
  EXPECT_FALSE(Buffer(a, {4}, {2}, DType::f32, 0).is_contiguous());
  EXPECT_FALSE(Buffer(a, {2, 4}, {0, 1}, DType::f32, 0).is_contiguous());

  // A size-1 axis with an odd stride still reads as contiguous memory.
  const Buffer t = iota({3, 4}, s);
  const Buffer odd(t.allocation(), {3, 1, 4}, {4, 13, 1}, DType::f32, 0);
  EXPECT_TRUE(odd.is_contiguous());
  EXPECT_EQ(odd.to_host<float>(s), t.to_host<float>(s));
}

TEST_F(BufferTest, IsAlignedOnOffsetViews) {
  const Buffer b = iota({64}, s);
  EXPECT_TRUE(b.is_aligned(256));  // pool blocks are 256-byte aligned

  const Buffer v = b.slice(0, 1, 64);  // 4 bytes in
  EXPECT_EQ(v.offset_bytes(), 4);
  EXPECT_EQ(static_cast<char*>(v.data()), static_cast<char*>(b.data()) + 4);
  EXPECT_EQ(*v.data_as<float>(), 1.0f);
  EXPECT_TRUE(v.is_aligned(4));
  EXPECT_FALSE(v.is_aligned(8));
  EXPECT_FALSE(v.is_aligned(16));

  const Buffer w = b.slice(0, 4, 64);  // 16 bytes in
  EXPECT_TRUE(w.is_aligned(16));
  EXPECT_FALSE(w.is_aligned(32));
  EXPECT_TRUE(b.slice(0, 32, 64).is_aligned(128));
  EXPECT_FALSE(b.slice(0, 32, 64).is_aligned(256));
}

TEST_F(BufferTest, RankAboveMaximumThrows) {
  const Shape max_rank(kMaxRank, 1);
  const Shape too_many(kMaxRank + 1, 1);
  EXPECT_EQ(Buffer::empty(max_rank, DType::f32, s).rank(), kMaxRank);
  EXPECT_TRUE(throws_error([&] { (void)Buffer::empty(too_many, DType::f32, s); }, "[buffer]",
                           {"rank " + std::to_string(kMaxRank + 1)}));
  EXPECT_TRUE(throws_error([&] { (void)Buffer::empty_exact(too_many, DType::f32, s); }, "[buffer]",
                           {"rank"}));

  const Buffer b = iota({2, 3}, s);
  EXPECT_THROW((void)b.reshape(Shape{2, 3, 1, 1, 1, 1, 1, 1, 1}), Error);
  EXPECT_THROW((void)b.broadcast_to(Shape{1, 1, 1, 1, 1, 1, 1, 2, 3}), Error);
  EXPECT_THROW(Buffer(b.allocation(), too_many, Strides(kMaxRank + 1, 1), DType::f32, 0), Error);
  EXPECT_EQ(b.broadcast_to(Shape{1, 1, 1, 1, 1, 1, 2, 3}).rank(), kMaxRank);
}
