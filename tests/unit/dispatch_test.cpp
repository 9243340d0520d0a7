// Runtime -> compile-time dispatch: the tag each helper passes, the value it returns, the error
// for an unsupported value, and agreement between supports() and dispatch.
#include <gtest/gtest.h>

#include <initializer_list>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "mlxn/core/dispatch.h"
#include "mlxn/core/dtype.h"
#include "mlxn/core/error.h"
#include "support/support.h"

using namespace mlxn;
using mlxn::test::error_of;
using mlxn::test::throws_error;

namespace {

// Every dtype of the table, independently of the library's lists.
std::vector<DType> every_dtype() {
  return {
#define MLXN_TEST_DTYPE(n, bits, kind) DType::n,
      MLXN_DTYPE_TABLE(MLXN_TEST_DTYPE)
#undef MLXN_TEST_DTYPE
  };
}

template <DType... Ds>
std::vector<DType> list_members(DTypeList<Ds...>) {
  return {Ds...};
}

using F32F16 = DTypeList<DType::f32, DType::f16>;
using HeadDims = IntList<64, 128, 256, 512>;

}  // namespace

TEST(Dispatch, DtypeTagCarriesTheValue) {
  for (DType d : {DType::f32, DType::f16}) {
    int calls = 0;
    DType seen = DType::i64;
    bool tag_type_matches = false;
    dispatch_dtype<F32F16>("myop", d, [&](auto tag) {
      ++calls;
      seen = decltype(tag)::value;
      using Tag = decltype(tag);
      tag_type_matches = (std::is_same_v<Tag, DTypeTag<DType::f32>> && d == DType::f32) ||
                         (std::is_same_v<Tag, DTypeTag<DType::f16>> && d == DType::f16);
    });
    EXPECT_EQ(calls, 1) << dtype_name(d);
    EXPECT_EQ(seen, d) << dtype_name(d);
    EXPECT_TRUE(tag_type_matches) << dtype_name(d);
  }
}

TEST(Dispatch, DtypeTagValueIsUsableAtCompileTime) {
  // The tag's value selects types and sizes at compile time.
  const int64_t size = dispatch_dtype<AllDTypes>("myop", DType::bf16, [](auto tag) {
    constexpr DType d = decltype(tag)::value;
    std::integral_constant<int64_t, dtype_size(d)> compile_time_size;
    return compile_time_size.value;
  });
  EXPECT_EQ(size, 2);
}

TEST(Dispatch, DtypeReturnsTheLambdasValue) {
  auto code = [](auto tag) { return static_cast<int>(decltype(tag)::value) * 10 + 7; };
  static_assert(std::is_same_v<decltype(dispatch_dtype<F32F16>("myop", DType::f32, code)), int>);
  EXPECT_EQ(dispatch_dtype<F32F16>("myop", DType::f32, code),
            static_cast<int>(DType::f32) * 10 + 7);
  EXPECT_EQ(dispatch_dtype<F32F16>("myop", DType::f16, code),
            static_cast<int>(DType::f16) * 10 + 7);

  // Non-trivial return types work too.
  const std::string name = dispatch_dtype<AllDTypes>("myop", DType::f8e5m2, [](auto tag) {
    return std::string(dtype_name(decltype(tag)::value));
  });
  EXPECT_EQ(name, "f8e5m2");
  for (DType d : every_dtype()) {
    const DType back =
        dispatch_dtype<AllDTypes>("myop", d, [](auto tag) { return decltype(tag)::value; });
    EXPECT_EQ(back, d) << dtype_name(d);
  }
}

TEST(Dispatch, DtypeOutsideTheListThrows) {
  int calls = 0;
  auto count = [&](auto) { ++calls; };
  for (DType bad : {DType::bf16, DType::f8e4m3, DType::i32}) {
    const std::string name(dtype_name(bad));
    EXPECT_TRUE(throws_error([&] { dispatch_dtype<F32F16>("myop", bad, count); }, "[myop]",
                             {"dtype " + name, "unsupported", "supported: f32, f16"}))
        << name;
  }
  // The non-void path reports the same way.
  EXPECT_TRUE(throws_error(
      [&] { dispatch_dtype<F32F16>("myop", DType::i8, [&](auto) { return ++calls; }); }, "[myop]",
      {"dtype i8", "supported: f32, f16"}));
  EXPECT_EQ(calls, 0) << "the lambda ran for an unsupported dtype";
  EXPECT_THROW(dispatch_dtype<F32F16>("myop", DType::u8, count), Error);
}

TEST(Dispatch, DtypeErrorNamesTheArgument) {
  EXPECT_TRUE(throws_error(
      [] {
        dispatch_dtype<ComputeDTypes>(
            "cast", DType::u32, [](auto) {}, "output dtype");
      },
      "[cast]", {"output dtype u32", "supported: f32, f16, bf16"}));
  try {
    dispatch_dtype<F32F16>(
        "myop", DType::i64, [](auto) {}, "weight dtype");
    ADD_FAILURE() << "did not throw";
  } catch (const Error& e) {
    EXPECT_EQ(e.op(), "myop");
    EXPECT_EQ(std::string(e.what()), "[myop] weight dtype i64 unsupported (supported: f32, f16)");
  }
}

