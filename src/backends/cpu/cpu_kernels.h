// CPU kernels behind one small interface. Every kernel has a scalar reference
// (the *_ref functions) and tests compare the fast paths against it. The fast
// paths are chosen at run time from the CPU's features (AVX2+FMA+F16C,
// AVX-512 with BF16/VNNI); nothing is assumed at build time.
#pragma once

#include <cstdint>
#include <span>
#include <string>

#include "common/dtype.h"
#include "common/thread_pool.h"

namespace tandem::cpu {

struct CpuFeatures {
  bool avx2 = false;    // with FMA and F16C
  bool avx512 = false;  // F, BW, VL, DQ
  bool avx512_bf16 = false;
  bool avx512_vnni = false;
  bool amx = false;
  std::string describe() const;  // e.g. "avx2 avx512 avx512_bf16 avx512_vnni"
};
CpuFeatures detect_cpu_features();

// How a matrix's bytes are ordered.
enum class WeightLayout {
  RowMajor,   // rows contiguous, as in GGUF and safetensors
  Q8_0Rows8,  // Q8_0 regrouped by 8 rows for the SIMD decode kernels (q8_0_rows8.h)
};

// A weight matrix [rows, cols], as used by y = W x with rows == n_out and
// cols == n_in. Supported dtypes: F32, F16, BF16, Q8_0 (cols a multiple of
// 32 for Q8_0), row-major; Q8_0 also in the rows8 layout, where the kernel
// set supports it (KernelSet::q8_0_rows8).
struct WeightMatrix {
  DType dtype = DType::F32;
  int64_t rows = 0;
  int64_t cols = 0;
  const void* data = nullptr;
  WeightLayout layout = WeightLayout::RowMajor;
};

// Which kernel computes a matmul. The two paths round differently (the Q8_0
// GEMV also quantizes the activations), but each is batch-invariant: a
// token's result is the same whatever other tokens share the call. The
// engine routes prompt tokens to Gemm and generated tokens to Gemv, so an
// answer never depends on what else was in the batch.
enum class MatmulPath {
  Auto,  // GEMV for up to 4 tokens, GEMM above: fastest, not batch-invariant
  Gemv,  // decode kernels, in groups of up to 4 tokens
  Gemm,  // blocked GEMM, for any token count
};

// y[t, r] = sum_c W[r, c] * x[t, c]
//   x: [n_tokens, w.cols] f32, y: [n_tokens, w.rows] f32 (overwritten).
// Uses every thread of `pool`.
// PRECONDITIONS: x and y do not overlap.
void matmul(const WeightMatrix& w, const float* x, int64_t n_tokens, float* y, ThreadPool& pool,
            MatmulPath path = MatmulPath::Auto);
// One product of a matmul group: y = W x, y: [n_tokens, w->rows] f32.
struct MatmulProduct {
  const WeightMatrix* w = nullptr;
  float* y = nullptr;
};
// Several matmuls of one input x: [n_tokens, cols], every matrix with those
// cols (e.g. q, k and v after the same norm). The rows of all matrices are
// dealt out to the threads in one pass of the pool, and a Q8_0 input is
// quantized once; each y gets exactly what matmul(*w, x, n_tokens, y, pool,
// path) would give it.
// PRECONDITIONS: x overlaps no y, and the ys do not overlap each other.
void matmul_group(std::span<const MatmulProduct> products, const float* x, int64_t n_tokens, ThreadPool& pool,
                  MatmulPath path = MatmulPath::Auto);
// Scalar reference of matmul, single-threaded, f64 accumulation.
void matmul_ref(const WeightMatrix& w, const float* x, int64_t n_tokens, float* y);

// Converts one row of `n` values of `dtype` (F32, F16, BF16, Q8_0) to f32.
void dequantize_row(DType dtype, const void* src, float* dst, int64_t n);
// Quantizes `n` f32 values (n a multiple of 32) to Q8_0 blocks, as GGUF
// writers do: d = max|x| / 127, q = round(x / d).
void quantize_row_q8_0(const float* src, BlockQ8_0* dst, int64_t n);

}  // namespace tandem::cpu
