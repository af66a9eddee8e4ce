// The FP8 product of a decode batch (1-32 tokens) on FP8 tensor cores, as
// Gemm::fp8_product computes it through cuBLASLt: product[t, r] =
// sum_c W8[r, c] x8[t, c], both E4M3, f32 sums, before any scale. At these
// token counts the product is bound by reading the weights once; the kernel
// is built so that nothing else is read from memory in bulk.
//
// Layout. A block owns 128 rows, 32 to each of its 4 warps (two m16 tiles
// of mma.sync m16n8k16), and every token (n8 tiles), over one split of the
// columns (grid.y; split_cols each). Each lane keeps its rows' E4M3
// weights in registers, kRing 64-byte spans ahead of the one it
// multiplies, loaded straight from global memory with 16-byte streaming
// loads; the first spans load before the kernel waits for its predecessor
// (launch.h). The tokens' inputs are read from global memory once per
// block, a chunk of 256 columns at a time (loaded a chunk ahead), and
// widened to f16 into shared memory, where the four warps share them.
//
// Why f16 tensor cores: every E4M3 value is an f16 value, so widening
// changes no product. A first version on mma.sync m16n8k32.e4m3 (the
// fragments the same bytes) was 4-10% slower at 32 tokens on an H100.
//
// Fragments. Within a span, lane (g = lane / 4, q = lane % 4) takes bytes
// [16 q, 16 q + 16) of its rows g and g + 8 of each tile and of token g of
// each n-tile; word j of those 16 bytes feeds k16 step j of the span:
// bytes 0-1 as its columns 2q, 2q + 1 (a0, a1 and b0), bytes 2-3 as its
// columns 8 + 2q, 9 + 2q (a2, a3 and b1). The span's K order is so
// permuted alike for weights and tokens, which a dot product does not see,
// and every weight fragment is one 16-byte load.
//
// Splits. Where the row groups alone would leave SMs idle, the columns
// split among blocks; each writes its sums to `partials`, and the block
// that finishes a row group last (a counter per row group) adds the splits
// in split order and resets the counter. A (row, token) sum so runs in an
// order fixed by the split count, which depends on the shape, the token
// count and the GPU's SM count.
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "backends/cuda/cuda_check.h"
#include "backends/cuda/kernels.h"
#include "backends/cuda/launch.h"
#include "backends/cuda/mma_tile.cuh"

