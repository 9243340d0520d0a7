// Weights and matmul on the CPU: MLX's affine quantizer against values derived by hand from its
// algorithm (ties, constant, negative, zero and outlier rows), the bit-stream packing of every
// width, dequantization of hand-built weights, matmul against f64 math over the dequantized
// weight for every format and odd shapes, and bad input.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "formats/ggml.h"
#include "formats/mlx_affine.h"
#include "support/support.h"

using namespace mlxn;

namespace {

const Stream& cpu() { return test::cpu_stream(); }

Buffer f32_buffer(const std::vector<float>& v, Shape shape) {
  return Buffer::from_host(std::span<const float>(v), std::move(shape), DType::f32, cpu());
}

std::vector<float> floats(const Buffer& b) { return b.to_host<float>(cpu()); }

// Codes of row r of an MLX weight, read straight from the packed words by the layout rule.
std::vector<uint32_t> codes_of(const Weight& w, int64_t r) {
  const auto* row = reinterpret_cast<const uint8_t*>(w.data().data_as<uint32_t>()) +
                    r * (w.in_features() * w.bits() / 8);
  std::vector<uint32_t> c(static_cast<size_t>(w.in_features()));
  for (int64_t k = 0; k < w.in_features(); ++k) {
    uint64_t bits = 0;
    for (int b = 0; b < w.bits(); ++b) {
      const int64_t at = k * w.bits() + b;
      bits |= static_cast<uint64_t>((row[at / 8] >> (at % 8)) & 1u) << b;
    }
    c[static_cast<size_t>(k)] = static_cast<uint32_t>(bits);
  }
  return c;
}

// A group of 32 f32 values.
std::vector<float> group(std::initializer_list<float> head, float fill) {
  std::vector<float> v(head);
  v.resize(32, fill);
  return v;
}

}  // namespace

// Values 0 and 15 fix a 4-bit grid of step 1 anchored at the maximum (scale -1, bias 15); 2.5
// and 3.5 sit exactly between two codes and must round half to even (12.5 -> 12, 11.5 -> 12).
TEST(MlxQuantize, TiesRoundHalfToEven) {
  const Weight w =
      quantize_mlx_affine(f32_buffer(group({0, 15, 2.5f, 3.5f, 7}, 0), {1, 32}), 4, 32, cpu());
  EXPECT_EQ(floats(w.scales())[0], -1.0f);
  EXPECT_EQ(floats(w.biases())[0], 15.0f);
  const auto c = codes_of(w, 0);
  EXPECT_EQ(c[0], 15u);  // (0 - 15) / -1
  EXPECT_EQ(c[1], 0u);
  EXPECT_EQ(c[2], 12u);
  EXPECT_EQ(c[3], 12u);
  EXPECT_EQ(c[4], 8u);
}

// Constant and zero rows: the range is below eps, so scale = -1e-7 (anchored at the maximum);
// a nonzero constant then becomes the bias (q0 != 0) and every code is 0; zeros keep bias 0.
TEST(MlxQuantize, ConstantAndZeroRows) {
  const Weight w = quantize_mlx_affine(f32_buffer(
                                           [] {
                                             std::vector<float> v(32, 0.5f);
                                             v.resize(64, 0.0f);
                                             return v;
                                           }(),
                                           {1, 64}),
                                       4, 32, cpu());
  const auto s = floats(w.scales()), b = floats(w.biases());
  EXPECT_EQ(b[0], 0.5f);
  EXPECT_EQ(s[0], 0.5f / std::rint(0.5f / -1e-7f));
  EXPECT_EQ(b[1], 0.0f);
  EXPECT_EQ(s[1], -1e-7f);
  for (uint32_t c : codes_of(w, 0)) EXPECT_EQ(c, 0u);
  Buffer back = Buffer::empty({1, 64}, DType::f32, cpu());
  dequantize(w, back, cpu());
  const auto v = floats(back);
  for (int i = 0; i < 32; ++i) EXPECT_EQ(v[static_cast<size_t>(i)], 0.5f);
  for (int i = 32; i < 64; ++i) EXPECT_EQ(v[static_cast<size_t>(i)], 0.0f);
}

