// Greedy sampling on the GPU: the argmax of each logits row, so that a
// greedy step returns token ids instead of its logits rows.
#include <cfloat>
#include <climits>

#include "backends/cuda/cuda_check.h"
#include "backends/cuda/kernels.h"

namespace tandem::cuda {
namespace {

constexpr int kThreads = 512;

// (value, index) a beats b: a larger value, or an equal one at a lower index.
__device__ __forceinline__ bool beats(float av, int ai, float bv, int bi) {
  return av > bv || (av == bv && ai < bi);
}

// One block per row. NaN never wins (it counts as -inf); a row with nothing
// above -inf gives -1.
__global__ void __launch_bounds__(kThreads) argmax_rows_kernel(const float* __restrict__ logits, int64_t n_cols,
                                                                int64_t ld, int32_t* __restrict__ out) {
  __shared__ float warp_value[kThreads / 32];
  __shared__ int warp_index[kThreads / 32];
  const float* row = logits + blockIdx.x * ld;
  float best = -INFINITY;
  int best_i = INT_MAX;
  for (int64_t c = threadIdx.x; c < n_cols; c += kThreads) {
    const float v = row[c];
    if (v > best) {  // false for NaN; the first of equal values stays
      best = v;
      best_i = static_cast<int>(c);
    }
  }
#pragma unroll
  for (int off = 16; off > 0; off /= 2) {
    const float v = __shfl_xor_sync(0xffffffffu, best, off);
    const int i = __shfl_xor_sync(0xffffffffu, best_i, off);
    if (beats(v, i, best, best_i)) {
      best = v;
      best_i = i;
    }
  }
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  if (lane == 0) {
    warp_value[warp] = best;
    warp_index[warp] = best_i;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 1; w < kThreads / 32; ++w)
      if (beats(warp_value[w], warp_index[w], best, best_i)) {
        best = warp_value[w];
        best_i = warp_index[w];
      }
    out[blockIdx.x] = best > -INFINITY ? best_i : -1;
  }
}

}  // namespace

void argmax_rows(const float* logits, int64_t n_rows, int64_t n_cols, int64_t ld, int32_t* out, cudaStream_t stream) {
  check(n_cols > 0 && n_cols <= INT_MAX && ld >= n_cols, "internal: argmax_rows over an empty or too wide row");
  if (n_rows == 0) return;
  argmax_rows_kernel<<<static_cast<unsigned>(n_rows), kThreads, 0, stream>>>(logits, n_cols, ld, out);
  TANDEM_CUDA_CHECK(cudaGetLastError());
}

}  // namespace tandem::cuda
