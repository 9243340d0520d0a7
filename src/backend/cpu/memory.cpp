#include "backend/cpu/memory.h"

#include <cstring>

#include "backend/cpu/cpu_types.h"
#include "mlxn/core/dispatch.h"
#include "portable/counter_rng.h"

namespace mlxn::cpu {

namespace {
// Reads an indirect scalar when the op runs (the point of ScalarArg::from_buffer).
float resolve(const ScalarArg& s) {
  return s.is_indirect() ? *s.buffer().data_as<const float>() : static_cast<float>(s.value());
}
}  // namespace

void fill_float(const Buffer& out, ScalarArg value, const Stream& stream) {
  stream.submit_host([out, value] {
    const float v = resolve(value);
    dispatch_dtype<FloatDTypes>("fill", out.dtype(), [&](auto tag) {
      using T = host_type_t<decltype(tag)::value>;
      const T stored = from_f32<T>(v);
      for_each_element<1>(out.shape(), {&out},
                          [&](auto p, int64_t) { std::memcpy(p[0], &stored, sizeof(T)); });
    });
  });
}

void fill_integer(const Buffer& out, int64_t value, const Stream& stream) {
  stream.submit_host([out, value] {
    using Ints = DTypeList<DType::i8, DType::u8, DType::i32, DType::u32, DType::i64>;
    dispatch_dtype<Ints>("fill", out.dtype(), [&](auto tag) {
      using T = host_type_t<decltype(tag)::value>;
      const T stored = static_cast<T>(value);
      for_each_element<1>(out.shape(), {&out},
                          [&](auto p, int64_t) { std::memcpy(p[0], &stored, sizeof(T)); });
    });
  });
}

void fill_random(const Buffer& out, const RandomSpec& spec, const Stream& stream) {
  stream.submit_host([out, spec] {
    const float range = spec.b - spec.a;
    dispatch_dtype<FloatDTypes>("fill_random", out.dtype(), [&](auto tag) {
      using T = host_type_t<decltype(tag)::value>;
      for_each_element<1>(out.shape(), {&out}, [&](auto p, int64_t i) {
        const auto index = static_cast<uint64_t>(i);
        const float v = spec.distribution == Distribution::uniform
                            ? portable::random_uniform(index, spec.seed, spec.a, range)
                            : portable::random_normal(index, spec.seed, spec.a, spec.b);
        const T stored = from_f32<T>(v);
        std::memcpy(p[0], &stored, sizeof(T));
      });
    });
  });
}

void copy(const Buffer& src, const Buffer& dst, const Stream& stream) {
  stream.submit_host([src, dst] {
    const auto size = static_cast<size_t>(src.element_size());
    if (src.is_contiguous() && dst.is_contiguous()) {
      std::memmove(dst.data(), src.data(), static_cast<size_t>(src.nbytes()));
      return;
    }
    for_each_element<2>(dst.shape(), {&src, &dst},
                        [&](auto p, int64_t) { std::memcpy(p[1], p[0], size); });
  });
}

void cast(const Buffer& src, const Buffer& dst, const Stream& stream) {
  stream.submit_host([src, dst] {
    dispatch_dtype<FloatDTypes>("cast", src.dtype(), [&](auto in_tag) {
      using TIn = host_type_t<decltype(in_tag)::value>;
      dispatch_dtype<FloatDTypes>("cast", dst.dtype(), [&](auto out_tag) {
        using TOut = host_type_t<decltype(out_tag)::value>;
        for_each_element<2>(dst.shape(), {&src, &dst}, [&](auto p, int64_t) {
          TIn in;
          std::memcpy(&in, p[0], sizeof(TIn));
          const TOut out = from_f32<TOut>(to_f32(in));
          std::memcpy(p[1], &out, sizeof(TOut));
        });
      });
    });
  });
}

}  // namespace mlxn::cpu