namespace tandem::cuda {
namespace {

constexpr int kWarps = 4;
constexpr int kThreads = 32 * kWarps;
constexpr int kWarpRows = 32;              // two m16 tiles
constexpr int kRows = kWarps * kWarpRows;  // rows a block: 128
constexpr int kSpan = 64;                  // bytes of a row per step: four k16 mma's
constexpr int kRing = 4;                   // spans a lane keeps loaded ahead
constexpr int kChunk = kRing * kSpan;      // columns staged at a time: 256
// A token's staged chunk: 256 values as f16 (512 bytes), padded to 528 so
// that the 8 lanes of a 16-byte shared load phase (tokens g and g + 1, 4
// lanes each 32 bytes apart) cover 32 distinct banks.
constexpr int kStride = 2 * kChunk + 16;

// Two E4M3 values (bytes 0 and 1 of v) as an f16x2 (exact: every E4M3
// value is an f16 value).
__device__ __forceinline__ uint32_t e4m3x2_to_f16x2(uint32_t v) {
  const __half2_raw h = __nv_cvt_fp8x2_to_halfraw2(static_cast<__nv_fp8x2_storage_t>(v & 0xffff), __NV_E4M3);
  return static_cast<uint32_t>(h.x) | (static_cast<uint32_t>(h.y) << 16);
}

// NT: n8 tiles of tokens (n_tokens <= 8 NT). Shared memory: 2 x 8 NT x
// kStride bytes.
template <int NT>
__global__ void __launch_bounds__(kThreads) fp8_decode_gemm_kernel(const uint8_t* __restrict__ w, int64_t rows,
                                                                   int64_t cols, const uint8_t* __restrict__ x,
                                                                   int n_tokens, int64_t split_cols,
                                                                   float* __restrict__ product,
                                                                   float* __restrict__ partials,
                                                                   int* __restrict__ counters) {
  extern __shared__ __align__(16) uint8_t staged[];  // [2][8 NT][kStride]: the chunk's inputs as f16
  __shared__ bool last;
  const int warp = static_cast<int>(threadIdx.x) / 32, lane = static_cast<int>(threadIdx.x) % 32;
  const int g = lane / 4, q = lane % 4;
  const int split = static_cast<int>(blockIdx.y), n_splits = static_cast<int>(gridDim.y);
  const int64_t k0 = split * split_cols;
  const int n_spans = static_cast<int>(min(split_cols, cols - k0) / kSpan);  // a multiple of kRing
  const int n_chunks = n_spans / kRing;
  const int64_t row0 = static_cast<int64_t>(blockIdx.x) * kRows + warp * kWarpRows;

  // Lane rows row0 + g + 8 i (tile i / 2; rows past the matrix read its
  // last, never stored), at their 16 bytes of each span.
  const uint4* w_at[4];
#pragma unroll
  for (int i = 0; i < 4; ++i)
    w_at[i] = reinterpret_cast<const uint4*>(w + min(row0 + g + 8 * i, rows - 1) * cols + k0) + q;
  constexpr int kVecs = kSpan / 16;  // uint4s a span of a row
  uint4 wv[kRing][4];
#pragma unroll
  for (int u = 0; u < kRing; ++u)
#pragma unroll
    for (int i = 0; i < 4; ++i) wv[u][i] = __ldcs(w_at[i] + u * kVecs);
  let_successor_start();
  wait_for_predecessor();

  // The inputs of a chunk: 16 E4M3 bytes (token t, 16 v..) a slot, kSlots
  // slots a thread, read a chunk before they are widened into shared memory
  // (token rows past n_tokens are never written: they feed only products
  // of tokens that are not stored).
  constexpr int kPerToken = kChunk / 16;
  constexpr int kSlots = (8 * NT * kPerToken + kThreads - 1) / kThreads;
  uint4 xv[kSlots];
  auto fetch = [&](int c) {
#pragma unroll
    for (int j = 0; j < kSlots; ++j) {
      const int i = static_cast<int>(threadIdx.x) + j * kThreads, t = i / kPerToken, v = i % kPerToken;
      if (t < n_tokens) xv[j] = __ldg(reinterpret_cast<const uint4*>(x + t * cols + k0 + c * kChunk) + v);
    }
  };
  auto widen = [&](int c) {
    uint8_t* buf = staged + (c & 1) * (8 * NT * kStride);
#pragma unroll
    for (int j = 0; j < kSlots; ++j) {
      const int i = static_cast<int>(threadIdx.x) + j * kThreads, t = i / kPerToken, v = i % kPerToken;
      if (t >= n_tokens) continue;
      const uint32_t in[4] = {xv[j].x, xv[j].y, xv[j].z, xv[j].w};
      uint32_t h[8];
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        h[2 * k] = e4m3x2_to_f16x2(in[k]);
        h[2 * k + 1] = e4m3x2_to_f16x2(in[k] >> 16);
      }
      uint4* dst = reinterpret_cast<uint4*>(buf + t * kStride + 32 * v);
      dst[0] = make_uint4(h[0], h[1], h[2], h[3]);
      dst[1] = make_uint4(h[4], h[5], h[6], h[7]);
    }
  };
  fetch(0);
  widen(0);
  if (n_chunks > 1) fetch(1);

  float acc[2][NT][4];
#pragma unroll
  for (int m = 0; m < 2; ++m)
#pragma unroll
    for (int n = 0; n < NT; ++n) acc[m][n][0] = acc[m][n][1] = acc[m][n][2] = acc[m][n][3] = 0.0f;

