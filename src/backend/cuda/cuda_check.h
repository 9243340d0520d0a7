// Checked CUDA runtime and cuBLAS calls: a failure throws mlxn::Error naming the call, its
// result, and the file and line.
#pragma once

#include <cublas_api.h>
#include <cuda_runtime_api.h>

#include <string>

#include "mlxn/core/error.h"

namespace mlxn::cuda_check {

[[noreturn]] void throw_cuda_error(cudaError_t result, const char* call, const char* file,
                                   int line);
[[noreturn]] void throw_cublas_error(cublasStatus_t result, const char* call, const char* file,
                                     int line);

}  // namespace mlxn::cuda_check

#define MLXN_CUDA_CHECK(call)                                                            \
  do {                                                                                   \
    const cudaError_t mlxn_cuda_result = (call);                                         \
    if (mlxn_cuda_result != cudaSuccess)                                                 \
      ::mlxn::cuda_check::throw_cuda_error(mlxn_cuda_result, #call, __FILE__, __LINE__); \
  } while (0)

#define MLXN_CUBLAS_CHECK(call)                                                              \
  do {                                                                                       \
    const cublasStatus_t mlxn_cublas_result = (call);                                        \
    if (mlxn_cublas_result != CUBLAS_STATUS_SUCCESS)                                         \
      ::mlxn::cuda_check::throw_cublas_error(mlxn_cublas_result, #call, __FILE__, __LINE__); \
  } while (0)

// After a kernel launch: launch-configuration errors surface here, not at the next sync.
#define MLXN_CUDA_CHECK_LAUNCH() MLXN_CUDA_CHECK(cudaGetLastError())
