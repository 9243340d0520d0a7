// Safetensors reading and writing: round trips of every dtype, the reference writer's exact
// bytes, every malformed-header check, atomic writes, and sharded model directories.
#include "mlxn/io/safetensors.h"

#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <random>

#include "io/io_test_util.h"
#include "support/support.h"

namespace {

using mlxn::DType;
using mlxn::Shape;
using mlxn::io::SafetensorsFile;
using mlxn::io::SafetensorsModel;
using mlxn::io::TensorToWrite;
using mlxn::io::write_safetensors;
using mlxn::test::TestDir;
using mlxn::test::throws_error;

std::vector<std::byte> random_bytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<std::byte> v(n);
  for (auto& b : v) b = static_cast<std::byte>(rng() & 0xffu);
  return v;
}

std::string bytes_of(std::span<const std::byte> s) {
  return std::string(reinterpret_cast<const char*>(s.data()), s.size());
}

struct Case {
  std::string dtype;
  Shape shape;
  std::vector<std::byte> data;
};

TEST(Safetensors, RoundTripEveryDtypeWithMetadata) {
  TestDir dir;
  const std::vector<std::string> dtypes = {"F32", "F16", "BF16", "F8_E4M3", "F8_E5M2",
                                           "I8",  "U8",  "I32",  "U32",     "I64",
                                           "F64", "I16", "U16",  "U64",     "BOOL"};
  std::vector<Case> cases;
  std::vector<TensorToWrite> tensors;
  for (size_t i = 0; i < dtypes.size(); ++i) {
    Case c{dtypes[i], {3, static_cast<int64_t>(i) + 1}, {}};
    c.data =
        random_bytes(static_cast<size_t>(mlxn::io::safetensors_nbytes(c.dtype, c.shape, "test")),
                     static_cast<uint32_t>(i));
    cases.push_back(std::move(c));
  }
  for (const Case& c : cases) {
    tensors.push_back(TensorToWrite::from_bytes("t." + c.dtype, c.dtype, c.shape, c.data));
  }
  const std::string path = dir.file("all.safetensors");
  write_safetensors(path, tensors, {{"format", "mlx"}, {"note", "ünïcode"}});

  const SafetensorsFile f = SafetensorsFile::open(path);
  ASSERT_EQ(f.tensors().size(), cases.size());
  EXPECT_EQ(f.metadata().at("format"), "mlx");
  EXPECT_EQ(f.metadata().at("note"), "ünïcode");
  const mlxn::Stream& cpu = mlxn::test::cpu_stream();
  for (size_t i = 0; i < cases.size(); ++i) {
    const Case& c = cases[i];
    const mlxn::io::TensorInfo& t = f.at("t." + c.dtype);
    EXPECT_EQ(t.name, "t." + c.dtype);
    EXPECT_EQ(t.dtype_name, c.dtype);
    EXPECT_EQ(t.shape, c.shape);
    EXPECT_EQ(bytes_of(f.bytes(t)), bytes_of(c.data)) << c.dtype;
    const auto ours = mlxn::io::safetensors_to_dtype(c.dtype);
    EXPECT_EQ(t.dtype, ours);
    if (ours) {
      EXPECT_EQ(mlxn::io::dtype_to_safetensors(*ours), c.dtype);
      int64_t last_done = -1;
      const mlxn::Buffer b = f.load(t, cpu, [&](int64_t done, int64_t total) {
        EXPECT_EQ(total, static_cast<int64_t>(c.data.size()));
        last_done = done;
      });
      EXPECT_EQ(last_done, static_cast<int64_t>(c.data.size()));
      EXPECT_EQ(b.dtype(), *ours);
      EXPECT_EQ(b.shape(), c.shape);
      EXPECT_EQ(std::memcmp(b.data(), c.data.data(), c.data.size()), 0) << c.dtype;
    } else {
      EXPECT_TRUE(throws_error([&] { (void)f.load(t, cpu); }, "[safetensors]",
                               {path, "'t." + c.dtype + "'", c.dtype, "cannot be loaded"}));
    }
  }
}

