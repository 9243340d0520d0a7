// Every CUDA op against the CPU reference, bit for bit, over odd sizes, unaligned and strided
// views and broadcasts. Outputs are poisoned first so an unwritten element fails.
#include <gtest/gtest.h>

#include <cstring>
#include <random>

#include "support/support.h"

using namespace mlxn;

namespace {

const DType kFloatTypes[] = {DType::f32, DType::f16, DType::bf16, DType::f8e4m3, DType::f8e5m2};
const DType kComputeTypes[] = {DType::f32, DType::f16, DType::bf16};
const int64_t kSizes[] = {1, 31, 33, 1000, 4097, (1 << 20) + 3};

// The views every op is checked on: {name, view of a [rows, cols] buffer}.
std::vector<std::pair<std::string, Buffer>> layouts(const Buffer& base) {
  const int64_t n = base.numel();
  std::vector<std::pair<std::string, Buffer>> v;
  v.emplace_back("contiguous", base.slice(0, 0, n - 1));
  v.emplace_back("unaligned", base.slice(0, 1, n));
  v.emplace_back("strided", base.slice(0, 0, n, 3));
  return v;
}

}  // namespace

TEST(GpuOps, FillMatchesCpuForEveryDtypeAndLayout) {
  MLXN_REQUIRE_CUDA();
  const test::CpuGpu p;
  for (DType d : {DType::f32, DType::f16, DType::bf16, DType::f8e4m3, DType::f8e5m2, DType::i8,
                  DType::u8, DType::i32, DType::u32, DType::i64}) {
    for (int64_t n : kSizes) {
      Buffer h = Buffer::empty({n + 1}, d, p.cpu);
      Buffer g = Buffer::empty({n + 1}, d, p.gpu);
      test::poison(h, p.cpu);
      test::poison(g, p.gpu);
      const double value = is_floating(d) ? -0.3 : 77;
      fill(h.slice(0, 1, n + 1), value, p.cpu);
      fill(g.slice(0, 1, n + 1), value, p.gpu);
      ASSERT_TRUE(test::same_bits(g, h, p.gpu, p.cpu)) << dtype_name(d) << " n=" << n;
    }
  }
}

TEST(GpuOps, FillRandomIsBitIdenticalToCpu) {
  MLXN_REQUIRE_CUDA();
  const test::CpuGpu p;
  for (DType d : kFloatTypes) {
    for (Distribution dist : {Distribution::normal, Distribution::uniform}) {
      for (int64_t n : kSizes) {
        const RandomSpec spec{dist, 1234 + static_cast<uint64_t>(n), -1.0f, 3.0f};
        Buffer h = Buffer::empty({n}, d, p.cpu);
        Buffer g = Buffer::empty({n}, d, p.gpu);
        test::poison(g, p.gpu);
        fill_random(h, spec, p.cpu);
        fill_random(g, spec, p.gpu);
        ASSERT_TRUE(test::same_bits(g, h, p.gpu, p.cpu)) << dtype_name(d) << " n=" << n;
      }
    }
  }
  // Layout independence on the GPU too: a transposed destination gets the same logical values.
  Buffer a = Buffer::empty({33, 65}, DType::f32, p.gpu);
  Buffer b = Buffer::empty({65, 33}, DType::f32, p.gpu);
  fill_random(a, {Distribution::normal, 5, 0, 1}, p.gpu);
  fill_random(b.transpose(0, 1), {Distribution::normal, 5, 0, 1}, p.gpu);
  EXPECT_TRUE(test::same_bits(b.transpose(0, 1), a, p.gpu, p.gpu));
}

TEST(GpuOps, CastEveryPairEveryLayoutMatchesCpu) {
  MLXN_REQUIRE_CUDA();
  const test::CpuGpu p;
  for (DType from : kFloatTypes) {
    for (int64_t n : {int64_t{31}, int64_t{4097}, int64_t{(1 << 20) + 3}}) {
      Buffer hs = Buffer::empty({n + 1}, from, p.cpu);
      fill_random(hs, {Distribution::normal, 77, 0.0f, 300.0f}, p.cpu);
      Buffer gs = p.to_gpu(hs);
      for (DType to : kFloatTypes) {
        const auto hv = layouts(hs);
        const auto gv = layouts(gs);
        for (size_t k = 0; k < hv.size(); ++k) {
          Buffer hd = Buffer::empty(hv[k].second.shape(), to, p.cpu);
          Buffer gd = Buffer::empty(gv[k].second.shape(), to, p.gpu);
          test::poison(gd, p.gpu);
          cast(hv[k].second, hd, p.cpu);
          cast(gv[k].second, gd, p.gpu);
          ASSERT_TRUE(test::same_bits(gd, hd, p.gpu, p.cpu))
              << dtype_name(from) << "->" << dtype_name(to) << " " << hv[k].first << " n=" << n;
        }
      }
    }
  }
}

