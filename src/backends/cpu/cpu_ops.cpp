#include "backends/cpu/cpu_ops.h"

#include <algorithm>
#include <cmath>

#include "backends/cpu/kernel_set.h"

namespace tandem::cpu {

float dot(const float* a, const float* b, int64_t n) { return best_kernel_set().dot(a, b, n); }

void axpy(float alpha, const float* x, float* y, int64_t n) { best_kernel_set().axpy(alpha, x, y, n); }

void rmsnorm(const float* x, const float* weight, float eps, float* out, int64_t n) {
  if (n <= 0) return;
  const KernelSet& ks = best_kernel_set();
  const float ms = ks.sum_squares(x, n) / static_cast<float>(n);
  ks.scale_mul(1.0f / std::sqrt(ms + eps), x, weight, out, n);
}

void silu_mul(float* gate, const float* up, int64_t n) { best_kernel_set().silu_mul(gate, up, n); }

float exp_sum(float* x, float shift, int64_t n) { return best_kernel_set().exp_sum(x, shift, n); }

void dot_rows(const float* q, const float* const* rows, int64_t n_rows, int64_t n, float* out) {
  best_kernel_set().dot_rows(q, rows, n_rows, n, out);
}

void weighted_sum(const float* w, const float* const* rows, int64_t n_rows, int64_t n, float* out) {
  best_kernel_set().weighted_sum(w, rows, n_rows, n, out);
}

void dot_rows_group(const float* q, int64_t g, const float* const* rows, int64_t n_rows, int64_t n, float* out) {
  best_kernel_set().dot_rows_group(q, g, rows, n_rows, n, out);
}

void weighted_sum_group(const float* w, int64_t g, const float* const* rows, int64_t n_rows, int64_t n, float* out) {
  best_kernel_set().weighted_sum_group(w, g, rows, n_rows, n, out);
}

void softmax(float* x, int64_t n) {
  if (n <= 0) return;
  const float m = *std::max_element(x, x + n);
  const float sum = exp_sum(x, m, n);
  const float inv = 1.0f / sum;
  for (int64_t i = 0; i < n; ++i) x[i] *= inv;
}

void convert_row(DType dtype, const void* src, float* dst, int64_t n) { dequantize_row(dtype, src, dst, n); }

}  // namespace tandem::cpu
