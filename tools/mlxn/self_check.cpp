#include "self_check.h"

#include <chrono>
#include <cstring>
#include <functional>

#include "mlxn/mlxn.h"

namespace mlxn::cli {

namespace {

constexpr int64_t kElements = 1 << 20;

// The pipeline every device runs: seeded normal fill, cast to bf16, add, scale, cast back.
std::vector<float> pipeline(const Stream& s) {
  Buffer x = Buffer::empty({kElements}, DType::f32, s);
  Buffer y = Buffer::empty({kElements}, DType::f32, s);
  fill_random(x, {Distribution::normal, 7, 0.0f, 1.0f}, s);
  fill_random(y, {Distribution::uniform, 8, -1.0f, 1.0f}, s);
  Buffer xb = Buffer::empty({kElements}, DType::bf16, s);
  Buffer yb = Buffer::empty({kElements}, DType::bf16, s);
  cast(x, xb, s);
  cast(y, yb, s);
  add(xb, yb, xb, s);
  scale(xb, 0.5, xb, s);
  Buffer out = Buffer::empty({kElements}, DType::f32, s);
  cast(xb, out, s);
  return out.to_host<float>(s);
}

CheckResult check(Device d, const std::string& name, const std::function<std::string()>& body) {
  CheckResult r{d, name, false, ""};
  try {
    r.detail = body();
    r.passed = true;
  } catch (const std::exception& e) {
    r.detail = e.what();
  }
  return r;
}

}  // namespace

std::vector<CheckResult> run_self_check(const std::vector<Device>& devices) {
  std::vector<CheckResult> results;
  const std::vector<float> reference = pipeline(Stream(Device::cpu()));
  for (Device d : devices) {
    Stream s(d);
    results.push_back(check(d, "fill/cast/add/scale", [&] {
      const auto t0 = std::chrono::steady_clock::now();
      const std::vector<float> got = pipeline(s);
      const auto ms =
          std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
      if (std::memcmp(got.data(), reference.data(), got.size() * sizeof(float)) != 0) {
        throw Error("self-check", "result differs from the CPU reference");
      }
      return std::to_string(kElements) + " elements, bit-identical to the CPU reference (" +
             std::to_string(static_cast<int>(ms)) + " ms)";
    }));
    results.push_back(check(d, "graph replay", [&] {
      Buffer x = Buffer::empty({4096}, DType::f32, s);
      fill(x, 1.0, s);
      Buffer factor = Buffer::empty({1}, DType::f32, s);
      Graph g = Graph::capture(s, [&] {
        for (int i = 0; i < 50; ++i) scale(x, ScalarArg::from_buffer(factor), x, s);
      });
      const float two = 2.0f;
      factor.copy_from_host(&two, sizeof two, s);
      g.replay(s);
      const float first = x.to_host<float>(s)[0];
      const float half = 0.5f;
      factor.copy_from_host(&half, sizeof half, s);
      g.replay(s);
      const float second = x.to_host<float>(s)[0];
      if (first != 1125899906842624.0f || second != 1.0f) {
        throw Error("self-check",
                    "graph replay gave " + std::to_string(first) + ", " + std::to_string(second));
      }
      return std::to_string(g.node_count()) + " nodes, replayed with two scalar values";
    }));
    results.push_back(check(d, "device error flag", [&] {
      Buffer x = Buffer::empty({1000}, DType::f32, s);
      fill(x, 1.0, s);
      fill(x.slice(0, 500, 501), std::nan(""), s);
      assert_finite(x, "self-check buffer", s);
      try {
        s.synchronize();
      } catch (const Error& e) {
        if (std::string(e.what()).find("index 500") == std::string::npos) throw;
        return std::string("NaN reported: ") + e.what();
      }
      throw Error("self-check", "a NaN went unreported");
    }));
  }
  return results;
}

}  // namespace mlxn::cli
