// Portable kernel variant: plain C++ that any CPU runs. Each weight row is
// converted to f32 once and dotted with every token, 8 partial sums per dot.
#include <algorithm>
#include <cmath>
#include <vector>

#include "backends/cpu/kernel_set.h"

namespace tandem::cpu {

namespace {

float dot_f32(const float* a, const float* b, int64_t n) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t c = 0;
  for (; c + 8 <= n; c += 8) {
    for (int j = 0; j < 8; ++j) acc[j] += a[c + j] * b[c + j];
  }
  float tail = 0.0f;
  for (; c < n; ++c) tail += a[c] * b[c];
  return ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail;
}

void generic_matmul_rows(const MatmulArgs& a, int64_t r0, int64_t r1) {
  const int64_t row_bytes = dtype_row_bytes(a.dtype, a.cols);
  std::vector<float> row(static_cast<size_t>(a.cols));  // one weight row as f32
  for (int64_t r = r0; r < r1; ++r) {
    const float* wr;
    if (a.dtype == DType::F32) {
      wr = static_cast<const float*>(a.w) + r * a.cols;
    } else {
      dequantize_row(a.dtype, static_cast<const char*>(a.w) + r * row_bytes, row.data(), a.cols);
      wr = row.data();
    }
    for (int64_t t = 0; t < a.n_tokens; ++t) a.y[t * a.rows + r] = dot_f32(wr, a.x + t * a.cols, a.cols);
  }
}

void generic_quantize_activations(const float* x, int64_t n, int8_t* xq, float* xd) {
  for (int64_t b = 0; b < n / kQ8_0BlockElems; ++b) {
    const float* xb = x + b * kQ8_0BlockElems;
    float amax = 0.0f;
    for (int j = 0; j < kQ8_0BlockElems; ++j) amax = std::max(amax, std::fabs(xb[j]));
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    xd[b] = d;
    for (int j = 0; j < kQ8_0BlockElems; ++j) {
      xq[b * kQ8_0BlockElems + j] = static_cast<int8_t>(std::nearbyint(xb[j] * id));
    }
  }
}

float generic_sum_squares(const float* x, int64_t n) { return dot_f32(x, x, n); }

void generic_axpy(float alpha, const float* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += alpha * x[i];
}

void generic_scale_mul(float alpha, const float* x, const float* w, float* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = alpha * x[i] * w[i];
}

void generic_silu_mul(float* gate, const float* up, int64_t n) {
  for (int64_t i = 0; i < n; ++i) gate[i] = gate[i] / (1.0f + std::exp(-gate[i])) * up[i];
}

void generic_dot_rows(const float* q, const float* const* rows, int64_t n_rows, int64_t n, float* out) {
  for (int64_t i = 0; i < n_rows; ++i) out[i] = dot_f32(q, rows[i], n);
}

void generic_weighted_sum(const float* w, const float* const* rows, int64_t n_rows, int64_t n, float* out) {
  for (int64_t c = 0; c < n; ++c) out[c] = 0.0f;
  for (int64_t i = 0; i < n_rows; ++i)
    for (int64_t c = 0; c < n; ++c) out[c] += w[i] * rows[i][c];
}

void generic_dot_rows_group(const float* q, int64_t g, const float* const* rows, int64_t n_rows, int64_t n,
                            float* out) {
  for (int64_t j = 0; j < g; ++j) generic_dot_rows(q + j * n, rows, n_rows, n, out + j * n_rows);
}

void generic_weighted_sum_group(const float* w, int64_t g, const float* const* rows, int64_t n_rows, int64_t n,
                                float* out) {
  for (int64_t j = 0; j < g; ++j) generic_weighted_sum(w + j * n_rows, rows, n_rows, n, out + j * n);
}

float generic_exp_sum(float* x, float shift, int64_t n) {
  float sum = 0.0f;
  for (int64_t i = 0; i < n; ++i) {
    x[i] = std::exp(x[i] - shift);
    sum += x[i];
  }
  return sum;
}

}  // namespace

// gemv_max_tokens = 0: the generic variant never uses quantized activations.
const KernelSet kGenericKernels{KernelVariant::Generic, "generic", 0, &generic_matmul_rows,
                                &generic_quantize_activations, &dot_f32, &generic_axpy,
                                &generic_sum_squares, &generic_scale_mul, &generic_silu_mul,
                                &generic_exp_sum, &generic_dot_rows, &generic_weighted_sum,
                                &generic_dot_rows_group, &generic_weighted_sum_group};

}  // namespace tandem::cpu
