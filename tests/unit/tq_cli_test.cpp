// `mlxn tq encode` / `mlxn tq decode`: the raw-file interface writes exactly the documented
// layout (payload rows, then fp16 scales) and decodes what the reference decodes.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <random>
#include <vector>

#include "mlxn/core/error.h"
#include "tq_commands.h"
#include "turboquant/codebook.h"
#include "turboquant/reference.h"

namespace {

std::string temp_path(const char* name) { return ::testing::TempDir() + name; }

std::vector<char> slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<char>(std::istreambuf_iterator<char>(in), {});
}

}  // namespace

TEST(TqCli, EncodeWritesPayloadThenScalesAndDecodeInverts) {
  const int dim = 64, bits = 3, n = 5;
  std::mt19937 rng(1);
  std::normal_distribution<float> normal;
  std::vector<float> x(n * dim);
  for (float& v : x) v = normal(rng);
  const std::string in = temp_path("tq_in.f32"), packed = temp_path("tq.bin"),
                    out = temp_path("tq_out.f32");
  std::ofstream(in, std::ios::binary).write(reinterpret_cast<const char*>(x.data()), x.size() * 4);
  ASSERT_EQ(mlxn::cli::run_tq_encode(bits, dim, in, packed), 0);
  const std::vector<char> file = slurp(packed);
  const size_t row = static_cast<size_t>(mlxn::tq::payload_bytes(dim, bits));
  ASSERT_EQ(file.size(), n * (row + 2));
  for (int i = 0; i < n; ++i) {
    std::vector<uint8_t> payload(row);
    uint16_t scale;
    mlxn::tq::reference::encode(x.data() + i * dim, dim, bits, payload.data(), &scale);
    EXPECT_EQ(std::memcmp(file.data() + i * row, payload.data(), row), 0) << i;
    uint16_t stored;
    std::memcpy(&stored, file.data() + n * row + 2 * i, 2);
    EXPECT_EQ(stored, scale) << i;
  }
  ASSERT_EQ(mlxn::cli::run_tq_decode(bits, dim, packed, out, false), 0);
  const std::vector<char> decoded = slurp(out);
  ASSERT_EQ(decoded.size(), x.size() * 4);
  std::vector<float> expect(dim);
  for (int i = 0; i < n; ++i) {
    uint16_t scale;
    std::memcpy(&scale, file.data() + n * row + 2 * i, 2);
    mlxn::tq::reference::decode_original(reinterpret_cast<const uint8_t*>(file.data()) + i * row,
                                         scale, dim, bits, expect.data());
    EXPECT_EQ(std::memcmp(decoded.data() + i * dim * 4, expect.data(), dim * 4), 0) << i;
  }
}

TEST(TqCli, MalformedFilesAreErrors) {
  const std::string odd = temp_path("tq_odd.f32");
  std::ofstream(odd, std::ios::binary).write("abcdefg", 7);
  EXPECT_THROW(mlxn::cli::run_tq_encode(4, 64, odd, temp_path("x")), mlxn::Error);
  EXPECT_THROW(mlxn::cli::run_tq_decode(4, 64, odd, temp_path("x"), false), mlxn::Error);
  EXPECT_THROW(mlxn::cli::run_tq_encode(4, 64, temp_path("does_not_exist"), temp_path("x")),
               mlxn::Error);
  EXPECT_THROW(mlxn::cli::run_tq_encode(7, 64, odd, temp_path("x")), mlxn::Error);
}
