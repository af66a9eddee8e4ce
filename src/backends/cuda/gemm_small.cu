// A 16-bit GEMM for decode batches of up to 64 tokens on tensor cores
// (mma.sync m16n8k16, f32 accumulation), streaming the weights once.
//
// A warp takes 16 * MT weight rows (the mma's A operand) and every token
// (B, NT tiles of 8 tokens); a block of 8 warps takes 128 * MT rows and one
// slice of the columns (grid.y slices), in chunks of 128 columns. Each
// chunk, the block copies x's 128 columns of every token into shared memory
// (cp.async, double-buffered: the next chunk's copy runs while this one is
// multiplied), and each thread loads its weights for the chunk straight
// into registers, a chunk ahead. Per k step of 32 columns, thread
// (g = lane / 4, t = lane % 4) holds 16 bytes of rows g and g + 8 at columns
// 8t .. 8t + 7, and reads 16 bytes of token g's x at the same columns. The
// mma fragments want columns 2t, 2t + 1, 2t + 8, 2t + 9 of each 16; a dot
// product does not care which physical column stands for which logical one,
// so long as A and B agree. Here logical columns (2t, 2t + 1, 2t + 8, 2t + 9)
// of the step's first mma are physical 8t + (0, 1, 2, 3), of its second
// 8t + (4, 5, 6, 7): the loads are the fragments.
//
// With several column slices, each block writes its partial sums to a
// workspace [splits, n_tokens, rows] and counts itself done on its row
// tile's counter; the tile's last block adds the slices in slice order (so
// the result does not depend on which block finished last) and writes y.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <type_traits>

#include "backends/cuda/gemm_small.h"
#include "backends/cuda/launch.h"
#include "common/error.h"

namespace tandem::cuda {
namespace {

constexpr int kWarps = 8;
constexpr int kThreads = kWarps * 32;
constexpr int kChunkCols = 128;                  // columns a block multiplies per round
constexpr int kStepsPerChunk = kChunkCols / 32;  // k steps of 32 columns
constexpr int kChunkVectors = kChunkCols / 8;    // 16-byte vectors of a token's chunk
// A token's chunk in shared memory: 256 bytes, padded by 64 so that the 8
// lanes of each quarter-warp (two tokens, four vectors each) hit all 32 banks.
constexpr int kTokenStride = kChunkCols * 2 + 64;

template <typename T>
__device__ __forceinline__ void mma_16816(float (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                          uint32_t b0, uint32_t b1) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  if constexpr (std::is_same_v<T, __half>) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
  }
#endif
}

__device__ __forceinline__ void copy_async_16(void* shared, const void* global) {
  const unsigned d = static_cast<unsigned>(__cvta_generic_to_shared(shared));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(d), "l"(global));
}
__device__ __forceinline__ void copy_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int kPending>
__device__ __forceinline__ void copy_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending));
}

// y[t, r] (+)= W[r, :] . x[t, :], t < n_tokens <= 8 * NT.
//   w: [rows, cols] T; x: [n_tokens, cols] T; y: [n_tokens, ldy] f32.
//   partials: [gridDim.y, n_tokens, rows] f32 and counters: [gridDim.x] int
//   (zero between launches), used when gridDim.y > 1.
//   Dynamic shared memory: 2 * 8 * NT * kTokenStride bytes.
template <typename T, int MT, int NT>
__global__ void __launch_bounds__(kThreads)
    gemm_small_kernel(const T* __restrict__ w, int64_t rows, int64_t cols, const T* __restrict__ x, int n_tokens,
                      float* __restrict__ y, int64_t ldy, bool accumulate, int64_t chunks_per_slice,
                      float* __restrict__ partials, int* __restrict__ counters) {
  extern __shared__ uint4 x_chunks[];  // [2][8 * NT tokens][kTokenStride bytes]
  constexpr int kTokens = 8 * NT;
  constexpr int kBufferBytes = kTokens * kTokenStride;
  constexpr int kRowsPerWarp = 16 * MT;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int g = lane / 4, t = lane % 4;
  const int64_t tile_row0 = static_cast<int64_t>(blockIdx.x) * kWarps * kRowsPerWarp;
  const int64_t warp_row0 = tile_row0 + warp * kRowsPerWarp;
  const int64_t n_chunks = cols / kChunkCols;
  const int64_t chunk0 = static_cast<int64_t>(blockIdx.y) * chunks_per_slice;
  const int64_t chunk_end = min(n_chunks, chunk0 + chunks_per_slice);

  // Rows past the matrix repeat its last row and tokens past n_tokens its
  // last token: their products are computed and never written.
  const uint4* wrow[MT][2];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int64_t r = min(warp_row0 + mt * 16 + g + 8 * h, rows - 1);
      wrow[mt][h] = reinterpret_cast<const uint4*>(w + r * cols) + t;
    }

  float acc[MT][NT][4];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int nt = 0; nt < NT; ++nt)
