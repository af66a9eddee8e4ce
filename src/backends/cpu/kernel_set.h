// Run-time selection of the CPU kernel variant. Each variant is the same set
// of kernels compiled with different instruction-set flags (one source file
// per variant); detect_cpu_features() decides which ones this CPU can run.
// Tests select variants explicitly through kernel_set(); the engine calls
// matmul() (cpu_kernels.h), which uses best_kernel_set().
#pragma once

#include <cstdint>
#include <vector>

#include "backends/cpu/cpu_kernels.h"

namespace tandem::cpu {

enum class KernelVariant {
  Generic,  // portable C++, no SIMD flags
  Avx2,     // AVX2 + FMA + F16C
  Avx512,   // AVX-512 F/BW/VL/DQ + VNNI
};

// Arguments of one matmul, prepared by the driver (matmul.cpp) and shared
// read-only by every thread.
struct MatmulArgs {
  DType dtype = DType::F32;
  WeightLayout layout = WeightLayout::RowMajor;
  int64_t rows = 0;            // n_out
  int64_t cols = 0;            // n_in
  const void* w = nullptr;     // [rows, cols] in `dtype`
  const float* x = nullptr;    // [n_tokens, cols]
  // Q8_0 activations, for the Q8_0 GEMV path and the rows8 layout (else null): x quantized per
  // block of 32 to int8 with an f32 scale: x[t, c] ~= xq[t, c] * xd[t, c / 32].
  const int8_t* xq = nullptr;  // [n_tokens, cols]
  const float* xd = nullptr;   // [n_tokens, cols / 32]
  int64_t n_tokens = 0;
  float* y = nullptr;          // [n_tokens, rows]
  bool force_gemm = false;     // GEMM even for n_tokens <= gemv_max_tokens (MatmulPath::Gemm)
};

struct KernelSet {
  KernelVariant variant;
  const char* name;
  // n_tokens <= gemv_max_tokens runs the memory-bound GEMV path; for Q8_0 the
  // driver then quantizes the activations (MatmulArgs::xq/xd) first.
  int64_t gemv_max_tokens;
  // Computes y[t, r] for every token and r in [r0, r1).
  // PRECONDITIONS: 0 <= r0 <= r1 <= rows; r0 a multiple of 4 (tile height).
  void (*matmul_rows)(const MatmulArgs& args, int64_t r0, int64_t r1);
  // x: [n] -> xq: [n], xd: [n / 32]; xd = max|x| / 127 per block, xq =
  // round-to-nearest-even(x / xd). PRECONDITIONS: n a multiple of 32.
  void (*quantize_activations)(const float* x, int64_t n, int8_t* xq, float* xd);
  // Vector helpers behind cpu_ops.h (any n >= 0; f32 accumulation).
  float (*dot)(const float* a, const float* b, int64_t n);
  void (*axpy)(float alpha, const float* x, float* y, int64_t n);  // y += alpha * x
  float (*sum_squares)(const float* x, int64_t n);
  void (*scale_mul)(float alpha, const float* x, const float* w, float* out, int64_t n);  // out = alpha * x * w
  // gate[i] = silu(gate[i]) * up[i] = gate[i] / (1 + e^-gate[i]) * up[i].
  // The SIMD variants' e^x is a polynomial within 2 ulp of expf for finite
  // x in [-87.3, 88], saturating outside (so silu(-inf) is -inf, not NaN);
  // NaN stays NaN.
  void (*silu_mul)(float* gate, const float* up, int64_t n);
  // x[i] = e^(x[i] - shift); returns the sum of the new x (attention's
  // softmax numerators; shift is the row's maximum). Same e^x as silu_mul.
  float (*exp_sum)(float* x, float shift, int64_t n);
  // Attention's two loops over cached positions. dot_rows: out[i] = q .
  // rows[i], i < n_rows, each row's sum in an order that depends on n only
  // (not on n_rows or i). weighted_sum: out = sum over i of w[i] * rows[i],
  // i in order: the bits of out = 0 then axpy(w[i], rows[i], out) for each i.
  // q, rows[i], out: [n].
  void (*dot_rows)(const float* q, const float* const* rows, int64_t n_rows, int64_t n, float* out);
  void (*weighted_sum)(const float* w, const float* const* rows, int64_t n_rows, int64_t n, float* out);
  // The same for the g query heads that share a KV head, reading each
  // cached row once for several of them; every query gets the bits that
  // dot_rows / weighted_sum give it alone.
  //   dot_rows_group: q: [g, n], out: [g, n_rows].
  //   weighted_sum_group: w: [g, n_rows], out: [g, n].
  void (*dot_rows_group)(const float* q, int64_t g, const float* const* rows, int64_t n_rows, int64_t n, float* out);
  void (*weighted_sum_group)(const float* w, int64_t g, const float* const* rows, int64_t n_rows, int64_t n,
                             float* out);
  // Computes with Q8_0 matrices in the rows8 layout (q8_0_rows8.h); their
  // row ranges are then multiples of 8.
  bool q8_0_rows8 = false;
  // ... and the engine loads Q8_0 that way for these kernels (measured:
  // AVX2 decode on a Zen 3 VM about 8% faster, prompts the same; AVX-512
  // decode on a Xeon 10-20% slower than its row-major VNNI kernel).
  bool q8_0_rows8_preferred = false;
};

// The variants this build contains and this CPU (and OS) can run, best last.
std::vector<KernelVariant> supported_kernel_variants(const CpuFeatures& features);
// Throws tandem::Error when `variant` is not compiled into this build.
const KernelSet& kernel_set(KernelVariant variant);
// The best supported variant, detected once per process (the result is an
// immutable constant after the first call).
const KernelSet& best_kernel_set();

// matmul() with an explicit kernel set (tests, benchmarks).
// PRECONDITIONS: `kernels` is supported on this CPU (see supported_kernel_variants).
void matmul(const KernelSet& kernels, const WeightMatrix& w, const float* x, int64_t n_tokens,
            float* y, ThreadPool& pool, MatmulPath path = MatmulPath::Auto);
// matmul_group() with an explicit kernel set.
void matmul_group(const KernelSet& kernels, std::span<const MatmulProduct> products, const float* x,
                  int64_t n_tokens, ThreadPool& pool, MatmulPath path = MatmulPath::Auto);

// Variant tables, defined in kernels_<variant>.cpp.
extern const KernelSet kGenericKernels;
#if defined(TANDEM_CPU_X86)
extern const KernelSet kAvx2Kernels;
extern const KernelSet kAvx512Kernels;
#endif

}  // namespace tandem::cpu
