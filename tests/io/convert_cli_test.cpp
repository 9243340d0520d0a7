// `mlxn convert`: argument errors from the parser, option values turned into library options,
// and library errors surfacing from run_convert.
#include <gtest/gtest.h>

#include <CLI/CLI.hpp>

#include "cli/cli_test_util.h"
#include "convert_command.h"
#include "io/io_test_util.h"
#include "support/support.h"

namespace {

using mlxn::test::throws_error;

// Parses `line` (without the program name) into fresh args.
mlxn::cli::ConvertArgs parse(const std::string& line) {
  return mlxn::test::parse_command<mlxn::cli::ConvertArgs>(mlxn::cli::add_convert_command, line);
}

TEST(ConvertCli, ParsesOptions) {
  const auto a = parse(
      "convert in out --bits 3 --group-size 32 --dtype bf16 --recipe mixed_3_6 "
      "--override lm_head=6 --override 'layers.*.mlp.down_proj=8:128' --force");
  EXPECT_EQ(a.hf_dir, "in");
  EXPECT_EQ(a.out_dir, "out");
  EXPECT_EQ(a.bits, 3);
  EXPECT_EQ(a.overrides.size(), 2u);
  const mlxn::io::ConvertOptions o = mlxn::cli::convert_options(a);
  EXPECT_TRUE(o.quantize);  // implied
  EXPECT_EQ(o.bits, 3);
  EXPECT_EQ(o.group_size, 32);
  EXPECT_EQ(o.dtype, mlxn::DType::bf16);
  EXPECT_EQ(o.recipe, "mixed_3_6");
  ASSERT_EQ(o.overrides.size(), 2u);
  EXPECT_EQ(o.overrides[1].pattern, "layers.*.mlp.down_proj");
  EXPECT_EQ(o.overrides[1].group_size, 128);
  EXPECT_TRUE(o.force);

  // Options before the positionals: --override takes one value per occurrence.
  const auto before = parse("convert --override lm_head=6 --override x=none in out");
  EXPECT_EQ(before.overrides, (std::vector<std::string>{"lm_head=6", "x=none"}));
  EXPECT_EQ(before.hf_dir, "in");
  EXPECT_EQ(before.out_dir, "out");

  const mlxn::io::ConvertOptions plain = mlxn::cli::convert_options(parse("convert in out"));
  EXPECT_FALSE(plain.quantize);
  EXPECT_FALSE(plain.dtype.has_value());
  const mlxn::io::ConvertOptions q = mlxn::cli::convert_options(parse("convert in out -q"));
  EXPECT_TRUE(q.quantize);
  EXPECT_EQ(q.bits, 4);
  EXPECT_EQ(q.group_size, 64);
  EXPECT_EQ(mlxn::cli::convert_options(parse("convert a b --dtype float16")).dtype,
            mlxn::DType::f16);
}

TEST(ConvertCli, ArgumentErrors) {
  for (const char* bad : {"convert", "convert in", "convert in out --bits 7",
                          "convert in out --bits x", "convert in out --group-size 48",
                          "convert in out --dtype int8", "convert in out --recipe mixed_9_9",
                          "convert in out --frobnicate", "convert in out extra"}) {
    EXPECT_THROW(parse(bad), CLI::ParseError) << bad;
  }
  // Override syntax is checked when the options are built.
  EXPECT_TRUE(throws_error(
      [] { (void)mlxn::cli::convert_options(parse("convert in out --override lm_head")); },
      "[convert]", {"'lm_head'"}));
  EXPECT_TRUE(throws_error(
      [] { (void)mlxn::cli::convert_options(parse("convert in out --override lm_head=5:16")); },
      "[convert]", {"group size 16"}));
}

TEST(ConvertCli, LibraryErrorsPropagate) {
  mlxn::test::TestDir dir;
  mlxn::cli::ConvertArgs args;
  args.hf_dir = dir.file("missing");
  args.out_dir = dir.file("out");
  EXPECT_TRUE(throws_error([&] { (void)mlxn::cli::run_convert(args); }, "[convert]",
                           {"missing", "not a directory"}));
}

}  // namespace