#pragma unroll
      for (int i = 0; i < 4; ++i) acc[mt][nt][i] = 0.0f;

  // This thread's weights of a chunk: [k step][mt][row g, row g + 8].
  using Weights = uint4[kStepsPerChunk][MT][2];
  auto load_weights = [&](Weights& wv, int64_t chunk) {
#pragma unroll
    for (int s = 0; s < kStepsPerChunk; ++s)
#pragma unroll
      for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int h = 0; h < 2; ++h) wv[s][mt][h] = __ldcs(wrow[mt][h] + chunk * kChunkVectors + s * 4);
  };
  // The block's copy of x's columns of a chunk, every token, into buffer b.
  auto copy_x = [&](int b, int64_t chunk) {
    char* buffer = reinterpret_cast<char*>(x_chunks) + b * kBufferBytes;
    for (int i = threadIdx.x; i < kTokens * kChunkVectors; i += kThreads) {
      const int token = i / kChunkVectors, v = i % kChunkVectors;
      const T* src = x + static_cast<int64_t>(min(token, n_tokens - 1)) * cols + chunk * kChunkCols + v * 8;
      copy_async_16(buffer + token * kTokenStride + v * 16, src);
    }
    copy_async_commit();
  };
  auto multiply = [&](const Weights& wv, int b) {
    const char* buffer = reinterpret_cast<const char*>(x_chunks) + b * kBufferBytes + g * kTokenStride + t * 16;
#pragma unroll
    for (int s = 0; s < kStepsPerChunk; ++s)
#pragma unroll
      for (int nt = 0; nt < NT; ++nt) {
        const uint4 xv = *reinterpret_cast<const uint4*>(buffer + nt * 8 * kTokenStride + s * 64);
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
          const uint4* wv_s = wv[s][mt];
          mma_16816<T>(acc[mt][nt], wv_s[0].x, wv_s[1].x, wv_s[0].y, wv_s[1].y, xv.x, xv.y);
          mma_16816<T>(acc[mt][nt], wv_s[0].z, wv_s[1].z, wv_s[0].w, wv_s[1].w, xv.z, xv.w);
        }
      }
  };

  // The first chunk's weights load before the wait for the kernel before
  // this one (launch.h): weights are never written by a step. x after it.
  Weights wa, wb;
  load_weights(wa, chunk0);
  let_successor_start();
  wait_for_predecessor();
  copy_x(0, chunk0);
  // Two chunks a round, so that which register set and buffer a chunk uses
  // is known at compile time.
  auto round = [&](Weights& cur, Weights& next, int b, int64_t c) {
    const bool more = c + 1 < chunk_end;
    if (more) {
      copy_x(b ^ 1, c + 1);
      load_weights(next, c + 1);
      copy_async_wait<1>();
    } else {
      copy_async_wait<0>();
    }
    __syncthreads();  // chunk c's x, every thread's copies
    multiply(cur, b);
    __syncthreads();  // buffer b is free for chunk c + 2
    return more;
  };
  for (int64_t c = chunk0; c < chunk_end; c += 2) {
    if (!round(wa, wb, 0, c)) break;
    if (!round(wb, wa, 1, c + 1)) break;
  }

  // acc[mt][nt]: (row g, tokens 2t, 2t + 1), (row g + 8, the same tokens).
  const bool split = gridDim.y > 1;
  float* out = split ? partials + static_cast<int64_t>(blockIdx.y) * n_tokens * rows : y;
  const int64_t ld = split ? rows : ldy;
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int nt = 0; nt < NT; ++nt)
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int64_t r = warp_row0 + mt * 16 + g + (i >= 2 ? 8 : 0);
        const int token = nt * 8 + 2 * t + (i & 1);
        if (r >= rows || token >= n_tokens) continue;
        float* o = out + token * ld + r;
        if (split) __stcg(o, acc[mt][nt][i]);
        else *o = accumulate ? *o + acc[mt][nt][i] : acc[mt][nt][i];
      }
  if (!split) return;

  // The row tile's last block to finish sums the slices in order.
  __shared__ bool last;
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0) last = atomicAdd(&counters[blockIdx.x], 1) == static_cast<int>(gridDim.y) - 1;
  __syncthreads();
  if (!last) return;
  __threadfence();
  const int64_t tile_rows = min(static_cast<int64_t>(kWarps * kRowsPerWarp), rows - tile_row0);
  const int64_t slice = static_cast<int64_t>(n_tokens) * rows;
  for (int64_t i = threadIdx.x; i < tile_rows * n_tokens; i += kThreads) {
    const int64_t token = i / tile_rows, r = tile_row0 + i % tile_rows;
    const float* p = partials + token * rows + r;
    float sum = 0.0f;
    for (unsigned k = 0; k < gridDim.y; ++k) sum += __ldcg(p + k * slice);
    float* o = y + token * ldy + r;
    *o = accumulate ? *o + sum : sum;
  }
  if (threadIdx.x == 0) counters[blockIdx.x] = 0;  // ready for the next launch
}