TEST(GpuOps, TransposingCastAndCopyMatchCpu) {
  MLXN_REQUIRE_CUDA();
  const test::CpuGpu p;
  // Odd extents around the 32-wide tile, a non-contiguous row pitch on the output, and a
  // sliced (offset) source.
  for (auto [rows, cols] : {std::pair<int64_t, int64_t>{31, 33}, {64, 96}, {1000, 37}, {3, 2049}}) {
    Buffer hs = test::random_buffer({cols + 2, rows}, DType::bf16, 40, p.cpu);
    Buffer gs = p.to_gpu(hs);
    Buffer hsv = hs.slice(0, 1, cols + 1).transpose(0, 1);  // [rows, cols], walks columns
    Buffer gsv = gs.slice(0, 1, cols + 1).transpose(0, 1);
    for (DType to : kFloatTypes) {
      Buffer hd = Buffer::empty({rows, cols + 5}, to, p.cpu);
      Buffer gd = Buffer::empty({rows, cols + 5}, to, p.gpu);
      test::poison(hd, p.cpu);
      test::poison(gd, p.gpu);
      cast(hsv, hd.slice(1, 0, cols), p.cpu);
      cast(gsv, gd.slice(1, 0, cols), p.gpu);
      ASSERT_TRUE(test::same_bits(gd, hd, p.gpu, p.cpu))
          << "bf16->" << dtype_name(to) << " " << rows << "x" << cols;
    }
    Buffer hc = Buffer::empty({rows, cols}, DType::bf16, p.cpu);
    Buffer gc = Buffer::empty({rows, cols}, DType::bf16, p.gpu);
    test::poison(gc, p.gpu);
    copy(hsv, hc, p.cpu);
    copy(gsv, gc, p.gpu);
    ASSERT_TRUE(test::same_bits(gc, hc, p.gpu, p.cpu)) << rows << "x" << cols;
  }
}

TEST(GpuOps, ConversionsAgreeWithTheHostOnEveryNarrowCodeAndRandomF32Bits) {
  MLXN_REQUIRE_CUDA();
  const test::CpuGpu p;
  // Every 16-bit code widened to f32, and every 8-bit code likewise.
  for (DType d : {DType::f16, DType::bf16, DType::f8e4m3, DType::f8e5m2}) {
    const int codes = d == DType::f16 || d == DType::bf16 ? 65536 : 256;
    std::vector<uint8_t> bytes(static_cast<size_t>(codes * dtype_size(d)));
    for (int c = 0; c < codes; ++c) {
      if (dtype_size(d) == 2) {
        const auto code = static_cast<uint16_t>(c);
        std::memcpy(&bytes[static_cast<size_t>(c) * 2], &code, 2);
      } else {
        bytes[static_cast<size_t>(c)] = static_cast<uint8_t>(c);
      }
    }
    Buffer h =
        Buffer::from_host(bytes.data(), static_cast<int64_t>(bytes.size()), {codes}, d, p.cpu);
    Buffer g = p.to_gpu(h);
    Buffer hw = Buffer::empty({codes}, DType::f32, p.cpu);
    Buffer gw = Buffer::empty({codes}, DType::f32, p.gpu);
    cast(h, hw, p.cpu);
    cast(g, gw, p.gpu);
    EXPECT_TRUE(test::same_bits(gw, hw, p.gpu, p.cpu)) << "widening " << dtype_name(d);
  }
  // 4M random f32 bit patterns (every class: normals, subnormals, inf, NaN) narrowed.
  std::mt19937 rng(2024);
  std::vector<uint32_t> bits(1 << 22);
  for (auto& b : bits) b = static_cast<uint32_t>(rng());
  Buffer h = Buffer::from_host(std::span<const uint32_t>(bits), {1 << 22}, DType::f32, p.cpu);
  Buffer g = p.to_gpu(h);
  for (DType d : {DType::f16, DType::bf16, DType::f8e4m3, DType::f8e5m2}) {
    Buffer hn = Buffer::empty({1 << 22}, d, p.cpu);
    Buffer gn = Buffer::empty({1 << 22}, d, p.gpu);
    cast(h, hn, p.cpu);
    cast(g, gn, p.gpu);
    EXPECT_TRUE(test::same_bits(gn, hn, p.gpu, p.cpu)) << "narrowing to " << dtype_name(d);
  }
}

