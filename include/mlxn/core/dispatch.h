// Runtime -> compile-time dispatch. Each helper takes the op name, the set of supported values as
// a type list, and a generic lambda; the lambda receives a tag carrying the value as a constant.
// A value outside the set throws Error("[op] <what> <value> unsupported (supported: ...)").
// `supports()` uses the same lists, so "is it supported" and "run it" can never disagree.
//
//   using Floats = DTypeList<DType::f32, DType::f16, DType::bf16>;
//   dispatch_dtype<Floats>("add", out.dtype(), [&](auto tag) {
//     using T = cpu_type_t<decltype(tag)::value>; ... });
#pragma once

#include <string>
#include <string_view>
#include <type_traits>

#include "mlxn/core/dtype.h"
#include "mlxn/core/error.h"

namespace mlxn {

template <DType D>
struct DTypeTag {
  static constexpr DType value = D;
};

template <DType... Ds>
struct DTypeList {
  static constexpr bool contains(DType d) { return ((d == Ds) || ...); }
  static std::string names() {
    std::string s;
    ((s += (s.empty() ? "" : ", "), s += dtype_name(Ds)), ...);
    return s;
  }
};

template <int... Vs>
struct IntList {
  static constexpr bool contains(int v) { return ((v == Vs) || ...); }
  static std::string names() {
    std::string s;
    ((s += (s.empty() ? "" : ", "), s += std::to_string(Vs)), ...);
    return s;
  }
};

namespace detail {
template <DType First, DType...>
inline constexpr DType first_of = First;

template <DType... Ds, class F>
decltype(auto) dispatch_dtype_impl(DTypeList<Ds...>, std::string_view op, std::string_view what,
                                   DType d, F&& f) {
  using R = std::invoke_result_t<F, DTypeTag<first_of<Ds...>>>;
  if constexpr (std::is_void_v<R>) {
    bool found = ((d == Ds ? (f(DTypeTag<Ds>{}), true) : false) || ...);
    if (!found) {
      throw Error(op, std::string(what) + " " + std::string(dtype_name(d)) +
                          " unsupported (supported: " + DTypeList<Ds...>::names() + ")");
    }
  } else {
    R result{};
    bool found = ((d == Ds ? (result = f(DTypeTag<Ds>{}), true) : false) || ...);
    if (!found) {
      throw Error(op, std::string(what) + " " + std::string(dtype_name(d)) +
                          " unsupported (supported: " + DTypeList<Ds...>::names() + ")");
    }
    return result;
  }
}

template <int... Vs, class F>
void dispatch_int_impl(IntList<Vs...>, std::string_view op, std::string_view what, int v, F&& f) {
  bool found = ((v == Vs ? (f(std::integral_constant<int, Vs>{}), true) : false) || ...);
  if (!found) {
    throw Error(op, std::string(what) + " " + std::to_string(v) +
                        " unsupported (supported: " + IntList<Vs...>::names() + ")");
  }
}
}  // namespace detail

// Calls f(DTypeTag<d>{}) if d is in List. `what` names the argument in the error ("dtype",
// "output dtype").
template <class List, class F>
decltype(auto) dispatch_dtype(std::string_view op, DType d, F&& f,
                              std::string_view what = "dtype") {
  return detail::dispatch_dtype_impl(List{}, op, what, d, std::forward<F>(f));
}

// Calls f(std::integral_constant<int, v>{}) if v is in List.
template <class List, class F>
void dispatch_int(std::string_view op, std::string_view what, int v, F&& f) {
  detail::dispatch_int_impl(List{}, op, what, v, std::forward<F>(f));
}

// Calls f(std::true_type{}) or f(std::false_type{}).
template <class F>
void dispatch_bool(bool b, F&& f) {
  if (b) {
    f(std::true_type{});
  } else {
    f(std::false_type{});
  }
}

template <class List>
constexpr bool supports(DType d) {
  return List::contains(d);
}
template <class List>
constexpr bool supports(int v) {
  return List::contains(v);
}

using FloatDTypes = DTypeList<DType::f32, DType::f16, DType::bf16, DType::f8e4m3, DType::f8e5m2>;
// The dtypes arithmetic ops compute on (fp8 is a storage format: cast it first).
using ComputeDTypes = DTypeList<DType::f32, DType::f16, DType::bf16>;
using AllDTypes = DTypeList<DType::f32, DType::f16, DType::bf16, DType::f8e4m3, DType::f8e5m2,
                            DType::i8, DType::u8, DType::i32, DType::u32, DType::i64>;

}  // namespace mlxn