TEST(Safetensors, EmptyAndScalarTensors) {
  TestDir dir;
  const std::vector<std::byte> scalar = random_bytes(4, 7);
  const std::string path = dir.file("empty.safetensors");
  write_safetensors(path, {TensorToWrite::from_bytes("zero_rows", "BF16", {0, 4}, {}),
                           TensorToWrite::from_bytes("scalar", "F32", {}, scalar),
                           TensorToWrite::from_bytes("zero_cols", "I32", {3, 0}, {})});
  const SafetensorsFile f = SafetensorsFile::open(path);
  EXPECT_TRUE(f.metadata().empty());
  const mlxn::Stream& cpu = mlxn::test::cpu_stream();
  const mlxn::Buffer e = f.load(f.at("zero_rows"), cpu);
  EXPECT_EQ(e.shape(), (Shape{0, 4}));
  EXPECT_EQ(e.numel(), 0);
  EXPECT_EQ(f.load(f.at("zero_cols"), cpu).shape(), (Shape{3, 0}));
  const mlxn::Buffer s = f.load(f.at("scalar"), cpu);
  EXPECT_EQ(s.rank(), 0);
  EXPECT_EQ(std::memcmp(s.data(), scalar.data(), 4), 0);
  EXPECT_EQ(f.find("missing"), nullptr);
  EXPECT_TRUE(throws_error([&] { (void)f.at("missing"); }, "[safetensors]", {path, "'missing'"}));
}

// The reference library's serializer tests give exact bytes for a one-tensor file: the JSON
// header with keys dtype, shape, data_offsets, padded with spaces to 8 bytes.
TEST(Safetensors, WriterMatchesReferenceBytes) {
  TestDir dir;
  std::vector<float> values = {0, 1, 2, 3, 4, 5};
  const std::span<const std::byte> data = std::as_bytes(std::span<const float>(values));
  struct Expect {
    std::string name;
    Shape shape;
    std::string header;
  };
  const std::vector<Expect> expects = {
      {"attn.0", {1, 2, 3}, R"({"attn.0":{"dtype":"F32","shape":[1,2,3],"data_offsets":[0,24]}})"},
      {"attn0",
       {1, 1, 2, 3},
       R"({"attn0":{"dtype":"F32","shape":[1,1,2,3],"data_offsets":[0,24]}})"
       "       "},
  };
  for (const Expect& e : expects) {
    const std::string path = dir.file(e.name + ".safetensors");
    write_safetensors(path, {TensorToWrite::from_bytes(e.name, "F32", e.shape, data)});
    const std::string file = mlxn::test::read_text(path);
    ASSERT_EQ(e.header.size() % 8, 0u);
    std::string expected(8, '\0');
    expected[0] = static_cast<char>(e.header.size());
    expected += e.header + bytes_of(data);
    EXPECT_EQ(file, expected) << e.name;
  }
  // Metadata comes first.
  const std::string path = dir.file("meta.safetensors");
  write_safetensors(path, {}, {{"framework", "pt"}});
  EXPECT_EQ(mlxn::test::read_text(path).substr(8),
            std::string(R"({"__metadata__":{"framework":"pt"}})") + "     ");
}

