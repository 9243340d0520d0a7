// Memory-bound core ops on the GPU against the device-copy ceiling (cudaMemcpyAsync, which
// mlxn::copy issues for contiguous buffers). Every later bench reports against this ceiling.
#include <cstdio>

#include "harness.h"

using namespace mlxn;
using namespace mlxn::bench;

int main() {
  try {
    if (!have_gpu()) return 1;
    const Device gpu = Device::cuda(0);
    Stream s(gpu);
    Stream cpu(Device::cpu());
    const int64_t n = int64_t{1} << 28;  // 256 Mi elements: 1 GiB of f32, far beyond the L2

    // Ceiling: device-to-device copy of 1 GiB (read + write = 2 GiB moved).
    Buffer src = Buffer::empty({n}, DType::f32, s);
    Buffer dst = Buffer::empty({n}, DType::f32, s);
    fill_random(src, {Distribution::normal, 1, 0, 1}, s);
    copy(src, dst, s);
    {
      Buffer probe = Buffer::empty({1 << 20}, DType::f32, cpu);
      copy(dst.slice(0, n - (1 << 20), n), probe, s);
      Buffer expect = Buffer::empty({1 << 20}, DType::f32, cpu);
      copy(src.slice(0, n - (1 << 20), n), expect, s);
      validate(probe.to_host<float>(cpu) == expect.to_host<float>(cpu), "device copy");
    }
    Case ceiling{"device_copy",
                 {{"elements", n}, {"dtype", "f32"}},
                 time_device(s, [&](int) { copy(src, dst, s); }),
                 2.0 * 4 * n,
                 0};
    const double copy_gbps = emit(ceiling)["GB/s"].get<double>();

    // Our own map kernel on the same copy (strided path excluded): f32 -> f32 via cast.
    emit({"cast_f32_f32",
          {{"elements", n}},
          time_device(s, [&](int) { cast(src, dst, s); }),
          8.0 * n,
          0},
         copy_gbps);

    Buffer half = Buffer::empty({n}, DType::bf16, s);
    cast(src, half, s);
    emit({"cast_f32_bf16",
          {{"elements", n}},
          time_device(s, [&](int) { cast(src, half, s); }),
          6.0 * n,
          0},
         copy_gbps);
    emit({"cast_bf16_f32",
          {{"elements", n}},
          time_device(s, [&](int) { cast(half, dst, s); }),
          6.0 * n,
          0},
         copy_gbps);
    Buffer fp8 = Buffer::empty({n}, DType::f8e4m3, s);
    emit({"cast_bf16_f8e4m3",
          {{"elements", n}},
          time_device(s, [&](int) { cast(half, fp8, s); }),
          3.0 * n,
          0},
         copy_gbps);

    emit({"fill_f32",
          {{"elements", n}},
          time_device(s, [&](int) { fill(dst, 1.0, s); }),
          4.0 * n,
          0},
         copy_gbps);
    emit({"fill_random_normal_f32",
          {{"elements", n}},
          time_device(s,
                      [&](int i) {
                        fill_random(dst, {Distribution::normal, uint64_t(i), 0, 1}, s);
                      }),
          4.0 * n,
          0},
         copy_gbps);

    Buffer a = Buffer::empty({n}, DType::bf16, s);
    Buffer b = Buffer::empty({n}, DType::bf16, s);
    Buffer c = Buffer::empty({n}, DType::bf16, s);
    fill_random(a, {Distribution::normal, 2, 0, 1}, s);
    fill_random(b, {Distribution::normal, 3, 0, 1}, s);
    emit({"add_bf16", {{"elements", n}}, time_device(s, [&](int) { add(a, b, c, s); }), 6.0 * n, 0},
         copy_gbps);
    emit({"scale_bf16",
          {{"elements", n}},
          time_device(s, [&](int) { scale(a, 0.5, c, s); }),
          4.0 * n,
          0},
         copy_gbps);

    // The general strided path: a 16384 x 16384 bf16 transpose copy.
    const int64_t side = 16384;
    Buffer square = a.slice(0, 0, side * side).reshape({side, side});
    Buffer transposed = c.slice(0, 0, side * side).reshape({side, side});
    emit({"copy_transpose_bf16",
          {{"rows", side}, {"cols", side}},
          time_device(
              s, [&](int) { copy(square.transpose(0, 1), transposed, s); }, 2, 10),
          4.0 * side * side,
          0},
         copy_gbps);
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "mlxn_bench_memory: %s\n", e.what());
    return 1;
  }
}
