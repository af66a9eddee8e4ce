// Greedy sampling on the GPU: the argmax of each logits row, so that a
// greedy step returns token ids instead of its logits rows.
#include <cfloat>
#include <climits>
#include <cstdint>

#include "backends/cuda/argmax_key.h"
#include "backends/cuda/cuda_check.h"
#include "backends/cuda/kernels.h"

namespace tandem::cuda {
namespace {

constexpr int kThreads = 512;
constexpr int kPerThread = 8;                              // columns a thread reads, loaded together
constexpr int64_t kBlockColumns = kThreads * kPerThread;  // a block's slice of a row

// (value, index) a beats b: a larger value, or an equal one at a lower index.
__device__ __forceinline__ bool beats(float av, int ai, float bv, int bi) {
  return av > bv || (av == bv && ai < bi);
}

// Blocks (row, slice of kBlockColumns columns). Each finds its slice's best
// (NaN never wins: it counts as -inf) and folds it into the row's key with
// atomicMax; the row's last block to finish turns the key into the column,
// -1 when nothing was above -inf, and clears the key and the count.
__global__ void __launch_bounds__(kThreads) argmax_rows_kernel(const float* __restrict__ logits, int64_t n_cols,
                                                                int64_t ld, int32_t* __restrict__ out,
                                                                ArgmaxWorkspace work) {
  __shared__ float warp_value[kThreads / 32];
  __shared__ int warp_index[kThreads / 32];
  const int64_t row_index = blockIdx.x;
  const float* row = logits + row_index * ld;
  const int64_t begin = static_cast<int64_t>(blockIdx.y) * kBlockColumns;
  float v[kPerThread];
#pragma unroll
  for (int k = 0; k < kPerThread; ++k) {
    const int64_t c = begin + k * kThreads + threadIdx.x;
    v[k] = c < n_cols ? row[c] : -INFINITY;
  }
  float best = -INFINITY;
  int best_i = INT_MAX;
#pragma unroll
  for (int k = 0; k < kPerThread; ++k) {
    if (v[k] > best) {  // false for NaN; columns rise with k, so the first of equal values stays
      best = v[k];
      best_i = static_cast<int>(begin + k * kThreads + threadIdx.x);
    }
  }
#pragma unroll
  for (int off = 16; off > 0; off /= 2) {
    const float ov = __shfl_xor_sync(0xffffffffu, best, off);
    const int oi = __shfl_xor_sync(0xffffffffu, best_i, off);
    if (beats(ov, oi, best, best_i)) {
      best = ov;
      best_i = oi;
    }
  }
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  if (lane == 0) {
    warp_value[warp] = best;
    warp_index[warp] = best_i;
  }
  __syncthreads();
  if (threadIdx.x != 0) return;
  for (int w = 1; w < kThreads / 32; ++w)
    if (beats(warp_value[w], warp_index[w], best, best_i)) {
      best = warp_value[w];
      best_i = warp_index[w];
    }
  if (best > -INFINITY) atomicMax(work.keys + row_index, argmax_key::key_of(best, best_i));
  __threadfence();  // the key before the count
  const bool last = atomicAdd(work.counters + row_index, 1) == static_cast<int>(gridDim.y) - 1;
  if (!last) return;
  __threadfence();
  const unsigned long long key = atomicExch(work.keys + row_index, 0ull);
  work.counters[row_index] = 0;
  out[row_index] = argmax_key::column_of(key);
}

}  // namespace

void argmax_rows(const float* logits, int64_t n_rows, int64_t n_cols, int64_t ld, int32_t* out,
                 const ArgmaxWorkspace& work, cudaStream_t stream) {
  check(n_cols > 0 && n_cols <= 65535 * kBlockColumns && ld >= n_cols,
        "internal: argmax_rows over an empty or too wide row");
  if (n_rows == 0) return;
  check(work.keys != nullptr && work.counters != nullptr, "internal: argmax_rows without its workspace");
  const dim3 grid(static_cast<unsigned>(n_rows), static_cast<unsigned>((n_cols + kBlockColumns - 1) / kBlockColumns));
  argmax_rows_kernel<<<grid, kThreads, 0, stream>>>(logits, n_cols, ld, out, work);
  TANDEM_CUDA_CHECK(cudaGetLastError());
}

}  // namespace tandem::cuda