TEST(GpuOps, CopyStridedBroadcastAndAcrossDevices) {
  MLXN_REQUIRE_CUDA();
  const test::CpuGpu p;
  for (int64_t rows : {1, 31, 33, 1000}) {
    Buffer hs = test::random_buffer({rows, 37}, DType::bf16, 3, p.cpu);
    Buffer gs = p.to_gpu(hs);
    Buffer hd = Buffer::empty({37, rows}, DType::bf16, p.cpu);
    Buffer gd = Buffer::empty({37, rows}, DType::bf16, p.gpu);
    test::poison(gd, p.gpu);
    copy(hs.transpose(0, 1), hd, p.cpu);
    copy(gs.transpose(0, 1), gd, p.gpu);
    ASSERT_TRUE(test::same_bits(gd, hd, p.gpu, p.cpu)) << rows;
  }
  Buffer row = p.to_gpu(test::random_buffer({1, 300}, DType::f32, 4, p.cpu));
  Buffer tiled = Buffer::empty({50, 300}, DType::f32, p.gpu);
  copy(row.broadcast_to({50, 300}), tiled, p.gpu);
  const auto t = test::to_f64(tiled, p.gpu);
  const auto r = test::to_f64(row, p.gpu);
  for (int i = 0; i < 50 * 300; ++i) ASSERT_EQ(t[i], r[i % 300]);
  // Device -> host through copy().
  Buffer back = Buffer::empty({50, 300}, DType::f32, p.cpu);
  copy(tiled, back, p.gpu);
  EXPECT_TRUE(test::same_bits(back, tiled, p.cpu, p.gpu));
}

TEST(GpuOps, AddMulScaleMatchCpuForEveryLayout) {
  MLXN_REQUIRE_CUDA();
  const test::CpuGpu p;
  for (DType d : kComputeTypes) {
    for (int64_t n : kSizes) {
      Buffer ha = test::random_buffer({n + 1}, d, 10, p.cpu);
      Buffer hb = test::random_buffer({n + 1}, d, 11, p.cpu);
      Buffer ga = p.to_gpu(ha), gb = p.to_gpu(hb);
      const auto hav = layouts(ha), hbv = layouts(hb), gav = layouts(ga), gbv = layouts(gb);
      for (size_t k = 0; k < hav.size(); ++k) {
        const Shape& shape = hav[k].second.shape();
        Buffer hs = Buffer::empty(shape, d, p.cpu), gs = Buffer::empty(shape, d, p.gpu);
        Buffer hm = Buffer::empty(shape, d, p.cpu), gm = Buffer::empty(shape, d, p.gpu);
        Buffer hx = Buffer::empty(shape, d, p.cpu), gx = Buffer::empty(shape, d, p.gpu);
        for (const Buffer* b : {&gs, &gm, &gx}) test::poison(*b, p.gpu);
        add(hav[k].second, hbv[k].second, hs, p.cpu);
        add(gav[k].second, gbv[k].second, gs, p.gpu);
        mul(hav[k].second, hbv[k].second, hm, p.cpu);
        mul(gav[k].second, gbv[k].second, gm, p.gpu);
        scale(hav[k].second, 0.1, hx, p.cpu);
        scale(gav[k].second, 0.1, gx, p.gpu);
        ASSERT_TRUE(test::same_bits(gs, hs, p.gpu, p.cpu))
            << "add " << dtype_name(d) << " " << hav[k].first << " n=" << n;
        ASSERT_TRUE(test::same_bits(gm, hm, p.gpu, p.cpu))
            << "mul " << dtype_name(d) << " " << hav[k].first << " n=" << n;
        ASSERT_TRUE(test::same_bits(gx, hx, p.gpu, p.cpu))
            << "scale " << dtype_name(d) << " " << hav[k].first << " n=" << n;
      }
    }
  }
}

TEST(GpuOps, BroadcastAddAndIndirectScale) {
  MLXN_REQUIRE_CUDA();
  const test::CpuGpu p;
  Buffer hm = test::random_buffer({129, 65}, DType::bf16, 1, p.cpu);
  Buffer hr = test::random_buffer({65}, DType::bf16, 2, p.cpu);
  Buffer gm = p.to_gpu(hm), gr = p.to_gpu(hr);
  Buffer ho = Buffer::empty({129, 65}, DType::bf16, p.cpu);
  Buffer go = Buffer::empty({129, 65}, DType::bf16, p.gpu);
  add(hm, hr, ho, p.cpu);
  add(gm, gr, go, p.gpu);
  EXPECT_TRUE(test::same_bits(go, ho, p.gpu, p.cpu));
  Buffer hf = Buffer::empty({1}, DType::f32, p.cpu), gf = Buffer::empty({1}, DType::f32, p.gpu);
  fill(hf, -1.75, p.cpu);
  fill(gf, -1.75, p.gpu);
  scale(ho, ScalarArg::from_buffer(hf), ho, p.cpu);
  scale(go, ScalarArg::from_buffer(gf), go, p.gpu);
  EXPECT_TRUE(test::same_bits(go, ho, p.gpu, p.cpu));
}