  for (int c = 0; c < n_chunks; ++c) {
    __syncthreads();  // chunk c is in; every warp is done with chunk c - 1's buffer
    if (c + 1 < n_chunks) {
      widen(c + 1);
      if (c + 2 < n_chunks) fetch(c + 2);
    }
    const uint8_t* b_at = staged + (c & 1) * (8 * NT * kStride) + g * kStride + 32 * q;
#pragma unroll
    for (int u = 0; u < kRing; ++u) {
      // Token g of each n-tile: its span's 16 values [16 q, 16 q + 16) as
      // f16, (b0, b1) of k16 step j in words 2 j and 2 j + 1.
      uint4 b[NT][2];
#pragma unroll
      for (int n = 0; n < NT; ++n) {
        const uint4* p = reinterpret_cast<const uint4*>(b_at + 8 * n * kStride + u * 2 * kSpan);
        b[n][0] = p[0];
        b[n][1] = p[1];
      }
#pragma unroll
      for (int m = 0; m < 2; ++m) {
        const uint4 lo = wv[u][2 * m], hi = wv[u][2 * m + 1];  // rows g and g + 8 of tile m
        const uint32_t lo_w[4] = {lo.x, lo.y, lo.z, lo.w}, hi_w[4] = {hi.x, hi.y, hi.z, hi.w};
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          // k16 step j: word j of each row, bytes 0-1 as (a0 | a1), 2-3 as (a2 | a3).
          const uint32_t a[4] = {e4m3x2_to_f16x2(lo_w[j]), e4m3x2_to_f16x2(hi_w[j]), e4m3x2_to_f16x2(lo_w[j] >> 16),
                                 e4m3x2_to_f16x2(hi_w[j] >> 16)};
#pragma unroll
          for (int n = 0; n < NT; ++n) {
            const uint4& bb = b[n][j / 2];
            mma_tile::mma_16816(acc[m][n], a, j % 2 == 0 ? bb.x : bb.z, j % 2 == 0 ? bb.y : bb.w);
          }
        }
      }
      const int next = (c + 1) * kRing + u;
      if (next < n_spans) {
#pragma unroll
        for (int i = 0; i < 4; ++i) wv[u][i] = __ldcs(w_at[i] + next * kVecs);
      }
    }
  }

  // C tile (m, n): c0, c1 at row 16 m + g, tokens 8 n + 2 q and + 1; c2, c3
  // at row 16 m + g + 8.
  float* out = n_splits == 1 ? product : partials + static_cast<int64_t>(split) * n_tokens * rows;
#pragma unroll
  for (int m = 0; m < 2; ++m)
#pragma unroll
    for (int n = 0; n < NT; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int64_t r = row0 + 16 * m + g + (e >= 2 ? 8 : 0);
        const int t = 8 * n + 2 * q + (e & 1);
        if (r < rows && t < n_tokens) out[t * rows + r] = acc[m][n][e];
      }
  if (n_splits == 1) return;

  // The last block of this row group to finish adds the splits in order.
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0) last = atomicAdd(&counters[blockIdx.x], 1) == n_splits - 1;
  __syncthreads();
  if (!last) return;
  __threadfence();
  const int64_t r0 = static_cast<int64_t>(blockIdx.x) * kRows;
  for (int i = static_cast<int>(threadIdx.x); i < n_tokens * kRows; i += kThreads) {
    const int t = i / kRows;
    const int64_t r = r0 + i % kRows;
    if (r >= rows) continue;
    float s = 0.0f;
    for (int k = 0; k < n_splits; ++k) s += __ldcg(partials + (static_cast<int64_t>(k) * n_tokens + t) * rows + r);
    product[t * rows + r] = s;
  }
  if (threadIdx.x == 0) counters[blockIdx.x] = 0;  // for the next call
}

