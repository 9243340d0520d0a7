// GGUF v3: writer -> reader round trips for every metadata type and the supported tensor types,
// and malformed files (every truncation, bad headers, huge counts and lengths, bad dims,
// offsets, alignment and duplicates) that must give an mlxn::Error, never a crash.
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "formats/ggml.h"
#include "io/io_test_util.h"
#include "mlxn/core/float_types.h"
#include "mlxn/io/gguf.h"
#include "support/support.h"

using namespace mlxn;
using namespace mlxn::io;
using mlxn::test::cpu_stream;
using mlxn::test::TestDir;
using mlxn::test::throws_error;

namespace {

// A GGUF file assembled byte by byte, for files the writer refuses to produce.
struct Raw {
  std::string data;

  Raw& u8(uint8_t v) { return put(&v, 1); }
  Raw& u32(uint32_t v) { return put(&v, 4); }
  Raw& u64(uint64_t v) { return put(&v, 8); }
  Raw& str(std::string_view s) {
    u64(s.size());
    data.append(s);
    return *this;
  }
  Raw& header(uint64_t tensors, uint64_t kvs, uint32_t version = 3) {
    data.append("GGUF");
    u32(version);
    u64(tensors);
    return u64(kvs);
  }
  Raw& kv_u32(std::string_view key, uint32_t v) {
    str(key);
    u32(4);
    return u32(v);
  }
  Raw& tensor(std::string_view name, const std::vector<uint64_t>& dims, uint32_t type,
              uint64_t offset) {
    str(name);
    u32(static_cast<uint32_t>(dims.size()));
    for (uint64_t d : dims) u64(d);
    u32(type);
    return u64(offset);
  }
  Raw& pad(size_t alignment) {
    while (data.size() % alignment != 0) data.push_back('\0');
    return *this;
  }
  Raw& zeros(size_t n) {
    data.append(n, '\0');
    return *this;
  }