TEST(Safetensors, WriterStreamsAndNeverLeavesPartialFiles) {
  TestDir dir;
  const std::string path = dir.file("w.safetensors");
  // Bytes arrive in odd-sized pieces.
  const std::vector<std::byte> data = random_bytes(4 * 1000, 3);
  TensorToWrite t{"x", "F32", {1000}, [&](const mlxn::io::ByteSink& sink) {
                    for (size_t at = 0; at < data.size(); at += 999) {
                      sink(std::span(data).subspan(at, std::min<size_t>(999, data.size() - at)));
                    }
                  }};
  int64_t reported = 0;
  write_safetensors(path, {t}, {}, [&](int64_t n) { reported += n; });
  EXPECT_EQ(reported, 4000);
  EXPECT_EQ(bytes_of(SafetensorsFile::open(path).bytes(SafetensorsFile::open(path).at("x"))),
            bytes_of(data));

  // A source that fails half-way, or gives the wrong byte count: no file under either name,
  // and an existing file keeps its old contents.
  const std::string old_contents = mlxn::test::read_text(path);
  TensorToWrite failing{"x", "F32", {1000}, [&](const mlxn::io::ByteSink& sink) {
                          sink(std::span(data).subspan(0, 100));
                          throw mlxn::Error("test", "source failed");
                        }};
  EXPECT_TRUE(throws_error([&] { write_safetensors(path, {failing}); }, "[test]"));
  EXPECT_EQ(mlxn::test::read_text(path), old_contents);
  EXPECT_FALSE(std::filesystem::exists(path + ".partial"));
  TensorToWrite short_source{"y", "F32", {1000}, [&](const mlxn::io::ByteSink& sink) {
                               sink(std::span(data).subspan(0, 100));
                             }};
  const std::string other = dir.file("other.safetensors");
  EXPECT_TRUE(throws_error([&] { write_safetensors(other, {short_source}); }, "[safetensors]",
                           {other, "'y'", "100"}));
  TensorToWrite long_source{"y", "F32", {10}, [&](const mlxn::io::ByteSink& sink) {
                              sink(std::span(data).subspan(0, 100));
                            }};
  EXPECT_TRUE(throws_error([&] { write_safetensors(other, {long_source}); }, "[safetensors]",
                           {other, "'y'", "more than"}));
  EXPECT_FALSE(std::filesystem::exists(other));
  EXPECT_FALSE(std::filesystem::exists(other + ".partial"));

  EXPECT_TRUE(throws_error(
      [&] {
        write_safetensors(other, {TensorToWrite::from_bytes("a", "F32", {0}, {}),
                                  TensorToWrite::from_bytes("a", "F32", {0}, {})});
      },
      "[safetensors]", {"'a'", "twice"}));
  EXPECT_TRUE(throws_error(
      [&] { write_safetensors(other, {TensorToWrite::from_bytes("a", "F7", {0}, {})}); },
      "[safetensors]", {"'a'", "unknown dtype 'F7'"}));
  EXPECT_FALSE(std::filesystem::exists(other));
}

TEST(Safetensors, FromBufferWritesTheBuffer) {
  TestDir dir;
  const mlxn::Stream& cpu = mlxn::test::cpu_stream();
  const mlxn::Buffer b = mlxn::test::random_buffer({5, 7}, DType::bf16, 11, cpu);
  const std::string path = dir.file("b.safetensors");
  write_safetensors(path, {TensorToWrite::from_buffer("b", b)});
  const SafetensorsFile f = SafetensorsFile::open(path);
  EXPECT_EQ(f.at("b").dtype_name, "BF16");
  EXPECT_TRUE(mlxn::test::same_bits(f.load(f.at("b"), cpu), b, cpu, cpu));
}

TEST(Safetensors, GapsAndAnyOffsetOrderAreAccepted) {
  TestDir dir;
  const std::string path = dir.file("gaps.safetensors");
  mlxn::test::write_raw_safetensors(path,
                                    R"({"b":{"dtype":"U8","shape":[2],"data_offsets":[6,8]},)"
                                    R"("a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}})",
                                    "ab....cd..");
  const SafetensorsFile f = SafetensorsFile::open(path);
  EXPECT_EQ(bytes_of(f.bytes(f.at("a"))), "ab");
  EXPECT_EQ(bytes_of(f.bytes(f.at("b"))), "cd");
  EXPECT_EQ(f.tensors()[0].name, "a");  // sorted by name
}