// All-negative group [-2, -1]: the minimum has the larger magnitude, so it anchors the grid with
// a positive scale: scale = 1/15, q0 = rint(-2 / (1/15)) = -30, scale = -2 / -30, bias = -2.
TEST(MlxQuantize, NegativeRowAnchorsAtTheMinimum) {
  std::vector<float> v(32);
  for (int i = 0; i < 32; ++i) v[static_cast<size_t>(i)] = -2.0f + static_cast<float>(i) / 31.0f;
  const Weight w = quantize_mlx_affine(f32_buffer(v, {1, 32}), 4, 32, cpu());
  const float scale = -2.0f / std::rint(-2.0f / ((-1.0f - -2.0f) / 15.0f));
  EXPECT_EQ(floats(w.scales())[0], scale);
  EXPECT_EQ(floats(w.biases())[0], -2.0f);
  const auto c = codes_of(w, 0);
  for (int i = 0; i < 32; ++i) {
    EXPECT_EQ(c[static_cast<size_t>(i)],
              static_cast<uint32_t>(std::rint((v[static_cast<size_t>(i)] + 2.0f) / scale)));
  }
}

// One outlier: it is the edge, so it is reproduced exactly (code 0, value = bias), and every other
// value is within half a step.
TEST(MlxQuantize, OutlierIsTheEdgeAndErrorsStayWithinHalfAStep) {
  for (int bits : {2, 3, 4, 5, 6, 8}) {
    std::vector<float> v(64);
    for (int i = 0; i < 64; ++i)
      v[static_cast<size_t>(i)] = 0.01f * std::sin(1.7f * static_cast<float>(i));
    v[5] = -3.0f;
    const Weight w = quantize_mlx_affine(f32_buffer(v, {1, 64}), bits, 64, cpu());
    Buffer back = Buffer::empty({1, 64}, DType::f32, cpu());
    dequantize(w, back, cpu());
    const auto d = floats(back);
    const float scale = floats(w.scales())[0];
    EXPECT_EQ(d[5], -3.0f) << bits;
    EXPECT_EQ(codes_of(w, 0)[5], 0u) << bits;
    for (int i = 0; i < 64; ++i) {
      EXPECT_LE(std::fabs(d[static_cast<size_t>(i)] - v[static_cast<size_t>(i)]),
                std::fabs(scale) * 0.5f * (1 + 1e-5f))
          << bits << " " << i;
    }
  }
}

// The packing: a row whose codes count 0, 1, 2, ... (mod 2^bits) must read back code k from bits
// [k·bits, (k+1)·bits) of the row for every width, and scales/biases round to w's dtype.
TEST(MlxQuantize, PackingIsALittleEndianBitStream) {
  for (int bits : {2, 3, 4, 5, 6, 8}) {
    const int n = (1 << bits) - 1;
    std::vector<float> v(128);
    for (int k = 0; k < 128; ++k) v[static_cast<size_t>(k)] = static_cast<float>(k % (n + 1));
    v[127] = static_cast<float>(n);  // (already so below 8 bits)
    // Group maximum n and minimum 0: scale -1 anchored at n, so code = n - value.
    const Weight w = quantize_mlx_affine(f32_buffer(v, {1, 128}), bits, 128, cpu());
    ASSERT_EQ(w.data().dim(1), 128 * bits / 32);
    const auto c = codes_of(w, 0);
    for (int k = 0; k < 128; ++k) {
      ASSERT_EQ(c[static_cast<size_t>(k)],
                static_cast<uint32_t>(n) - static_cast<uint32_t>(v[static_cast<size_t>(k)]))
          << bits << " " << k;
      const auto* row = reinterpret_cast<const uint8_t*>(w.data().data());
      ASSERT_EQ(formats::mlx_affine_code(row, k, bits), c[static_cast<size_t>(k)]);
    }
  }
  const Weight h =
      quantize_mlx_affine(test::random_buffer({3, 64}, DType::bf16, 7, cpu()), 4, 32, cpu());
  EXPECT_EQ(h.scales().dtype(), DType::bf16);
  EXPECT_EQ(h.biases().dtype(), DType::bf16);
}