template <int NT>
void launch_tiles(dim3 grid, cudaStream_t stream, const uint8_t* w, int64_t rows, int64_t cols, const uint8_t* x,
                  int n_tokens, int64_t split_cols, float* product, float* partials, int* counters) {
  const size_t shared = size_t{2} * 8 * NT * kStride;
  launch_with_shared(fp8_decode_gemm_kernel<NT>, grid, kThreads, shared, stream, w, rows, cols, x, n_tokens,
                     split_cols, product, partials, counters);
}

}  // namespace

bool fp8_decode_gemm_takes(const DeviceMatrix& w, int64_t n_tokens) {
  return w.format == WeightFormat::F8Row && w.cols % kChunk == 0 && n_tokens >= 1 &&
         n_tokens <= kFp8DecodeGemmMaxTokens;
}

int fp8_decode_gemm_splits(int64_t rows, int64_t cols, int64_t n_tokens, int sm_count, int64_t partial_floats) {
  const int64_t groups = (rows + kRows - 1) / kRows;
  const int64_t chunks = cols / kChunk;
  // About two blocks an SM, each keeping at least two chunks; fewer where
  // the partial sums would not fit.
  int64_t splits = std::clamp<int64_t>((2 * sm_count + groups - 1) / groups, 1, std::max<int64_t>(1, chunks / 2));
  while (splits > 1 && splits * n_tokens * rows > partial_floats) --splits;
  // Equal chunk counts a split; the count the blocks then need.
  const int64_t per_split = (chunks + splits - 1) / splits;
  return static_cast<int>((chunks + per_split - 1) / per_split);
}

int64_t fp8_decode_gemm_row_groups(int64_t rows) { return (rows + kRows - 1) / kRows; }

void fp8_decode_gemm(const DeviceMatrix& w, const uint8_t* x, int64_t n_tokens, int splits, float* product,
                     float* partials, int* counters, cudaStream_t stream) {
  check(w.format == WeightFormat::F8Row && w.cols % kChunk == 0 && n_tokens >= 1 &&
            n_tokens <= kFp8DecodeGemmMaxTokens && splits >= 1,
        "internal: fp8_decode_gemm takes FP8 rows of a multiple of 256 columns and 1-32 tokens");
  check(reinterpret_cast<uintptr_t>(w.data) % 16 == 0 && reinterpret_cast<uintptr_t>(x) % 16 == 0,
        "internal: fp8_decode_gemm reads 16-byte aligned rows");
  check(splits == 1 || (partials != nullptr && counters != nullptr),
        "internal: fp8_decode_gemm needs partials and counters to split the columns");
  const int64_t chunks = w.cols / kChunk;
  const int64_t per_split = (chunks + splits - 1) / splits;
  check((chunks + per_split - 1) / per_split == splits, "internal: fp8_decode_gemm split count leaves a split empty");
  const dim3 grid(static_cast<unsigned>(fp8_decode_gemm_row_groups(w.rows)), static_cast<unsigned>(splits));
  const auto* wq = static_cast<const uint8_t*>(w.data);
  const int n = static_cast<int>(n_tokens);
  const int64_t split_cols = per_split * kChunk;
  switch ((n + 7) / 8) {
    case 1: launch_tiles<1>(grid, stream, wq, w.rows, w.cols, x, n, split_cols, product, partials, counters); break;
    case 2: launch_tiles<2>(grid, stream, wq, w.rows, w.cols, x, n, split_cols, product, partials, counters); break;
    case 3: launch_tiles<3>(grid, stream, wq, w.rows, w.cols, x, n, split_cols, product, partials, counters); break;
    default: launch_tiles<4>(grid, stream, wq, w.rows, w.cols, x, n, split_cols, product, partials, counters); break;
  }
  TANDEM_CUDA_CHECK(cudaGetLastError());
}

}  // namespace tandem::cuda
