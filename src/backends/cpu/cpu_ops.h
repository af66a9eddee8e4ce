// Small vector operations for the CPU engine (norms, activations, attention
// inner loops), using the best kernel variant of this CPU (dot, axpy,
// rmsnorm, silu_mul, exp_sum and softmax are SIMD, the last three with a
// polynomial e^x: see KernelSet::silu_mul). All in f32.
#pragma once

#include <cstdint>

#include "common/dtype.h"

namespace tandem::cpu {

// sum_i a[i] * b[i] (f32 accumulation)
float dot(const float* a, const float* b, int64_t n);
// y[i] += alpha * x[i]
void axpy(float alpha, const float* x, float* y, int64_t n);
// out[i] = x[i] / sqrt(mean(x^2) + eps) * weight[i]; out may alias x.
//   x, weight, out: [n]
void rmsnorm(const float* x, const float* weight, float eps, float* out, int64_t n);
// gate[i] = silu(gate[i]) * up[i], silu(v) = v / (1 + exp(-v)).  gate, up: [n]
void silu_mul(float* gate, const float* up, int64_t n);
// x[i] = exp(x[i] - shift); returns their sum. x: [n]
float exp_sum(float* x, float shift, int64_t n);
// out[i] = q . rows[i] for i < n_rows (KernelSet::dot_rows).  q, rows[i]: [n]; out: [n_rows]
void dot_rows(const float* q, const float* const* rows, int64_t n_rows, int64_t n, float* out);
// out = sum_i w[i] * rows[i] (KernelSet::weighted_sum).  w: [n_rows]; rows[i], out: [n]
void weighted_sum(const float* w, const float* const* rows, int64_t n_rows, int64_t n, float* out);
// dot_rows and weighted_sum for g queries sharing the rows (the bits each
// gets alone; KernelSet::dot_rows_group / weighted_sum_group).
//   dot_rows_group: q: [g, n], out: [g, n_rows]; weighted_sum_group: w: [g, n_rows], out: [g, n]
void dot_rows_group(const float* q, int64_t g, const float* const* rows, int64_t n_rows, int64_t n, float* out);
void weighted_sum_group(const float* w, int64_t g, const float* const* rows, int64_t n_rows, int64_t n, float* out);
// In place, numerically stable (max subtracted). x: [n], n >= 1.
void softmax(float* x, int64_t n);
// Converts one row of `n` values of dtype (F32, F16, BF16, Q8_0) to f32, as
// dequantize_row does (same results); throws tandem::Error on other dtypes.
void convert_row(DType dtype, const void* src, float* dst, int64_t n);

}  // namespace tandem::cpu
