// The block layout both decode GEMVs share (gemv.cu: float math on any
// weight format; gemv_q8.cu: dp4a on quantized activations). A block of 8
// warps takes a few rows (kRowsPerBlock, or 8 or 16 where the launcher says
// so; consecutive rows, or RoPE pairs for the fused q·k·v GEMV) and splits
// their 16-byte column vectors among its 256 threads: thread j visits
// vectors j, j + 256, ... of every row, so a token's sum depends on this
// layout only, never on the number of tokens or rows a block, or which
// (batch invariance).
#pragma once

#include <cstdint>
#include <type_traits>
#include <utility>

#include "backends/cuda/launch.h"

namespace tandem::cuda::gemv_block {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kRowsPerBlock = 4;
constexpr int kUnroll = 2;     // vectors of each row per thread per round of loads
constexpr int kMaxTokens = 8;  // tokens per pass over the weights

// Visits this thread's vectors of rows of n_vec vectors. load(u, vec) fetches
// vector vec of every row into slot u (u < kUnroll); use(u, vec) consumes
// slot u. A round's kUnroll loads are all issued before any is used, then
// the tail goes one at a time; vectors are used in the same order either
// way. The first round loads before the kernel waits for the kernel before
// it (launch.h), so `load` must read only weights.
// U (kUnroll by default): vectors a round. 1 suits rows of at most
// kThreads vectors (one each), for which a second slot is never used.
// before_wait() runs once the first round's loads are issued, before the
// wait, under the same contract as `load`; after_wait() right after the
// wait (a load issued there overlaps the loop).
template <int U = kUnroll, typename Load, typename Use, typename BeforeWait, typename AfterWait>
__device__ __forceinline__ void visit_vectors(int64_t n_vec, Load&& load, Use&& use, BeforeWait&& before_wait,
                                              AfterWait&& after_wait) {
  constexpr int kUnroll = U;
  int64_t v = threadIdx.x;
  const bool full_round = v + (kUnroll - 1) * kThreads < n_vec;
  bool preloaded = v < n_vec;
#pragma unroll
  for (int u = 0; u < kUnroll; ++u)
    if (u == 0 ? preloaded : full_round) load(u, v + u * kThreads);
  before_wait();
  let_successor_start();
  wait_for_predecessor();
  after_wait();
  if (full_round) {
    preloaded = false;
    for (;;) {
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) use(u, v + u * kThreads);
      v += kUnroll * kThreads;
      if (v + (kUnroll - 1) * kThreads >= n_vec) break;
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) load(u, v + u * kThreads);
    }
  }
  for (; v < n_vec; v += kThreads) {
    if (!preloaded) load(0, v);
    preloaded = false;
    use(0, v);
  }
}

template <int U = kUnroll, typename Load, typename Use, typename BeforeWait>
__device__ __forceinline__ void visit_vectors(int64_t n_vec, Load&& load, Use&& use, BeforeWait&& before_wait) {
  visit_vectors<U>(n_vec, load, use, before_wait, [] {});
}

template <int U = kUnroll, typename Load, typename Use>
__device__ __forceinline__ void visit_vectors(int64_t n_vec, Load&& load, Use&& use) {
  visit_vectors<U>(n_vec, load, use, [] {}, [] {});
}

// Sums acc[row][token] over the block, over each warp's lanes and then over
// the warps in order, and calls store(row, token, sum) once for each pair,
// from the block's first R * NT threads.
template <int R, int NT, typename Store>
__device__ __forceinline__ void reduce_rows(const float (&acc)[R][NT], Store&& store) {
  __shared__ float partial[kWarps][R][NT];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
#pragma unroll
  for (int i = 0; i < R; ++i) {
#pragma unroll
    for (int t = 0; t < NT; ++t) {
      float s = acc[i][t];
#pragma unroll
      for (int off = 16; off > 0; off /= 2) s += __shfl_xor_sync(0xffffffffu, s, off);
      if (lane == 0) partial[warp][i][t] = s;
    }
  }
  __syncthreads();
  if (threadIdx.x < R * NT) {
    const int i = threadIdx.x / NT, t = threadIdx.x % NT;
    float s = 0.0f;
#pragma unroll
    for (int k = 0; k < kWarps; ++k) s += partial[k][i][t];
    store(i, t, s);
  }
}

// Host side: calls f(std::integral_constant<int, nt>{}) for nt in
// [1, kMaxTokens], so that a launcher picks the kernel compiled for that many
// tokens.
template <int N = 1, typename F>
void with_token_count(int nt, F&& f) {
  if constexpr (N <= kMaxTokens) {
    if (nt == N) {
      f(std::integral_constant<int, N>{});
    } else {
      with_token_count<N + 1>(nt, std::forward<F>(f));
    }
  }
}

}  // namespace tandem::cuda::gemv_block
