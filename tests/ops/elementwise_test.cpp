// add, mul and scale on the CPU reference, against f64 math rounded to the output dtype.
#include <gtest/gtest.h>

#include "support/support.h"

using namespace mlxn;
using mlxn::test::cpu_stream;
using mlxn::test::error_of;
using mlxn::test::throws_error;

namespace {

const DType kComputeTypes[] = {DType::f32, DType::f16, DType::bf16};

}  // namespace

TEST(Elementwise, AddAndMulMatchExactMathAtOddSizes) {
  for (DType d : kComputeTypes) {
    for (int64_t n : {1, 31, 33, 1000, 4097}) {
      Buffer a = test::random_buffer({n}, d, 100 + n, cpu_stream());
      Buffer b = test::random_buffer({n}, d, 200 + n, cpu_stream());
      Buffer sum = Buffer::empty({n}, d, cpu_stream());
      Buffer product = Buffer::empty({n}, d, cpu_stream());
      test::poison(sum, cpu_stream());
      test::poison(product, cpu_stream());
      add(a, b, sum, cpu_stream());
      mul(a, b, product, cpu_stream());
      const auto av = test::to_f64(a, cpu_stream()), bv = test::to_f64(b, cpu_stream());
      std::vector<double> exact_sum(av.size()), exact_product(av.size());
      for (size_t i = 0; i < av.size(); ++i) {
        exact_sum[i] = test::round_to(av[i] + bv[i], d);
        exact_product[i] = test::round_to(av[i] * bv[i], d);
      }
      const test::Tolerance tol = test::tolerance_for(d);
      EXPECT_TRUE(test::all_close(test::to_f64(sum, cpu_stream()), exact_sum, tol, {n}))
          << dtype_name(d);
      EXPECT_TRUE(test::all_close(test::to_f64(product, cpu_stream()), exact_product, tol, {n}))
          << dtype_name(d);
    }
  }
}

TEST(Elementwise, BroadcastingRowAndColumn) {
  Buffer m = test::random_buffer({33, 17}, DType::f32, 1, cpu_stream());
  Buffer row = test::random_buffer({17}, DType::f32, 2, cpu_stream());
  Buffer col = test::random_buffer({33, 1}, DType::f32, 3, cpu_stream());
  Buffer out = Buffer::empty({33, 17}, DType::f32, cpu_stream());
  add(m, row, out, cpu_stream());
  mul(out, col, out, cpu_stream());
  const auto mv = test::to_f64(m, cpu_stream()), rv = test::to_f64(row, cpu_stream()),
             cv = test::to_f64(col, cpu_stream());
  std::vector<double> expected(33 * 17);
  for (int i = 0; i < 33; ++i)
    for (int j = 0; j < 17; ++j)
      expected[i * 17 + j] = static_cast<float>(static_cast<float>(mv[i * 17 + j] + rv[j]) * cv[i]);
  EXPECT_TRUE(test::all_close(test::to_f64(out, cpu_stream()), expected,
                              test::tolerance_for(DType::f32), {33, 17}));
}

TEST(Elementwise, StridedInputsAndOutput) {
  Buffer a = test::random_buffer({40, 30}, DType::bf16, 4, cpu_stream());
  Buffer b = test::random_buffer({30, 40}, DType::bf16, 5, cpu_stream());
  Buffer out = Buffer::empty({30, 40, 2}, DType::bf16, cpu_stream());
  test::poison(out, cpu_stream());
  Buffer out_view = out.select(2, 1);  // every other element
  add(a.transpose(0, 1), b, out_view, cpu_stream());
  const auto av = test::to_f64(a, cpu_stream()), bv = test::to_f64(b, cpu_stream());
  const auto ov = test::to_f64(out, cpu_stream());
  for (int i = 0; i < 30; ++i)
    for (int j = 0; j < 40; ++j) {
      ASSERT_EQ(ov[(i * 40 + j) * 2 + 1],
                test::round_to(av[j * 30 + i] + bv[i * 40 + j], DType::bf16));
      ASSERT_TRUE(std::isnan(ov[(i * 40 + j) * 2]));  // untouched
    }
}

TEST(Elementwise, ScaleWithImmediateAndIndirectFactor) {
  Buffer x = test::random_buffer({1000}, DType::f16, 6, cpu_stream());
  Buffer out = Buffer::empty({1000}, DType::f16, cpu_stream());
  scale(x, -0.375, out, cpu_stream());
  const auto xv = test::to_f64(x, cpu_stream());
  std::vector<double> expected(1000);
  for (size_t i = 0; i < 1000; ++i) expected[i] = test::round_to(xv[i] * -0.375, DType::f16);
  EXPECT_TRUE(test::all_close(test::to_f64(out, cpu_stream()), expected,
                              test::tolerance_for(DType::f16), {1000}));
  Buffer factor = Buffer::empty({1}, DType::f32, cpu_stream());
  fill(factor, 4.0, cpu_stream());
  scale(x, ScalarArg::from_buffer(factor), x, cpu_stream());  // in place
  for (size_t i = 0; i < 1000; ++i) expected[i] = test::round_to(xv[i] * 4.0, DType::f16);
  EXPECT_TRUE(test::all_close(test::to_f64(x, cpu_stream()), expected,
                              test::tolerance_for(DType::f16), {1000}));
}

TEST(Elementwise, BadInput) {
  Buffer a = Buffer::empty({4, 3}, DType::f32, cpu_stream());
  Buffer h = Buffer::empty({4, 3}, DType::f16, cpu_stream());
  EXPECT_EQ(error_of([&] { add(a, h, a, cpu_stream()); }),
            "[add] b is f16[4,3] on cpu but out is f32[4,3] on cpu (inputs and output share one "
            "dtype; cast first)");
  EXPECT_EQ(
      error_of([&] { mul(a, Buffer::empty({4}, DType::f32, cpu_stream()), a, cpu_stream()); }),
      "[mul] b [4] does not broadcast to out [4,3]");
  EXPECT_EQ(error_of([&] {
              add(a, a, Buffer::empty({4, 3}, DType::i32, cpu_stream()), cpu_stream());
            }),
            "[add] dtype i32 unsupported (supported: f32, f16, bf16)");
  // Partial overlap between an input and the output is refused; exact aliasing is fine.
  Buffer big = Buffer::empty({10}, DType::f32, cpu_stream());
  EXPECT_THROW(add(big.slice(0, 0, 8), big.slice(0, 0, 8), big.slice(0, 2, 10), cpu_stream()),
               Error);
  EXPECT_NO_THROW(add(big, big, big, cpu_stream()));
  EXPECT_THROW(scale(Buffer(), 2.0, a, cpu_stream()), Error);
}