// matmul against f64 math over the dequantized weight, every format, odd shapes and dtypes.
TEST(Matmul, MatchesF64OverTheDequantizedWeight) {
  struct Case {
    WeightFormat format;
    int bits, group;
    int64_t k;
  };
  const std::vector<Case> cases = {
      {WeightFormat::dense, 0, 0, 7},         {WeightFormat::mlx_affine, 3, 32, 96},
      {WeightFormat::mlx_affine, 4, 64, 128}, {WeightFormat::mlx_affine, 8, 128, 256},
      {WeightFormat::q4_0, 0, 0, 64},         {WeightFormat::q8_0, 0, 0, 96},
      {WeightFormat::q4_k, 0, 0, 256},        {WeightFormat::q5_k, 0, 0, 512},
      {WeightFormat::q6_k, 0, 0, 256}};
  uint64_t seed = 1;
  for (const Case& c : cases) {
    for (int64_t n : {1, 33}) {
      const Buffer dense = test::random_buffer({n, c.k}, DType::f32, seed++, cpu());
      Weight w;
      if (c.format == WeightFormat::dense) {
        w = Weight::dense(dense);
      } else if (c.format == WeightFormat::mlx_affine) {
        w = quantize_mlx_affine(dense, c.bits, c.group, cpu());
      } else {
        const int64_t row_bytes = c.k / ggml_block_elements(c.format) * ggml_block_bytes(c.format);
        Buffer blocks = Buffer::empty({n, row_bytes}, DType::u8, cpu());
        for (int64_t r = 0; r < n; ++r) {
          formats::quantize_row(c.format, dense.data_as<float>() + r * c.k, c.k,
                                blocks.data_as<uint8_t>() + r * row_bytes);
        }
        w = Weight::ggml(c.format, blocks, c.k);
      }
      Buffer wd = Buffer::empty({n, c.k}, DType::f32, cpu());
      dequantize(w, wd, cpu());
      const auto wv = floats(wd);
      for (int64_t m : {1, 3, 17}) {
        for (DType out_dtype : {DType::f32, DType::bf16}) {
          const Buffer x = test::random_buffer({m, c.k}, DType::f16, seed++, cpu());
          const Buffer bias = test::random_buffer({n}, DType::f32, seed++, cpu());
          Buffer out = Buffer::empty({m, n}, out_dtype, cpu());
          test::poison(out, cpu());
          matmul(x, w, bias, out, cpu());
          const auto xv = test::to_f64(x, cpu()), bv = test::to_f64(bias, cpu());
          std::vector<double> expected(static_cast<size_t>(m * n));
          for (int64_t i = 0; i < m; ++i) {
            for (int64_t j = 0; j < n; ++j) {
              double acc = bv[static_cast<size_t>(j)];
              for (int64_t q = 0; q < c.k; ++q) {
                acc += xv[static_cast<size_t>(i * c.k + q)] * wv[static_cast<size_t>(j * c.k + q)];
              }
              expected[static_cast<size_t>(i * n + j)] = acc;
            }
          }
          EXPECT_TRUE(test::all_close(test::to_f64(out, cpu()), expected,
                                      test::tolerance_for(out_dtype, 1), out.shape()))
              << weight_format_name(c.format) << " n " << n << " m " << m;
        }
      }
    }
  }
}

