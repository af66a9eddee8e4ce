// Error checks for CUDA runtime and cuBLAS calls: a failed call throws
// tandem::Error naming the call and the driver's reason.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <string>

#include "common/error.h"

namespace tandem::cuda {

inline void check_cuda(cudaError_t status, const char* call) {
  if (status != cudaSuccess)
    throw Error(std::string("CUDA error in ") + call + ": " + cudaGetErrorString(status));
}

inline void check_cublas(cublasStatus_t status, const char* call) {
  if (status != CUBLAS_STATUS_SUCCESS)
    throw Error(std::string("cuBLAS error in ") + call + ": " + cublasGetStatusString(status));
}

}  // namespace tandem::cuda

#define TANDEM_CUDA_CHECK(call) ::tandem::cuda::check_cuda((call), #call)
#define TANDEM_CUBLAS_CHECK(call) ::tandem::cuda::check_cublas((call), #call)