template <typename T, int MT>
void launch_for_tokens(const DeviceMatrix& w, const void* x, int n_tokens, float* y, int64_t ldy, bool accumulate,
                       const SmallGemmPlan& plan, float* partials, int* counters, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>(plan.row_tiles), static_cast<unsigned>(plan.splits));
  const T* wd = static_cast<const T*>(w.data);
  const T* xd = static_cast<const T*>(x);
  const size_t shared_bytes = static_cast<size_t>(2 * 8 * ((n_tokens + 7) / 8) * kTokenStride);
  auto go = [&](auto kernel) {
    launch_with_shared(kernel, grid, kThreads, shared_bytes, stream, wd, w.rows, w.cols, xd, n_tokens, y, ldy,
                       accumulate, plan.chunks_per_slice, partials, counters);
  };
  switch ((n_tokens + 7) / 8) {
    case 1: go(gemm_small_kernel<T, MT, 1>); break;
    case 2: go(gemm_small_kernel<T, MT, 2>); break;
    case 3: go(gemm_small_kernel<T, MT, 3>); break;
    case 4: go(gemm_small_kernel<T, MT, 4>); break;
    case 5: go(gemm_small_kernel<T, MT, 5>); break;
    case 6: go(gemm_small_kernel<T, MT, 6>); break;
    case 7: go(gemm_small_kernel<T, MT, 7>); break;
    default: go(gemm_small_kernel<T, MT, 8>); break;
  }
}

}  // namespace

bool small_gemm_takes(const DeviceMatrix& w, int64_t n_tokens) {
  return (w.format == WeightFormat::F16 || w.format == WeightFormat::BF16) && n_tokens >= 1 &&
         n_tokens <= kSmallGemmMaxTokens && w.cols % kChunkCols == 0 && w.rows > 0 &&
         reinterpret_cast<uintptr_t>(w.data) % 16 == 0;
}

SmallGemmPlan small_gemm_plan(int64_t rows, int64_t cols, int64_t n_tokens, int rows_per_warp, int sm_count,
                              int splits) {
  check(rows_per_warp == 16 || rows_per_warp == 32, "internal: small GEMM rows per warp is 16 or 32");
  SmallGemmPlan p;
  p.rows_per_warp = rows_per_warp;
  const int64_t tile = kWarps * rows_per_warp;
  p.row_tiles = (rows + tile - 1) / tile;
  const int64_t chunks = cols / kChunkCols;
  if (splits <= 0) {
    // Enough blocks for about two a SM, slices of at least 4 chunks.
    const int64_t want = std::max<int64_t>(1, (2 * static_cast<int64_t>(sm_count) + p.row_tiles - 1) / p.row_tiles);
    splits = static_cast<int>(std::min<int64_t>(want, std::max<int64_t>(1, chunks / 4)));
  }
  p.chunks_per_slice = (chunks + splits - 1) / splits;
  p.splits = static_cast<int>((chunks + p.chunks_per_slice - 1) / p.chunks_per_slice);  // no empty slice
  p.partial_floats = p.splits > 1 ? p.splits * n_tokens * rows : 0;
  return p;
}

void small_gemm(const DeviceMatrix& w, const void* x, int64_t n_tokens, float* y, int64_t ldy, bool accumulate,
                const SmallGemmPlan& plan, float* partials, int* counters, cudaStream_t stream) {
  check(small_gemm_takes(w, n_tokens), "internal: small_gemm does not take this product");
  check(plan.splits == 1 || (partials != nullptr && counters != nullptr),
        "internal: a split small GEMM needs its workspace");
  const int n = static_cast<int>(n_tokens);
  if (w.format == WeightFormat::F16) {
    if (plan.rows_per_warp == 16) launch_for_tokens<__half, 1>(w, x, n, y, ldy, accumulate, plan, partials, counters, stream);
    else launch_for_tokens<__half, 2>(w, x, n, y, ldy, accumulate, plan, partials, counters, stream);
  } else {
    if (plan.rows_per_warp == 16)
      launch_for_tokens<__nv_bfloat16, 1>(w, x, n, y, ldy, accumulate, plan, partials, counters, stream);
    else launch_for_tokens<__nv_bfloat16, 2>(w, x, n, y, ldy, accumulate, plan, partials, counters, stream);
  }
}

}  // namespace tandem::cuda
