// mlxn::Error formatting and the device error flag, on the CPU backend.
#include <gtest/gtest.h>

#include <cmath>

#include "support/support.h"

using namespace mlxn;

TEST(Error, MessageStartsWithTheBracketedOp) {
  const Error e("attention", "head_dim 96 unsupported for tq4 (supported: 64,128,256,512)");
  EXPECT_STREQ(e.what(), "[attention] head_dim 96 unsupported for tq4 (supported: 64,128,256,512)");
  EXPECT_EQ(e.op(), "attention");
  EXPECT_THROW(check(false, "x", "y"), Error);
  EXPECT_NO_THROW(check(true, "x", "y"));
}

TEST(DeviceErrors, NonFiniteValueIsRaisedAtSynchronizeWithLabelAndIndex) {
  Stream s(Device::cpu());
  Buffer x = Buffer::empty({4, 250}, DType::bf16, s);
  fill(x, 1.0, s);
  fill(x.select(0, 2).slice(0, 17, 18), INFINITY, s);  // element 2*250+17
  assert_finite(x, "k_cache layer 3", s);              // returns without throwing
  try {
    s.synchronize();
    FAIL() << "the Inf was not reported";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(),
                 "[assert_finite] non-finite value inf at index 517 of k_cache layer 3 on cpu");
  }
  // Reported once, then cleared.
  EXPECT_NO_THROW(s.synchronize());
}

TEST(DeviceErrors, FirstReportWinsAndLaterOnesAreCounted) {
  Stream s(Device::cpu());
  Buffer a = Buffer::empty({10}, DType::f32, s);
  Buffer b = Buffer::empty({10}, DType::f16, s);
  fill(a, std::nan(""), s);
  fill(b, -INFINITY, s);
  assert_finite(a, "a", s);
  assert_finite(b, "b", s);
  try {
    s.synchronize();
    FAIL() << "nothing reported";
  } catch (const Error& e) {
    EXPECT_STREQ(
        e.what(),
        "[assert_finite] non-finite value nan at index 0 of a on cpu (2 reports, first shown)");
  }
}

TEST(DeviceErrors, FiniteDataAndStridedViewsPass) {
  Stream s(Device::cpu());
  Buffer x = test::random_buffer({64, 33}, DType::f32, 5, s);
  fill(x.slice(1, 0, 1), std::nan(""), s);  // column 0 is NaN, the rest finite
  assert_finite(x.slice(1, 1, 33), "columns 1..32", s);
  EXPECT_NO_THROW(s.synchronize());
  assert_finite(x.transpose(0, 1), "transposed", s);
  EXPECT_THROW(s.synchronize(), Error);
}

TEST(DeviceErrors, SitesAreDeduplicated) {
  EXPECT_EQ(register_error_site("op", "subject"), register_error_site("op", "subject"));
  EXPECT_NE(register_error_site("op", "subject"), register_error_site("op", "other"));
}

TEST(DeviceErrors, IntegerBuffersAreRejected) {
  Stream s(Device::cpu());
  Buffer x = Buffer::empty({4}, DType::i32, s);
  EXPECT_THROW(assert_finite(x, "ints", s), Error);
}