TEST(Dispatch, IntPassesIntegralConstant) {
  for (int v : {64, 128, 256, 512}) {
    int calls = 0, seen = 0;
    bool type_matches = false;
    dispatch_int<HeadDims>("attention", "head_dim", v, [&](auto c) {
      ++calls;
      seen = decltype(c)::value;
      using C = decltype(c);
      type_matches = std::is_same_v<C, std::integral_constant<int, C::value>> && C::value == v;
      static_assert(C::value % 64 == 0);  // usable as a constant expression
    });
    EXPECT_EQ(calls, 1) << v;
    EXPECT_EQ(seen, v);
    EXPECT_TRUE(type_matches) << v;
  }
}

TEST(Dispatch, IntOutsideTheListThrows) {
  int calls = 0;
  EXPECT_TRUE(throws_error(
      [&] { dispatch_int<HeadDims>("attention", "head_dim", 96, [&](auto) { ++calls; }); },
      "[attention]", {"head_dim 96", "unsupported", "supported: 64, 128, 256, 512"}));
  for (int bad : {0, -64, 63, 65, 1024}) {
    EXPECT_TRUE(throws_error(
        [&] { dispatch_int<HeadDims>("attention", "head_dim", bad, [&](auto) { ++calls; }); },
        "[attention]", {"head_dim " + std::to_string(bad)}))
        << bad;
  }
  EXPECT_EQ(calls, 0);
  EXPECT_THROW(dispatch_int<HeadDims>("attention", "head_dim", 96, [](auto) {}), Error);
}

TEST(Dispatch, Bool) {
  for (bool b : {true, false}) {
    int calls = 0;
    bool seen = !b;
    bool type_matches = false;
    dispatch_bool(b, [&](auto c) {
      ++calls;
      seen = decltype(c)::value;
      type_matches = std::is_same_v<decltype(c), std::bool_constant<decltype(c)::value>>;
    });
    EXPECT_EQ(calls, 1);
    EXPECT_EQ(seen, b);
    EXPECT_TRUE(type_matches);
  }
}

TEST(Dispatch, ListNames) {
  EXPECT_EQ(F32F16::names(), "f32, f16");
  EXPECT_EQ(ComputeDTypes::names(), "f32, f16, bf16");
  EXPECT_EQ(FloatDTypes::names(), "f32, f16, bf16, f8e4m3, f8e5m2");
  EXPECT_EQ(HeadDims::names(), "64, 128, 256, 512");
  EXPECT_EQ(IntList<7>::names(), "7");
}

TEST(Dispatch, StandardListsHaveTheDocumentedMembers) {
  // AllDTypes is the whole table; FloatDTypes its floating part; ComputeDTypes excludes fp8.
  EXPECT_EQ(list_members(AllDTypes{}), every_dtype());
  for (DType d : every_dtype()) {
    EXPECT_TRUE(supports<AllDTypes>(d)) << dtype_name(d);
    EXPECT_EQ(supports<FloatDTypes>(d), is_floating(d)) << dtype_name(d);
  }
  EXPECT_EQ(list_members(ComputeDTypes{}),
            (std::vector<DType>{DType::f32, DType::f16, DType::bf16}));
}

TEST(Dispatch, SupportsAgreesWithDispatch) {
  auto dispatches = [](auto list, DType d) {
    using List = decltype(list);
    try {
      dispatch_dtype<List>("myop", d, [](auto) {});
      return true;
    } catch (const Error&) {
      return false;
    }
  };
  int compute_supported = 0;
  for (DType d : list_members(AllDTypes{})) {
    EXPECT_EQ(supports<ComputeDTypes>(d), dispatches(ComputeDTypes{}, d)) << dtype_name(d);
    EXPECT_EQ(supports<FloatDTypes>(d), dispatches(FloatDTypes{}, d)) << dtype_name(d);
    EXPECT_EQ(supports<F32F16>(d), dispatches(F32F16{}, d)) << dtype_name(d);
    EXPECT_TRUE(dispatches(AllDTypes{}, d)) << dtype_name(d);
    compute_supported += supports<ComputeDTypes>(d) ? 1 : 0;
  }
  EXPECT_EQ(compute_supported, 3);

  int int_supported = 0;
  for (int v = -1; v <= 600; ++v) {
    bool dispatched = true;
    try {
      dispatch_int<HeadDims>("attention", "head_dim", v, [](auto) {});
    } catch (const Error&) {
      dispatched = false;
    }
    EXPECT_EQ(supports<HeadDims>(v), dispatched) << v;
    int_supported += dispatched ? 1 : 0;
  }
  EXPECT_EQ(int_supported, 4);

  static_assert(supports<ComputeDTypes>(DType::bf16));
  static_assert(!supports<ComputeDTypes>(DType::f8e4m3));
  static_assert(supports<HeadDims>(128) && !supports<HeadDims>(96));
}
