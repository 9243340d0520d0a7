// Checked CUDA runtime and cuBLAS calls name the call, the result and the place. Needs the CUDA
// backend (built), not a GPU: the status-to-text functions work without a device.
#include <gtest/gtest.h>

#include <string>

#include "backend/cuda/cuda_check.h"

namespace {

std::string message_of(void (*f)()) {
  try {
    f();
  } catch (const mlxn::Error& e) {
    return e.what();
  }
  return "no error";
}

}  // namespace

TEST(CudaCheck, FailedRuntimeCallIsAnErrorNamingTheCall) {
  const std::string m = message_of([] { MLXN_CUDA_CHECK(cudaErrorInvalidValue); });
  EXPECT_EQ(m.rfind("[cuda] cudaErrorInvalidValue failed: cudaErrorInvalidValue (", 0), 0u) << m;
  EXPECT_NE(m.find("cuda_check_test.cpp:"), std::string::npos) << m;
  EXPECT_NO_THROW(MLXN_CUDA_CHECK(cudaSuccess));
}

TEST(CudaCheck, FailedCublasCallIsAnErrorNamingTheStatus) {
  const std::string m = message_of([] { MLXN_CUBLAS_CHECK(CUBLAS_STATUS_INVALID_VALUE); });
  EXPECT_EQ(m.rfind("[cublas] CUBLAS_STATUS_INVALID_VALUE failed: CUBLAS_STATUS_INVALID_VALUE", 0),
            0u)
      << m;
  EXPECT_NE(m.find("cuda_check_test.cpp:"), std::string::npos) << m;
  EXPECT_NO_THROW(MLXN_CUBLAS_CHECK(CUBLAS_STATUS_SUCCESS));
}