// Each malformed header: an Error naming the file (and the tensor where there is one).
TEST(Safetensors, MalformedFilesAreErrors) {
  TestDir dir;
  struct Bad {
    const char* label;
    std::string header;
    std::string data;
    int64_t header_len;
    std::vector<std::string> parts;
  };
  const std::string ok_entry = R"("w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]})";
  const std::vector<Bad> bads = {
      {"past_eof", "{}", "", 1000, {"header length 1000", "past the end"}},
      {"absurd_length", "{}", "", int64_t{1} << 40, {"exceeds the limit"}},
      {"not_utf8", "{\"w\xff\":1}", "", -1, {"not valid UTF-8"}},
      {"overlong_utf8", "{\"\xc0\xaf\":1}", "", -1, {"not valid UTF-8"}},
      {"invalid_json", "{\"w\": [1, 2", "", -1, {"not valid JSON"}},
      {"empty_header", "", "", -1, {"not valid JSON"}},
      {"not_object", "[1,2]", "", -1, {"not a JSON object"}},
      {"duplicate_name",
       "{" + ok_entry + "," + ok_entry + "}",
       std::string(8, 'x'),
       -1,
       {"'w'", "more than once"}},
      {"duplicate_key",
       R"({"w":{"dtype":"F32","dtype":"F32","shape":[2],"data_offsets":[0,8]}})",
       std::string(8, 'x'),
       -1,
       {"'dtype'", "inside 'w'", "more than once"}},
      {"entry_not_object", R"({"w":[1]})", "", -1, {"'w'", "not an object"}},
      {"missing_dtype",
       R"({"w":{"shape":[2],"data_offsets":[0,8]}})",
       std::string(8, 'x'),
       -1,
       {"'w'", "missing key 'dtype'"}},
      {"missing_shape",
       R"({"w":{"dtype":"F32","data_offsets":[0,8]}})",
       std::string(8, 'x'),
       -1,
       {"'w'", "missing key 'shape'"}},
      {"missing_offsets",
       R"({"w":{"dtype":"F32","shape":[2]}})",
       std::string(8, 'x'),
       -1,
       {"'w'", "missing key 'data_offsets'"}},
      {"dtype_not_string",
       R"({"w":{"dtype":4,"shape":[2],"data_offsets":[0,8]}})",
       "",
       -1,
       {"'w'", "dtype is not a string"}},
      {"shape_not_array",
       R"({"w":{"dtype":"F32","shape":"2","data_offsets":[0,8]}})",
       "",
       -1,
       {"'w'", "shape is not an array"}},
      {"offsets_three",
       R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,4,8]}})",
       "",
       -1,
       {"'w'", "data_offsets is not an array of two"}},
      {"negative_dim",
       R"({"w":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})",
       "",
       -1,
       {"'w'", "negative"}},
      {"fractional_dim",
       R"({"w":{"dtype":"F32","shape":[2.5],"data_offsets":[0,8]}})",
       "",
       -1,
       {"'w'", "not an integer"}},
      {"huge_dim",
       R"({"w":{"dtype":"F32","shape":[18446744073709551615],"data_offsets":[0,8]}})",
       "",
       -1,
       {"'w'", "too large"}},
      {"negative_offset",
       R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[-8,0]}})",
       "",
       -1,
       {"'w'", "negative"}},
      {"unknown_dtype",
       R"({"w":{"dtype":"F7","shape":[2],"data_offsets":[0,8]}})",
       "",
       -1,
       {"'w'", "unknown dtype 'F7'"}},
      {"size_mismatch",
       R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})",
       std::string(8, 'x'),
       -1,
       {"'w'", "needs 12 bytes", "hold 8"}},
      {"overflow",
       R"({"w":{"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,8]}})",
       "",
       -1,
       {"'w'", "overflows"}},
      {"sub_byte",
       R"({"w":{"dtype":"F4","shape":[3],"data_offsets":[0,2]}})",
       "",
       -1,
       {"'w'", "whole number of bytes"}},
      {"out_of_range",
       "{" + ok_entry + "}",
       std::string(4, 'x'),
       -1,
       {"'w'", "past the data block of 4 bytes"}},
      {"end_before_begin",
       R"({"w":{"dtype":"F32","shape":[0],"data_offsets":[8,0]}})",
       std::string(8, 'x'),
       -1,
       {"'w'", "end before they begin"}},
      {"overlap",
       R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
       R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
       std::string(12, 'x'),
       -1,
       {"'a'", "'b'", "overlap"}},
      {"metadata_not_string",
       R"({"__metadata__":{"format":1}})",
       "",
       -1,
       {"__metadata__", "'format'", "not a string"}},
  };
  for (const Bad& bad : bads) {
    const std::string path = dir.file(std::string(bad.label) + ".safetensors");
    mlxn::test::write_raw_safetensors(path, bad.header, bad.data, bad.header_len);
    const auto message = mlxn::test::error_of([&] { (void)SafetensorsFile::open(path); });
    EXPECT_TRUE(message.starts_with("[safetensors] " + path)) << bad.label << ": " << message;
    for (const std::string& part : bad.parts) {
      EXPECT_NE(message.find(part), std::string::npos)
          << bad.label << ": \"" << message << "\" lacks \"" << part << "\"";
    }
  }
  const std::string tiny = dir.file("tiny.safetensors");
  mlxn::test::write_text(tiny, "abc");
  EXPECT_TRUE(throws_error([&] { (void)SafetensorsFile::open(tiny); }, "[safetensors] " + tiny,
                           {"too short"}));
  EXPECT_TRUE(throws_error([&] { (void)SafetensorsFile::open(dir.file("absent.safetensors")); },
                           "[safetensors]", {"absent.safetensors", "cannot open"}));
}

