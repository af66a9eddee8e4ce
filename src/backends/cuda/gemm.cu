#include "backends/cuda/gemm.h"

#include <algorithm>

#include "backends/cuda/cuda_check.h"

namespace tandem::cuda {
namespace {

// 128 MiB of f16 per slice of 8-bit weights: the 8B shape's down projection
// (4096 x 14336) in one GEMM, gate/up in two (a slice of 2,340 rows made
// cuBLAS pick a split-K kernel at a third of the speed).
constexpr int64_t kDequantSliceElems = int64_t{64} << 20;
constexpr size_t kWorkspaceBytes = size_t{32} << 20;

}  // namespace

Gemm::Gemm(cudaStream_t stream) : stream_(stream) {
  TANDEM_CUBLAS_CHECK(cublasCreate(&handle_));
  TANDEM_CUBLAS_CHECK(cublasSetStream(handle_, stream_));
  workspace_.resize(kWorkspaceBytes);
  TANDEM_CUBLAS_CHECK(cublasSetWorkspace(handle_, workspace_.get(), kWorkspaceBytes));
}

Gemm::~Gemm() {
  if (handle_) cublasDestroy(handle_);
}

void Gemm::run(const DeviceMatrix& w, const float* x, int64_t n_tokens, float* y, int64_t ldy, bool accumulate) {
  if (n_tokens == 0) return;
  const float alpha = 1.0f, beta = accumulate ? 1.0f : 0.0f;
  const int m = static_cast<int>(w.rows), n = static_cast<int>(n_tokens), k = static_cast<int>(w.cols);
  const int ldc = static_cast<int>(ldy);
  // Column-major view: W^T is [cols, rows] with lda = cols; x^T is [cols, n]; y^T is [rows, n].
  if (w.format == WeightFormat::F32) {
    TANDEM_CUBLAS_CHECK(cublasGemmEx(handle_, CUBLAS_OP_T, CUBLAS_OP_N, m, n, k, &alpha, w.data, CUDA_R_32F, k, x,
                                     CUDA_R_32F, k, &beta, y, CUDA_R_32F, ldc, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    return;
  }
  const DType low = input_type(w.format);
  reserve_input(n_tokens * w.cols);
  convert_f32(x, n_tokens * w.cols, low, x_low_.get(), stream_);
  run_converted(w, x_low_.get(), n_tokens, y, ldy, accumulate);
}

bool Gemm::reserve_input(int64_t n_elements) {
  const size_t bytes = static_cast<size_t>(n_elements) * 2;
  if (bytes <= x_low_.bytes()) return false;
  x_low_.resize(bytes);
  return true;
}

DType Gemm::input_type(WeightFormat format) {
  if (format == WeightFormat::F32) return DType::F32;
  return format == WeightFormat::BF16 ? DType::BF16 : DType::F16;
}

void Gemm::run_converted(const DeviceMatrix& w, const void* x_low, int64_t n_tokens, float* y, int64_t ldy,
                         bool accumulate) {
  check(w.format != WeightFormat::F32, "internal: f32 weights take f32 input");
  if (n_tokens == 0) return;
  const float alpha = 1.0f, beta = accumulate ? 1.0f : 0.0f;
  const int m = static_cast<int>(w.rows), n = static_cast<int>(n_tokens), k = static_cast<int>(w.cols);
  const int ldc = static_cast<int>(ldy);
  const cudaDataType_t low_type = input_type(w.format) == DType::BF16 ? CUDA_R_16BF : CUDA_R_16F;
  if (w.format == WeightFormat::F16 || w.format == WeightFormat::BF16) {
    TANDEM_CUBLAS_CHECK(cublasGemmEx(handle_, CUBLAS_OP_T, CUBLAS_OP_N, m, n, k, &alpha, w.data, low_type, k, x_low,
                                     low_type, k, &beta, y, CUDA_R_32F, ldc, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    return;
  }
  // 8-bit weights: dequantized to f16 a slice of rows at a time.
  const int64_t slice_rows = std::max<int64_t>(1, std::min<int64_t>(w.rows, kDequantSliceElems / w.cols));
  w_f16_.resize(static_cast<size_t>(slice_rows * w.cols) * sizeof(__half));
  for (int64_t r0 = 0; r0 < w.rows; r0 += slice_rows) {
    const int64_t rows = std::min(slice_rows, w.rows - r0);
    dequantize_to_f16(w, r0, rows, w_f16_.get<__half>(), stream_);
    TANDEM_CUBLAS_CHECK(cublasGemmEx(handle_, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(rows), n, k, &alpha,
                                     w_f16_.get(), CUDA_R_16F, k, x_low, CUDA_R_16F, k, &beta, y + r0, CUDA_R_32F, ldc,
                                     CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  }
}

}  // namespace tandem::cuda