// Hand-built MLX weight: codes 0..15 of a 4-bit row, scale 0.5, bias -1 -> w = 0.5 q - 1; the
// embedding gather returns those rows and zeroes a row whose id is out of range (device error).
TEST(Matmul, DequantizeAndEmbeddingOfAHandBuiltWeight) {
  std::vector<uint32_t> packed(8);
  for (int k = 0; k < 64; ++k) packed[static_cast<size_t>(k / 8)] |= (k % 16u) << (4 * (k % 8));
  const Weight w = Weight::mlx_affine(
      Buffer::from_host(std::span<const uint32_t>(packed), {1, 8}, DType::u32, cpu()),
      f32_buffer({0.5f, 0.25f}, {1, 2}), f32_buffer({-1.0f, 2.0f}, {1, 2}), 4, 32);
  Buffer out = Buffer::empty({1, 64}, DType::f32, cpu());
  dequantize(w, out, cpu());
  const auto v = floats(out);
  for (int k = 0; k < 64; ++k) {
    const float code = static_cast<float>(k % 16);
    const float expected = k < 32 ? 0.5f * code - 1.0f : 0.25f * code + 2.0f;
    EXPECT_EQ(v[static_cast<size_t>(k)], expected) << k;
  }
  Buffer rows = Buffer::empty({2, 64}, DType::f32, cpu());
  const std::vector<int32_t> good = {0, 0};
  embedding(Buffer::from_host(std::span<const int32_t>(good), {2}, DType::i32, cpu()), w, rows,
            cpu());
  EXPECT_EQ(floats(rows), [&] {
    auto r = v;
    r.insert(r.end(), v.begin(), v.end());
    return r;
  }());
  const std::vector<int32_t> bad = {0, 1};
  embedding(Buffer::from_host(std::span<const int32_t>(bad), {2}, DType::i32, cpu()), w, rows,
            cpu());
  EXPECT_THROW(cpu().synchronize(), Error);
  const auto r = floats(rows);
  for (int k = 0; k < 64; ++k) EXPECT_EQ(r[static_cast<size_t>(64 + k)], 0.0f);
}

TEST(Matmul, RejectsBadInput) {
  const Buffer wd = test::random_buffer({8, 64}, DType::f32, 3, cpu());
  const Weight w = quantize_mlx_affine(wd, 4, 64, cpu());
  const Buffer x = test::random_buffer({2, 64}, DType::bf16, 4, cpu());
  Buffer out = Buffer::empty({2, 8}, DType::bf16, cpu());
  const auto throws = [](auto&& f, const char* what) {
    try {
      f();
      ADD_FAILURE() << "no error for " << what;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find('['), std::string::npos) << e.what();
    }
  };
  throws(
      [&] {
        matmul(test::random_buffer({2, 32}, DType::bf16, 1, cpu()), w, {}, out, cpu());
      },
      "wrong K");
  throws(
      [&] {
        matmul(x, w, {}, Buffer::empty({2, 9}, DType::bf16, cpu()), cpu());
      },
      "wrong out shape");
  throws(
      [&] {
        matmul(Buffer::empty({2, 64}, DType::i32, cpu()), w, {}, out, cpu());
      },
      "integer x");
  throws([&] { matmul(x, w, Buffer::empty({7}, DType::f32, cpu()), out, cpu()); }, "bias size");
  throws([&] { matmul(x, Weight(), {}, out, cpu()); }, "undefined weight");
  throws([&] { matmul(x, w, {}, x.reshape({2, 64}).slice(1, 0, 8), cpu()); }, "out overlaps x");
  throws([&] { quantize_mlx_affine(wd, 7, 64, cpu()); }, "bits 7");
  throws([&] { quantize_mlx_affine(wd, 4, 16, cpu()); }, "group 16");
  throws(
      [&] {
        quantize_mlx_affine(test::random_buffer({2, 48}, DType::f32, 1, cpu()), 4, 32, cpu());
      },
      "K not a multiple of the group");
  throws(
      [&] {
        Buffer nan = f32_buffer(std::vector<float>(32, NAN), {1, 32});
        quantize_mlx_affine(nan, 4, 32, cpu());
      },
      "non-finite weight");
  throws([&] { Weight::mlx_affine(w.data(), w.scales().slice(0, 0, 4), w.biases(), 4, 64); },
         "scales rows");
  throws([&] { Weight::mlx_affine(w.data(), w.scales(), w.biases(), 8, 64); }, "bits mismatch");
  throws(
      [&] {
        Weight::ggml(WeightFormat::q4_k, Buffer::empty({2, 144}, DType::u8, cpu()), 128);
      },
      "K not a multiple of 256");
  throws(
      [&] {
        Weight::ggml(WeightFormat::q4_0, Buffer::empty({2, 17}, DType::u8, cpu()), 32);
      },
      "row bytes");
  throws(
      [&] {
        Weight::ggml(WeightFormat::mlx_affine, Buffer::empty({2, 18}, DType::u8, cpu()), 32);
      },
      "not a GGML format");
  throws(
      [&] {
        dequantize(w, Buffer::empty({8, 63}, DType::f32, cpu()), cpu());
      },
      "dequantize shape");
  throws(
      [&] {
        embedding(Buffer::empty({2}, DType::i64, cpu()), w,
                  Buffer::empty({2, 64}, DType::f32, cpu()), cpu());
      },
      "i64 ids");
}