TEST(Safetensors, RankAboveTheLimitIsListedButNotLoaded) {
  TestDir dir;
  const std::string path = dir.file("deep.safetensors");
  write_safetensors(path, {TensorToWrite::from_bytes("d", "U8", Shape(9, 1), random_bytes(1, 1))});
  const SafetensorsFile f = SafetensorsFile::open(path);
  EXPECT_EQ(f.at("d").shape.size(), 9u);
  EXPECT_TRUE(throws_error([&] { (void)f.load(f.at("d"), mlxn::test::cpu_stream()); },
                           "[safetensors]", {path, "'d'", "rank 9"}));
}

// ---- model directories ------------------------------------------------------------------------

void write_shard(const std::string& path, const std::vector<std::string>& names, uint32_t seed) {
  std::vector<std::vector<std::byte>> data;
  for (size_t i = 0; i < names.size(); ++i) data.push_back(random_bytes(16, seed++));
  std::vector<TensorToWrite> tensors;
  for (size_t i = 0; i < names.size(); ++i) {
    tensors.push_back(TensorToWrite::from_bytes(names[i], "F32", {4}, data[i]));
  }
  write_safetensors(path, tensors);
}

TEST(SafetensorsModel, SingleFile) {
  TestDir dir;
  write_shard(dir.file("model.safetensors"), {"b", "a"}, 1);
  const SafetensorsModel m = SafetensorsModel::open_dir(dir.path().string());
  EXPECT_EQ(m.names(), (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(m.files().size(), 1u);
  EXPECT_EQ(m.total_bytes(), 32);
  EXPECT_EQ(m.load("a", mlxn::test::cpu_stream()).shape(), (Shape{4}));
  EXPECT_TRUE(throws_error([&] { (void)m.at("c"); }, "[safetensors]", {"'c'"}));
}

TEST(SafetensorsModel, ShardedWithIndex) {
  TestDir dir;
  write_shard(dir.file("model-00001-of-00002.safetensors"), {"layers.0.w", "embed"}, 1);
  write_shard(dir.file("model-00002-of-00002.safetensors"), {"layers.1.w", "extra"}, 5);
  // "extra" is in a shard but not in the index: kept, as loaders read whole shards.
  mlxn::test::write_text(dir.file("model.safetensors.index.json"), R"({
    "metadata": {"total_size": 64},
    "weight_map": {"embed": "model-00001-of-00002.safetensors",
                   "layers.0.w": "model-00001-of-00002.safetensors",
                   "layers.1.w": "model-00002-of-00002.safetensors"}})");
  // A model.safetensors beside the index is ignored: the index wins.
  write_shard(dir.file("model.safetensors"), {"stale"}, 9);
  const SafetensorsModel m = SafetensorsModel::open_dir(dir.path().string());
  EXPECT_EQ(m.names(), (std::vector<std::string>{"embed", "extra", "layers.0.w", "layers.1.w"}));
  EXPECT_EQ(m.files().size(), 2u);
  EXPECT_EQ(m.file_of(m.at("layers.1.w")).path(), dir.file("model-00002-of-00002.safetensors"));
  const SafetensorsFile direct =
      SafetensorsFile::open(dir.file("model-00002-of-00002.safetensors"));
  const mlxn::Buffer b = m.load("layers.1.w", mlxn::test::cpu_stream());
  EXPECT_EQ(std::memcmp(b.data(), direct.bytes(direct.at("layers.1.w")).data(), 16), 0);
  // A TensorInfo of another file is refused.
  EXPECT_TRUE(throws_error([&] { (void)direct.bytes(m.at("embed")); }, "[safetensors]",
                           {"'embed'", "not in this file"}));
}

TEST(SafetensorsModel, BadIndexesAreErrors) {
  TestDir dir;
  const std::string d = dir.path().string();
  EXPECT_TRUE(throws_error([&] { (void)SafetensorsModel::open_dir(d); }, "[safetensors]",
                           {d, "no model.safetensors"}));
  write_shard(dir.file("s1.safetensors"), {"a", "b"}, 1);
  write_shard(dir.file("s2.safetensors"), {"b", "c"}, 3);
  const std::string index = dir.file("model.safetensors.index.json");
  struct Bad {
    const char* label;
    std::string text;
    std::vector<std::string> parts;
  };
  const std::vector<Bad> bads = {
      {"missing_in_shard",
       R"({"weight_map": {"a": "s1.safetensors", "c": "s1.safetensors"}})",
       {"'c'", "s1.safetensors", "does not hold it"}},
      {"two_shards",
       R"({"weight_map": {"a": "s1.safetensors", "c": "s2.safetensors"}})",
       {"'b'", "s1.safetensors", "s2.safetensors", "both"}},
      {"missing_file", R"({"weight_map": {"a": "s3.safetensors"}})", {"s3.safetensors"}},
      {"path_escape", R"({"weight_map": {"a": "../s1.safetensors"}})", {"'a'", "not a file name"}},
      {"no_weight_map", R"({"metadata": {}})", {index, "weight_map"}},
      {"not_string", R"({"weight_map": {"a": 1}})", {index, "'a'", "not a string"}},
      {"empty", R"({"weight_map": {}})", {index, "empty"}},
      {"invalid_json", R"({"weight_map": )", {index, "not valid JSON"}},
      {"duplicate",
       R"({"weight_map": {"a": "s1.safetensors", "a": "s1.safetensors"}})",
       {index, "'a'", "more than once"}},
  };
  for (const Bad& bad : bads) {
    mlxn::test::write_text(index, bad.text);
    const auto message = mlxn::test::error_of([&] { (void)SafetensorsModel::open_dir(d); });
    EXPECT_TRUE(message.starts_with("[safetensors]")) << bad.label << ": " << message;
    for (const std::string& part : bad.parts) {
      EXPECT_NE(message.find(part), std::string::npos)
          << bad.label << ": \"" << message << "\" lacks \"" << part << "\"";
    }
  }
}

}  // namespace