 private:
  Raw& put(const void* p, size_t n) {
    data.append(static_cast<const char*>(p), n);
    return *this;
  }
};

std::vector<std::byte> as_bytes(const void* p, size_t n) {
  const auto* b = static_cast<const std::byte*>(p);
  return std::vector<std::byte>(b, b + n);
}

std::vector<float> gaussian(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> d;
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

// Quantized bytes of `rows` rows of `k` gaussian values.
std::vector<std::byte> blocks_of(WeightFormat f, int64_t k, int64_t rows, uint64_t seed) {
  const GgmlTypeInfo* info = ggml_type_info(formats::ggml_type_of(f));
  const std::vector<float> x = gaussian(static_cast<size_t>(k * rows), seed);
  std::vector<std::byte> out(
      static_cast<size_t>(k * rows / info->block_elements * info->block_bytes));
  formats::quantize_row(f, x.data(), k * rows, reinterpret_cast<uint8_t*>(out.data()));
  return out;
}

GgufArray array_of(GgufArrayValues values) { return GgufArray{std::move(values)}; }

// The round-trip metadata: one key per value type and per array element type.
std::vector<GgufKv> every_value() {
  std::vector<GgufKv> kvs;
  kvs.push_back({"t.u8", uint8_t{200}});
  kvs.push_back({"t.i8", int8_t{-5}});
  kvs.push_back({"t.u16", uint16_t{60000}});
  kvs.push_back({"t.i16", int16_t{-30000}});
  kvs.push_back({"t.u32", uint32_t{4000000000u}});
  kvs.push_back({"t.i32", int32_t{-2000000000}});
  kvs.push_back({"t.f32", 1.5f});
  kvs.push_back({"t.bool", true});
  kvs.push_back({"t.string", std::string("llama \xc3\xbc")});
  kvs.push_back({"t.empty_string", std::string()});
  kvs.push_back({"t.u64", uint64_t{(uint64_t{1} << 63) + 5}});
  kvs.push_back({"t.i64", int64_t{-(int64_t{1} << 62)}});
  kvs.push_back({"t.f64", 0.1});
  kvs.push_back({"a.u8", array_of(std::vector<uint8_t>{0, 1, 255})});
  kvs.push_back({"a.i8", array_of(std::vector<int8_t>{-128, 127})});
  kvs.push_back({"a.u16", array_of(std::vector<uint16_t>{1, 65535})});
  kvs.push_back({"a.i16", array_of(std::vector<int16_t>{-32768, 5})});
  kvs.push_back({"a.u32", array_of(std::vector<uint32_t>{7, 4294967295u})});
  kvs.push_back({"a.i32", array_of(std::vector<int32_t>{-1, 2, -3})});
  kvs.push_back({"a.f32", array_of(std::vector<float>{0.5f, -2.25f, 1e30f})});
  kvs.push_back({"a.bool", array_of(std::vector<bool>{true, false, true})});
  kvs.push_back({"a.string", array_of(std::vector<std::string>{"<unk>", "", "\xe2\x96\x81the"})});
  kvs.push_back({"a.u64", array_of(std::vector<uint64_t>{0, ~uint64_t{0}})});
  kvs.push_back({"a.i64", array_of(std::vector<int64_t>{std::numeric_limits<int64_t>::min()})});
  kvs.push_back({"a.f64", array_of(std::vector<double>{3.141592653589793})});
  kvs.push_back({"a.empty", array_of(std::vector<std::string>{})});
  kvs.push_back({"a.nested",
                 array_of(std::vector<GgufArray>{
                     array_of(std::vector<int32_t>{1, 2}), array_of(std::vector<std::string>{"x"}),
                     array_of(std::vector<GgufArray>{array_of(std::vector<uint8_t>{9})})})});
  return kvs;
}

}  // namespace

TEST(GgufRoundTrip, EveryMetadataType) {
  TestDir dir;
  GgufWriter w;
  for (const GgufKv& kv : every_value()) w.add(kv.key, kv.value);
  const std::string path = dir.file("meta.gguf");
  w.write(path);
  EXPECT_FALSE(std::filesystem::exists(path + ".partial"));

  const GgufFile f = GgufFile::open(path);
  EXPECT_EQ(f.version(), 3u);
  EXPECT_EQ(f.alignment(), 32);
  EXPECT_TRUE(f.tensors().empty());
  const std::vector<GgufKv> expected = every_value();
  ASSERT_EQ(f.metadata().size(), expected.size());
  for (size_t i = 0; i < expected.size(); ++i) {
    EXPECT_EQ(f.metadata()[i].key, expected[i].key);  // file order
    EXPECT_EQ(f.metadata()[i].value, expected[i].value) << expected[i].key;
    EXPECT_EQ(gguf_value_type(f.get(expected[i].key)), gguf_value_type(expected[i].value));
  }
  EXPECT_EQ(f.get_u8("t.u8"), 200);
  EXPECT_EQ(f.get_i8("t.i8"), -5);
  EXPECT_EQ(f.get_u16("t.u16"), 60000);
  EXPECT_EQ(f.get_i16("t.i16"), -30000);
  EXPECT_EQ(f.get_u32("t.u32"), 4000000000u);
  EXPECT_EQ(f.get_i32("t.i32"), -2000000000);
  EXPECT_EQ(f.get_u64("t.u64"), (uint64_t{1} << 63) + 5);
  EXPECT_EQ(f.get_i64("t.i64"), -(int64_t{1} << 62));
  EXPECT_EQ(f.get_f32("t.f32"), 1.5f);
  EXPECT_EQ(f.get_f64("t.f64"), 0.1);
  EXPECT_EQ(f.get_f64("t.f32"), 1.5);
  EXPECT_TRUE(f.get_bool("t.bool"));
  EXPECT_EQ(f.get_string("t.string"), "llama \xc3\xbc");
  EXPECT_EQ(f.get_string("t.empty_string"), "");
  EXPECT_EQ(f.get_string_array("a.string")[2], "\xe2\x96\x81the");
  EXPECT_EQ(f.get_f32_array("a.f32")[1], -2.25f);
  EXPECT_EQ(f.get_int_array("a.i8"), (std::vector<int64_t>{-128, 127}));
  EXPECT_EQ(f.get_int_array("a.u32"), (std::vector<int64_t>{7, 4294967295}));
  EXPECT_EQ(f.get_array("a.nested").size(), 3u);
  EXPECT_EQ(f.get_array("a.nested").element_type(), GgufValueType::array);
  EXPECT_EQ(gguf_value_str(f.get("a.i32")), "[i32 × 3: -1, 2, -3]");
  EXPECT_EQ(gguf_value_str(f.get("t.string")), "\"llama \xc3\xbc\"");
  EXPECT_EQ(gguf_value_str(f.get("a.u8"), 2), "[u8 × 3: 0, 1, ...]");
}

TEST(GgufRoundTrip, TensorsOfEveryType) {
  TestDir dir;
  GgufWriter w;
  w.add("general.architecture", std::string("llama"));

  std::vector<float> f32(6);
  for (size_t i = 0; i < f32.size(); ++i) f32[i] = static_cast<float>(i) - 2.5f;
  std::vector<uint16_t> f16 = {0x3c00, 0xc000, 0x0001, 0x7bff};
  std::vector<uint16_t> bf16 = {0x3f80, 0xbf80, 0x4049, 0x0000};
  struct Expected {
    std::string name;
    GgmlType type;
    std::vector<int64_t> dims;
    std::vector<std::byte> bytes;
  };
  std::vector<Expected> tensors = {
      {"f32", GgmlType::f32, {3, 2}, as_bytes(f32.data(), f32.size() * 4)},
      {"f16", GgmlType::f16, {4}, as_bytes(f16.data(), f16.size() * 2)},
      {"bf16", GgmlType::bf16, {2, 2}, as_bytes(bf16.data(), bf16.size() * 2)},
      {"q8_0", GgmlType::q8_0, {64, 3}, blocks_of(WeightFormat::q8_0, 64, 3, 1)},
      {"q4_0", GgmlType::q4_0, {32, 5}, blocks_of(WeightFormat::q4_0, 32, 5, 2)},
      {"q4_k", GgmlType::q4_k, {256, 2}, blocks_of(WeightFormat::q4_k, 256, 2, 3)},
      {"q5_k", GgmlType::q5_k, {512, 1}, blocks_of(WeightFormat::q5_k, 512, 1, 4)},
      {"q6_k", GgmlType::q6_k, {256, 3}, blocks_of(WeightFormat::q6_k, 256, 3, 5)},
  };
  for (const Expected& t : tensors) w.add_tensor(t.name, t.type, t.dims, t.bytes);
  // A streamed tensor, produced in uneven pieces at write time.
  const std::vector<std::byte> streamed = blocks_of(WeightFormat::q8_0, 96, 2, 6);
  w.add_tensor("streamed", GgmlType::q8_0, {96, 2}, [&](const GgufWriter::Sink& sink) {
    sink(std::span(streamed).first(5));
    sink(std::span(streamed).subspan(5));
  });
  tensors.push_back({"streamed", GgmlType::q8_0, {96, 2}, streamed});
  const std::string path = dir.file("tensors.gguf");
  w.write(path);

  const GgufFile f = GgufFile::open(path);
  ASSERT_EQ(f.tensors().size(), tensors.size());
  EXPECT_EQ(f.data_offset() % 32, 0);
  for (size_t i = 0; i < tensors.size(); ++i) {
    const Expected& e = tensors[i];
    const GgufTensorInfo& t = f.tensors()[i];
    EXPECT_EQ(t.name, e.name);
    EXPECT_EQ(t.type, e.type) << e.name;
    EXPECT_EQ(t.dims, e.dims) << e.name;
    EXPECT_EQ(t.offset % 32, 0) << e.name;
    EXPECT_EQ(t.file_offset, f.data_offset() + t.offset);
    EXPECT_EQ(t.nbytes, static_cast<int64_t>(e.bytes.size())) << e.name;
    const std::span<const std::byte> bytes = f.tensor_bytes(t);
    EXPECT_TRUE(std::equal(bytes.begin(), bytes.end(), e.bytes.begin(), e.bytes.end())) << e.name;
    EXPECT_EQ(&f.tensor(e.name), &t);
  }
  EXPECT_EQ(f.find_tensor("absent"), nullptr);
  EXPECT_TRUE(
      throws_error([&] { f.tensor("absent"); }, "[gguf] " + path, {"tensor absent missing"}));

  // load(): plain types as their dtype and row-major shape, blocks as u8 rows.
  const Buffer a = f.load("f32", cpu_stream());
  EXPECT_EQ(a.dtype(), DType::f32);
  EXPECT_EQ(a.shape(), (Shape{2, 3}));
  EXPECT_EQ(a.to_host<float>(cpu_stream()), f32);
  const Buffer h = f.load("f16", cpu_stream());
  EXPECT_EQ(h.dtype(), DType::f16);
  EXPECT_EQ(h.shape(), (Shape{4}));
  const Buffer b = f.load("bf16", cpu_stream());
  EXPECT_EQ(b.dtype(), DType::bf16);
  EXPECT_EQ(b.shape(), (Shape{2, 2}));
  const Buffer q = f.load("q6_k", cpu_stream());
  EXPECT_EQ(q.dtype(), DType::u8);
  EXPECT_EQ(q.shape(), (Shape{3, 210}));
  const std::vector<uint8_t> qb = q.to_host<uint8_t>(cpu_stream());
  EXPECT_EQ(std::memcmp(qb.data(), tensors[7].bytes.data(), qb.size()), 0);
  const Buffer q4 = f.load("q4_0", cpu_stream());
  EXPECT_EQ(q4.shape(), (Shape{5, 18}));
}

TEST(GgufRoundTrip, CustomAlignment) {
  TestDir dir;
  GgufWriter w;
  w.add("general.alignment", uint32_t{64});
  EXPECT_EQ(w.alignment(), 64);
  std::vector<float> x(3, 1.0f);
  w.add_tensor("a", GgmlType::f32, {3}, as_bytes(x.data(), 12));
  w.add_tensor("b", GgmlType::f32, {3}, as_bytes(x.data(), 12));
  const std::string path = dir.file("aligned.gguf");
  w.write(path);
  const GgufFile f = GgufFile::open(path);
  EXPECT_EQ(f.alignment(), 64);
  EXPECT_EQ(f.data_offset() % 64, 0);
  EXPECT_EQ(f.tensors()[1].offset, 64);
  EXPECT_EQ(f.file_size() % 64, 0);  // each tensor padded, the last one too
}

TEST(GgufGetters, IntegerWideningAndErrors) {
  TestDir dir;
  GgufWriter w;
  w.add("llama.block_count", uint8_t{32});
  w.add("big", uint32_t{4000000000u});
  w.add("neg", int32_t{-1});
  w.add("name", std::string("x"));
  w.add("ints", array_of(std::vector<uint64_t>{1, ~uint64_t{0}}));
  const std::string path = dir.file("getters.gguf");
  w.write(path);
  const GgufFile f = GgufFile::open(path);
  EXPECT_EQ(f.get_u32("llama.block_count"), 32u);
  EXPECT_EQ(f.get_i64("llama.block_count"), 32);
  EXPECT_EQ(f.get_i16("llama.block_count"), 32);
  EXPECT_EQ(f.get_u64("big"), 4000000000u);
  EXPECT_EQ(f.get_i64("neg"), -1);
  const std::string prefix = "[gguf] " + path + ": ";
  EXPECT_TRUE(
      throws_error([&] { f.get_u32("llama.missing"); }, prefix + "key llama.missing missing"));
  EXPECT_TRUE(
      throws_error([&] { f.get_u32("name"); }, prefix + "key name has type string, expected u32"));
  EXPECT_TRUE(throws_error([&] { f.get_u8("big"); },
                           prefix + "key big value 4000000000 (u32) does not fit u8"));
  EXPECT_TRUE(throws_error([&] { f.get_u32("neg"); }, prefix, {"-1 (i32) does not fit u32"}));
  EXPECT_TRUE(throws_error([&] { f.get_i32("big"); }, prefix, {"does not fit i32"}));
  EXPECT_TRUE(throws_error([&] { f.get_f32("big"); }, prefix, {"has type u32, expected f32"}));
  EXPECT_TRUE(throws_error([&] { f.get_string("big"); }, prefix, {"expected string"}));
  EXPECT_TRUE(throws_error([&] { f.get_bool("name"); }, prefix, {"expected bool"}));
  EXPECT_TRUE(throws_error([&] { f.get_string_array("ints"); }, prefix,
                           {"is an array of u64, expected an array of string"}));
  EXPECT_TRUE(
      throws_error([&] { f.get_int_array("ints"); }, prefix, {"element 1", "does not fit i64"}));
  EXPECT_TRUE(throws_error([&] { f.get_array("name"); }, prefix, {"expected array"}));
  EXPECT_FALSE(f.contains("absent"));
  EXPECT_EQ(f.find("absent"), nullptr);
}

// ---- malformed files ----

namespace {

// A small valid file: a string, an array of strings, an integer, and two tensors; returns its
// bytes and the end of the last tensor's data (the file is padded past it).
std::string small_file(const TestDir& dir, int64_t* data_end) {
  GgufWriter w;
  w.add("general.architecture", std::string("llama"));
  w.add("tokenizer.ggml.tokens", array_of(std::vector<std::string>{"a", "bc", ""}));
  w.add("llama.block_count", uint32_t{2});
  std::vector<float> x = {1.0f, 2.0f, 3.0f};
  w.add_tensor("w", GgmlType::f32, {3}, as_bytes(x.data(), 12));
  w.add_tensor("q", GgmlType::q8_0, {32}, blocks_of(WeightFormat::q8_0, 32, 1, 9));
  const std::string path = dir.file("small.gguf");
  w.write(path);
  const GgufFile f = GgufFile::open(path);
  *data_end = 0;
  for (const GgufTensorInfo& t : f.tensors())
    *data_end = std::max(*data_end, t.file_offset + t.nbytes);
  return mlxn::test::read_text(path);
}

::testing::AssertionResult opens(const std::string& path) {
  try {
    GgufFile::open(path);
    return ::testing::AssertionSuccess();
  } catch (const Error& e) {
    return ::testing::AssertionFailure() << e.what();
  } catch (const std::exception& e) {
    return ::testing::AssertionFailure() << "non-mlxn exception: " << e.what();
  }
}

// Opening `raw` fails with an Error naming the file and containing `parts`.
::testing::AssertionResult rejects(const TestDir& dir, const std::string& raw,
                                   std::initializer_list<std::string_view> parts) {
  const std::string path = dir.file("bad.gguf");
  mlxn::test::write_text(path, raw);
  return throws_error([&] { GgufFile::open(path); }, "[gguf] " + path + ": ", parts);
}

}  // namespace

TEST(GgufMalformed, EveryTruncationThrows) {
  TestDir dir;
  int64_t data_end = 0;
  const std::string full = small_file(dir, &data_end);
  ASSERT_GT(data_end, 100);
  const std::string path = dir.file("cut.gguf");
  for (size_t n = 0; n < full.size(); ++n) {
    mlxn::test::write_text(path, full.substr(0, n));
    if (static_cast<int64_t>(n) < data_end) {
      ASSERT_TRUE(throws_error([&] { GgufFile::open(path); }, "[gguf] " + path + ": "))
          << "truncated to " << n << " bytes";
    } else {
      ASSERT_TRUE(opens(path)) << "truncated to " << n << " bytes (only padding lost)";
    }
  }
  mlxn::test::write_text(path, full);
  EXPECT_TRUE(opens(path));
}

TEST(GgufMalformed, BadMagicAndVersions) {
  TestDir dir;
  int64_t data_end = 0;
  const std::string full = small_file(dir, &data_end);
  std::string bad = full;
  bad[3] = 'L';
  EXPECT_TRUE(rejects(dir, bad, {"not a GGUF file", "47 47 55 4c"}));
  for (uint32_t version : {1u, 2u}) {
    bad = full;
    std::memcpy(bad.data() + 4, &version, 4);
    EXPECT_TRUE(rejects(dir, bad, {"version " + std::to_string(version), "only version 3"}));
  }
  bad = full;
  const char big_endian_3[4] = {0, 0, 0, 3};
  std::memcpy(bad.data() + 4, big_endian_3, 4);
  EXPECT_TRUE(rejects(dir, bad, {"big-endian"}));
  bad = full;
  const uint32_t v4 = 4;
  std::memcpy(bad.data() + 4, &v4, 4);
  EXPECT_TRUE(rejects(dir, bad, {"unsupported GGUF version 4"}));
  EXPECT_TRUE(rejects(dir, "", {"truncated", "magic"}));
  EXPECT_TRUE(
      throws_error([&] { GgufFile::open(dir.file("absent.gguf")); }, "[gguf]", {"cannot open"}));
}

TEST(GgufMalformed, HugeLengthsAndCounts) {
  TestDir dir;
  const uint64_t huge = uint64_t{1} << 63;
  // A key of length 2^63: refused before anything is allocated.
  EXPECT_TRUE(rejects(dir, Raw().header(0, 1).u64(huge).zeros(64).data,
                      {"key of metadata entry 0", "string length 9223372036854775808"}));
  // A string value of length 2^64 - 1.
  EXPECT_TRUE(rejects(dir, Raw().header(0, 1).str("k").u32(8).u64(~uint64_t{0}).zeros(16).data,
                      {"key k value", "string length"}));
  EXPECT_TRUE(rejects(dir, Raw().header(0, uint64_t{1} << 60).zeros(64).data, {"metadata count"}));
  EXPECT_TRUE(rejects(dir, Raw().header(uint64_t{1} << 60, 0).zeros(64).data, {"tensor count"}));
  EXPECT_TRUE(rejects(dir, Raw().header(~uint64_t{0}, ~uint64_t{0}).data, {"count"}));
  // Arrays whose element count cannot fit in what is left of the file.
  EXPECT_TRUE(
      rejects(dir, Raw().header(0, 1).str("k").u32(9).u32(10).u64(uint64_t{1} << 61).zeros(64).data,
              {"key k", "array of 2305843009213693952 u64"}));
  EXPECT_TRUE(rejects(dir, Raw().header(0, 1).str("k").u32(9).u32(8).u64(huge).zeros(64).data,
                      {"key k", "string elements cannot fit"}));
  EXPECT_TRUE(rejects(dir, Raw().header(0, 1).str("k").u32(9).u32(9).u64(huge).zeros(64).data,
                      {"key k", "array elements cannot fit"}));
  // An array of strings whose third element runs past the end.
  EXPECT_TRUE(
      rejects(dir, Raw().header(0, 1).str("k").u32(9).u32(8).u64(3).str("a").str("b").u64(40).data,
              {"key k element 2"}));
}

TEST(GgufMalformed, DimsAndTypes) {
  TestDir dir;
  const auto one_tensor = [](const std::vector<uint64_t>& dims, uint32_t type) {
    return Raw().header(1, 0).tensor("t", dims, type, 0).pad(32).zeros(4096).data;
  };
  EXPECT_TRUE(rejects(dir, one_tensor({uint64_t{1} << 40, uint64_t{1} << 40}, 0),
                      {"tensor t", "element count overflows"}));
  EXPECT_TRUE(
      rejects(dir, one_tensor({uint64_t{1} << 62}, 0), {"tensor t", "byte size overflows"}));
  EXPECT_TRUE(
      rejects(dir, one_tensor({(uint64_t{1} << 63) + 1}, 0), {"tensor t dim 0", "exceeds"}));
  EXPECT_TRUE(rejects(dir, one_tensor({uint64_t{1} << 30, 4}, 0), {"tensor t", "outside"}));
  EXPECT_TRUE(rejects(dir, one_tensor({128}, 12), {"tensor t (Q4_K)", "ne0 = 128", "256"}));
  EXPECT_TRUE(rejects(dir, one_tensor({32}, 4), {"tensor t", "unknown type id 4"}));
  EXPECT_TRUE(rejects(dir, one_tensor({1, 1, 1, 1, 1, 1, 1, 1, 1}, 0), {"tensor t has 9 dims"}));
  // Zero-sized and 0-d tensors are fine.
  const std::string path = dir.file("ok.gguf");
  mlxn::test::write_text(path, one_tensor({0, 5}, 0));
  EXPECT_TRUE(opens(path));
  mlxn::test::write_text(path, one_tensor({}, 0));
  EXPECT_TRUE(opens(path));
  EXPECT_EQ(GgufFile::open(path).tensors()[0].numel(), 1);
}

TEST(GgufMalformed, Offsets) {
  TestDir dir;
  const auto two = [](uint64_t off_a, uint64_t off_b, size_t data) {
    return Raw()
        .header(2, 0)
        .tensor("a", {8}, 0, off_a)
        .tensor("b", {8}, 0, off_b)
        .pad(32)
        .zeros(data)
        .data;
  };
  const std::string path = dir.file("ok.gguf");
  mlxn::test::write_text(path, two(0, 32, 64));
  ASSERT_TRUE(opens(path));
  EXPECT_TRUE(rejects(dir, two(0, 8, 64), {"tensor b offset 8", "alignment 32"}));
  EXPECT_TRUE(rejects(dir, two(0, 64, 64), {"tensor b", "outside"}));
  EXPECT_TRUE(rejects(dir, two(0, 32, 63), {"tensor b", "outside"}));
  EXPECT_TRUE(rejects(dir, two(0, uint64_t{1} << 62, 64), {"tensor b", "outside"}));
  EXPECT_TRUE(rejects(dir, two(0, 0, 64), {"tensors a", "and b", "overlap"}));
  EXPECT_TRUE(rejects(
      dir,
      Raw().header(2, 0).tensor("a", {8}, 0, 32).tensor("b", {16}, 0, 0).pad(32).zeros(64).data,
      {"tensors b [0, +64) and a [32, +32) overlap"}));
  // Tensor infos promising data although the file ends before the data section.
  EXPECT_TRUE(rejects(dir, Raw().header(1, 0).tensor("a", {8}, 0, 0).data, {"truncated"}));
}

TEST(GgufMalformed, BadAlignment) {
  TestDir dir;
  const auto with_alignment = [](Raw kv) { return kv.tensor("a", {8}, 0, 0).zeros(256).data; };
  EXPECT_TRUE(rejects(dir, with_alignment(Raw().header(1, 1).kv_u32("general.alignment", 48)),
                      {"general.alignment 48 is not a power of two"}));
  EXPECT_TRUE(rejects(dir, with_alignment(Raw().header(1, 1).kv_u32("general.alignment", 0)),
                      {"general.alignment 0"}));
  EXPECT_TRUE(rejects(dir,
                      with_alignment(Raw().header(1, 1).str("general.alignment").u32(8).str("x")),
                      {"key general.alignment has type string"}));
  // A valid, unusual alignment is honoured (the data section starts at a multiple of 8).
  const std::string path = dir.file("ok.gguf");
  Raw ok = Raw().header(1, 1).kv_u32("general.alignment", 8).tensor("a", {8}, 0, 0);
  mlxn::test::write_text(path, ok.pad(8).zeros(32).data);
  ASSERT_TRUE(opens(path));
  EXPECT_EQ(GgufFile::open(path).alignment(), 8);
  EXPECT_EQ(GgufFile::open(path).data_offset() % 8, 0);
}

TEST(GgufMalformed, Duplicates) {
  TestDir dir;
  EXPECT_TRUE(
      rejects(dir, Raw().header(0, 2).kv_u32("k", 1).kv_u32("k", 2).data, {"duplicate key k"}));
  EXPECT_TRUE(rejects(
      dir, Raw().header(2, 0).tensor("t", {8}, 0, 0).tensor("t", {8}, 0, 32).pad(32).zeros(64).data,
      {"duplicate tensor name t"}));
}

TEST(GgufMalformed, ValuesAndNesting) {
  TestDir dir;
  EXPECT_TRUE(rejects(dir, Raw().header(0, 1).str("k").u32(7).u8(2).data, {"key k: bool value 2"}));
  EXPECT_TRUE(rejects(dir, Raw().header(0, 1).str("k").u32(13).u64(0).data,
                      {"key k has unknown value type 13"}));
  EXPECT_TRUE(rejects(dir, Raw().header(0, 1).str("k").u32(9).u32(77).u64(0).data,
                      {"array of unknown value type 77"}));
  EXPECT_TRUE(rejects(dir, Raw().header(0, 1).str("k").u32(9).u32(7).u64(2).u8(1).u8(5).data,
                      {"bool value 5"}));
  // Arrays nested 100 deep (each one element): refused at depth 16, without exhausting the stack.
  Raw deep = Raw().header(0, 1).str("k").u32(9);
  for (int i = 0; i < 100; ++i) deep.u32(9).u64(1);
  deep.u32(0).u64(0);
  EXPECT_TRUE(rejects(dir, deep.data, {"nested deeper than 16"}));
  // Nesting within the limit is read back.
  Raw ok = Raw().header(0, 1).str("k").u32(9);
  for (int i = 0; i < 10; ++i) ok.u32(9).u64(1);
  ok.u32(4).u64(1).u32(77);
  const std::string path = dir.file("nested.gguf");
  mlxn::test::write_text(path, ok.data);
  ASSERT_TRUE(opens(path));
  const GgufFile f = GgufFile::open(path);
  const GgufArray* a = &f.get_array("k");
  for (int i = 0; i < 10; ++i) a = &std::get<std::vector<GgufArray>>(a->values)[0];
  EXPECT_EQ(std::get<std::vector<uint32_t>>(a->values), (std::vector<uint32_t>{77}));
}

// ---- writer errors ----

TEST(GgufWriterTest, RefusesBadInputAndLeavesNoPartialFile) {
  TestDir dir;
  GgufWriter w;
  w.add("k", uint32_t{1});
  EXPECT_TRUE(throws_error([&] { w.add("k", uint32_t{2}); }, "[gguf] writer: duplicate key k"));
  EXPECT_TRUE(throws_error([&] { w.add("general.alignment", uint32_t{24}); }, "[gguf]",
                           {"not a power of two"}));
  EXPECT_TRUE(throws_error([&] { w.add("general.alignment", std::string("32")); }, "[gguf]",
                           {"has type string, expected u32"}));
  EXPECT_TRUE(throws_error([&] { w.add("general.alignment", uint64_t{32}); }, "[gguf]",
                           {"has type u64, expected u32"}));
  std::vector<std::byte> bytes(12);
  w.add_tensor("t", GgmlType::f32, {3}, bytes);
  EXPECT_TRUE(throws_error([&] { w.add_tensor("t", GgmlType::f32, {3}, bytes); }, "[gguf]",
                           {"duplicate tensor name t"}));
  EXPECT_TRUE(throws_error([&] { w.add_tensor("u", GgmlType::f32, {4}, bytes); }, "[gguf]",
                           {"needs 16 bytes, 12 given"}));
  EXPECT_TRUE(throws_error([&] { w.add_tensor("v", GgmlType::q4_k, {128}, bytes); }, "[gguf]",
                           {"not a multiple of the Q4_K block size 256"}));
  EXPECT_TRUE(throws_error([&] { w.add_tensor(std::string(64, 'x'), GgmlType::f32, {3}, bytes); },
                           "[gguf]", {"at most 63"}));

  // A producer that comes up short: the write fails and nothing is left behind.
  w.add_tensor("short", GgmlType::f32, {4}, [](const GgufWriter::Sink& sink) {
    std::byte b[8] = {};
    sink(b);
  });
  const std::string path = dir.file("out.gguf");
  EXPECT_TRUE(throws_error([&] { w.write(path); }, "[gguf]", {"short", "produced 8 of its 16"}));
  EXPECT_FALSE(std::filesystem::exists(path));
  EXPECT_FALSE(std::filesystem::exists(path + ".partial"));
  EXPECT_TRUE(throws_error([&] { w.write(dir.file("no/such/dir/out.gguf")); }, "[gguf]",
                           {"cannot create"}));
}

TEST(GgufLoad, WeightsAndUnsupportedTypes) {
  TestDir dir;
  GgufWriter w;
  const std::vector<uint16_t> f16(12, 0x3c00);
  w.add_tensor("dense", GgmlType::f16, {4, 3}, as_bytes(f16.data(), f16.size() * 2));
  const std::vector<std::byte> q4k = blocks_of(WeightFormat::q4_k, 512, 2, 7);
  w.add_tensor("q4_k", GgmlType::q4_k, {512, 2}, q4k);
  w.add_tensor("norm", GgmlType::f32, {4}, std::vector<std::byte>(16));
  w.add_tensor("q5_0", GgmlType::q5_0, {32, 2}, std::vector<std::byte>(44));
  w.add_tensor("i16", GgmlType::i16, {4}, std::vector<std::byte>(8));
  const std::string path = dir.file("weights.gguf");
  w.write(path);
  const GgufFile f = GgufFile::open(path);

  const Weight d = f.load_weight("dense", cpu_stream());
  EXPECT_EQ(d.format(), WeightFormat::dense);
  EXPECT_EQ(d.out_features(), 3);
  EXPECT_EQ(d.in_features(), 4);
  EXPECT_EQ(d.data().dtype(), DType::f16);

  const Weight q = f.load_weight("q4_k", cpu_stream());
  EXPECT_EQ(q.format(), WeightFormat::q4_k);
  EXPECT_EQ(q.out_features(), 2);
  EXPECT_EQ(q.in_features(), 512);
  const std::vector<uint8_t> stored = q.data().to_host<uint8_t>(cpu_stream());
  ASSERT_EQ(stored.size(), q4k.size());
  EXPECT_EQ(std::memcmp(stored.data(), q4k.data(), stored.size()), 0);

  const std::string prefix = "[gguf] " + path + ": tensor ";
  EXPECT_TRUE(
      throws_error([&] { f.load_weight("norm", cpu_stream()); }, prefix + "norm", {"has 1"}));
  EXPECT_TRUE(throws_error([&] { f.load_weight("q5_0", cpu_stream()); }, prefix + "q5_0",
                           {"no weight format"}));
  EXPECT_EQ(f.load("q5_0", cpu_stream()).shape(), (Shape{2, 22}));  // still loadable as bytes
  EXPECT_TRUE(
      throws_error([&] { f.load("i16", cpu_stream()); }, prefix + "i16", {"no buffer dtype"}));
}
