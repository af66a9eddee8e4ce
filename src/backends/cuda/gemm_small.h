// A 16-bit GEMM of our own for decode batches (up to 64 tokens) on tensor
// cores: the weights stream once, straight into mma fragments (gemm_small.cu).
// cuda::Gemm times it against cuBLAS at load and takes it where it wins.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "backends/cuda/kernels.h"

namespace tandem::cuda {

constexpr int64_t kSmallGemmMaxTokens = 64;

// How a product is cut: row tiles of 8 warps x rows_per_warp rows, columns
// in `splits` slices of chunks_per_slice chunks of 128.
struct SmallGemmPlan {
  int rows_per_warp = 32;  // 16 or 32
  int64_t row_tiles = 0;
  int splits = 1;
  int64_t chunks_per_slice = 0;
  int64_t partial_floats = 0;  // workspace small_gemm needs (0 with one slice)
};

// Whether small_gemm takes w at n_tokens: F16/BF16 weights, 16-byte aligned,
// cols a multiple of 128, 1 <= n_tokens <= kSmallGemmMaxTokens.
bool small_gemm_takes(const DeviceMatrix& w, int64_t n_tokens);

// splits <= 0: enough slices for about two blocks a SM (each of at least 4
// chunks of 128 columns). The counters small_gemm needs: row_tiles ints.
SmallGemmPlan small_gemm_plan(int64_t rows, int64_t cols, int64_t n_tokens, int rows_per_warp, int sm_count,
                              int splits = 0);

// y[t, r] = (accumulate ? y[t, r] : 0) + sum_c W[r, c] * x[t, c], t < n_tokens,
// with f32 accumulation.
//   x: [n_tokens, w.cols] in w's type (F16 or BF16), 16-byte aligned rows;
//   y: [n_tokens, ldy] f32.
//   partials: plan.partial_floats f32; counters: plan.row_tiles ints, zero
//   before the first launch (each launch leaves them zero). Unused with one
//   slice. A launch must finish before the next one that shares them
//   starts (stream order does it).
// The sums' order depends on the plan, not on timing: deterministic.
// CPU twin: cpu::matmul_ref (with x rounded to w's type).
void small_gemm(const DeviceMatrix& w, const void* x, int64_t n_tokens, float* y, int64_t ldy, bool accumulate,
                const SmallGemmPlan& plan, float* partials, int* counters, cudaStream_t stream);

}  // namespace tandem::cuda