// Stacked weights (a fused Q/K/V or gate/up projection) dequantize to the parts, one after the
// other, in every format; parts that differ are refused by name.
TEST(Matmul, ConcatRowsStacksEveryFormat) {
  const auto make = [](WeightFormat format, int64_t n, int64_t k, uint64_t seed) {
    const Buffer dense = test::random_buffer({n, k}, DType::f32, seed, cpu());
    if (format == WeightFormat::dense) return Weight::dense(dense);
    if (format == WeightFormat::mlx_affine) return quantize_mlx_affine(dense, 4, 64, cpu());
    const int64_t row_bytes = k / ggml_block_elements(format) * ggml_block_bytes(format);
    Buffer blocks = Buffer::empty({n, row_bytes}, DType::u8, cpu());
    for (int64_t r = 0; r < n; ++r)
      formats::quantize_row(format, dense.data_as<float>() + r * k, k,
                            blocks.data_as<uint8_t>() + r * row_bytes);
    return Weight::ggml(format, blocks, k);
  };
  const auto dequantized = [](const Weight& w) {
    Buffer out = Buffer::empty({w.out_features(), w.in_features()}, DType::f32, cpu());
    dequantize(w, out, cpu());
    return floats(out);
  };
  for (WeightFormat f : {WeightFormat::dense, WeightFormat::mlx_affine, WeightFormat::q8_0}) {
    SCOPED_TRACE(weight_format_name(f));
    const Weight parts[] = {make(f, 5, 128, 1), make(f, 2, 128, 2), make(f, 3, 128, 3)};
    ASSERT_TRUE(same_layout(parts[0], parts[1]));
    const Weight stacked = concat_rows(parts, cpu());
    EXPECT_EQ(stacked.format(), f);
    EXPECT_EQ(stacked.out_features(), 10);
    EXPECT_EQ(stacked.in_features(), 128);
    std::vector<float> expected;
    for (const Weight& p : parts) {
      const auto d = dequantized(p);
      expected.insert(expected.end(), d.begin(), d.end());
    }
    EXPECT_EQ(dequantized(stacked), expected);
  }
  const Weight mixed[] = {make(WeightFormat::q8_0, 2, 64, 4), make(WeightFormat::q4_0, 2, 64, 5)};
  EXPECT_FALSE(same_layout(mixed[0], mixed[1]));
  EXPECT_TRUE(test::throws_error([&] { concat_rows(mixed, cpu()); }, "[concat_rows]",
                                 {"weight 1", "q4_0", "differs"}));
  const Weight other_k[] = {make(WeightFormat::dense, 2, 64, 6),
                            make(WeightFormat::dense, 2, 32, 7)};
  EXPECT_THROW(concat_rows(other_k, cpu()), Error);
  EXPECT_THROW(concat_rows({}, cpu()), Error);
}

// The settled mark (weights no kernel writes again, which overlapping kernels may read early):
// off by default, kept by copies, never inherited by a new weight built from settled parts.
TEST(Matmul, SettledMarkIsExplicitAndNotInherited) {
  const auto dense = [](int64_t n) {
    Buffer w = Buffer::empty({n, 64}, DType::f32, cpu());
    fill(w, 0.5, cpu());
    return Weight::dense(w);
  };
  Weight a = dense(2), b = dense(3);
  EXPECT_FALSE(a.settled());
  a.settle();
  b.settle();
  const Weight copy = a;
  EXPECT_TRUE(copy.settled());
  const Weight parts[] = {a, b};
  const Weight stacked = concat_rows(parts, cpu());
  EXPECT_EQ(stacked.out_features(), 5);
  EXPECT_FALSE(stacked.settled());
  EXPECT_FALSE(Weight::dense(a.data()).settled());
}