TEST(GpuOps, BuffersOnTheWrongDeviceAreRejected) {
  MLXN_REQUIRE_CUDA();
  const test::CpuGpu p;
  Buffer h = Buffer::empty({4}, DType::f32, p.cpu);
  Buffer g = Buffer::empty({4}, DType::f32, p.gpu);
  EXPECT_THROW(add(h, g, g, p.gpu), Error);
  EXPECT_THROW(fill(h, 1.0, p.gpu), Error);
  EXPECT_THROW(scale(g, ScalarArg::from_buffer(Buffer::empty({1}, DType::f32, p.cpu)), g, p.gpu),
               Error);
}

// Row-pitched views (2-D after merging, inner stride 1, rows a whole number of 16-byte packs
// apart: the engine's per-row pack path), and the same shapes when the rows or the start break
// the pack alignment (the strided loop): every op bit for bit against the CPU, the padding
// between rows untouched.
TEST(GpuOps, RowPitchedViewsMatchCpu) {
  MLXN_REQUIRE_CUDA();
  const test::CpuGpu p;
  for (DType d : kComputeTypes) {
    for (int64_t cols : {8, 64, 1000, 33}) {
      for (int64_t start : {0, 8, 1}) {
        for (const Shape& lead : {Shape{37}, Shape{3, 5}}) {
          SCOPED_TRACE(::testing::Message() << dtype_name(d) << " cols " << cols << " start "
                                            << start << " lead " << shape_str(lead));
          const int axis = static_cast<int>(lead.size());
          Shape wide = lead, shape = lead;
          wide.push_back(cols + 16);
          shape.push_back(cols);
          Buffer ha = test::random_buffer(wide, d, 20, p.cpu);
          Buffer hb = test::random_buffer(wide, d, 21, p.cpu);
          Buffer ga = p.to_gpu(ha), gb = p.to_gpu(hb);
          const auto view = [&](const Buffer& b, int64_t from) {
            return b.slice(axis, from, from + cols);
          };
          const auto check = [&](const char* what, auto&& run) {
            Buffer ho = Buffer::empty(wide, d, p.cpu), go = Buffer::empty(wide, d, p.gpu);
            test::poison(ho, p.cpu);
            test::poison(go, p.gpu);
            run(view(ho, start), p.cpu, ha, hb);
            run(view(go, start), p.gpu, ga, gb);
            EXPECT_TRUE(test::same_bits(go, ho, p.gpu, p.cpu)) << what;
          };
          check("add", [&](const Buffer& o, const Stream& s, const Buffer& a, const Buffer& b) {
            add(view(a, start), view(b, 8), o, s);
          });
          check("mul", [&](const Buffer& o, const Stream& s, const Buffer& a, const Buffer& b) {
            mul(view(a, 0), view(b, start), o, s);
          });
          check("scale", [&](const Buffer& o, const Stream& s, const Buffer& a, const Buffer&) {
            scale(view(a, start), 0.3, o, s);
          });
          check("copy", [&](const Buffer& o, const Stream& s, const Buffer& a, const Buffer&) {
            copy(view(a, 8), o, s);
          });
          check("fill", [&](const Buffer& o, const Stream& s, const Buffer&, const Buffer&) {
            fill(o, -2.5, s);
          });
          check("fill_random", [&](const Buffer& o, const Stream& s, const Buffer&, const Buffer&) {
            fill_random(o, {Distribution::normal, 3, 0.0f, 1.0f}, s);
          });
          // A cast between widths: packs sized by the wider side.
          Buffer hf = Buffer::empty(wide, DType::f32, p.cpu),
                 gf = Buffer::empty(wide, DType::f32, p.gpu);
          test::poison(hf, p.cpu);
          test::poison(gf, p.gpu);
          cast(view(ha, start), view(hf, 8), p.cpu);
          cast(view(ga, start), view(gf, 8), p.gpu);
          EXPECT_TRUE(test::same_bits(gf, hf, p.gpu, p.cpu)) << "cast to f32";
        }
      }
    }
  }
}
