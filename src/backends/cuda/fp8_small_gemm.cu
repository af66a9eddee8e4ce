// The FP8 product of a decode batch (1-32 tokens) on FP8 tensor cores, as
// Gemm::fp8_product computes it through cuBLASLt: product[t, r] =
// sum_c W8[r, c] x8[t, c], both E4M3, f32 sums, before any scale.
//
// A block of 4 warps takes 32 rows (two m16 tiles of mma.sync
// m16n8k32.e4m3) and every token (n8 tiles); warp w takes the 64-byte
// spans w, w + 4, ... of each row, so the block splits K four ways and sums
// the warps' results in warp order at the end. Within a span, lane (g, q)
// loads bytes [16 q, 16 q + 16) of rows g and g + 8 of each tile and of
// token g of each n-tile: the span's K order is permuted alike for weights
// and tokens (words 0 and 1 of each lane's 16 bytes feed the first k32
// step as its columns 4q.. and 16 + 4q.., words 2 and 3 the second), which
// a dot product does not see, so every fragment comes straight from one
// 16-byte load, with no shuffles or shared memory. A warp keeps four spans
// of weights and tokens in registers and reloads each slot as soon as its
// mma's have read it; the first spans' weights load before the kernel waits
// for the one before it (launch.h), which the activations then follow.
#include <cuda_runtime.h>

#include <cstdint>

#include "backends/cuda/cuda_check.h"
#include "backends/cuda/kernels.h"
#include "backends/cuda/launch.h"

namespace tandem::cuda {
namespace {

constexpr int kWarps = 4;
constexpr int kThreads = 32 * kWarps;
constexpr int kRows = 32;    // rows a block: two m16 tiles
constexpr int kSpan = 64;    // bytes of a row a warp takes at a time: two k32 steps
constexpr int kSlots = 4;    // spans a warp keeps in flight
constexpr int kMaxTokens = 32;

// d += a b for one m16n8k32 tile of E4M3 values, f32 sums.
__device__ __forceinline__ void mma_e4m3(float (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                         uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k32.row.col.f32.e4m3.e4m3.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

// NT: n8 tiles of tokens (n_tokens <= 8 NT).
template <int NT>
__global__ void __launch_bounds__(kThreads) fp8_small_gemm_kernel(const uint8_t* __restrict__ w, int64_t rows,
                                                                  int64_t cols, const uint8_t* __restrict__ x,
                                                                  int n_tokens, float* __restrict__ product) {
  __shared__ float sums[kWarps][kRows][8 * NT];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, q = lane % 4;
  const int64_t r0 = static_cast<int64_t>(blockIdx.x) * kRows;
  const int n_spans = static_cast<int>(cols / kSpan);
  // This lane's rows r0 + g + 8 i (tile i / 2; rows past the matrix read
  // its last, never stored) and tokens 8 n + g (zeros past n_tokens), each
  // at its 16 bytes of a span.
  const uint4* w_at[4];
#pragma unroll
  for (int i = 0; i < 4; ++i)
    w_at[i] = reinterpret_cast<const uint4*>(w + min(r0 + g + 8 * i, rows - 1) * cols) + q;
  const uint4* x_at[NT];
  bool x_valid[NT];
#pragma unroll
  for (int n = 0; n < NT; ++n) {
    x_valid[n] = 8 * n + g < n_tokens;
    x_at[n] = reinterpret_cast<const uint4*>(x + static_cast<int64_t>(min(8 * n + g, n_tokens - 1)) * cols) + q;
  }
  constexpr int kVecs = kSpan / 16;  // uint4s a span of a row
  uint4 wv[kSlots][4], xv[kSlots][NT];
  auto load_weights = [&](int slot, int span) {
#pragma unroll
    for (int i = 0; i < 4; ++i) wv[slot][i] = __ldcs(w_at[i] + span * kVecs);
  };
  auto load_tokens = [&](int slot, int span) {
#pragma unroll
    for (int n = 0; n < NT; ++n) xv[slot][n] = x_valid[n] ? __ldg(x_at[n] + span * kVecs) : make_uint4(0, 0, 0, 0);
  };
  float acc[2][NT][4];
#pragma unroll
  for (int m = 0; m < 2; ++m)
#pragma unroll
    for (int n = 0; n < NT; ++n) acc[m][n][0] = acc[m][n][1] = acc[m][n][2] = acc[m][n][3] = 0.0f;

  // Slot u holds span warp + kWarps (round * kSlots + u).
#pragma unroll
  for (int u = 0; u < kSlots; ++u)
    if (warp + kWarps * u < n_spans) load_weights(u, warp + kWarps * u);
  let_successor_start();
  wait_for_predecessor();
#pragma unroll
  for (int u = 0; u < kSlots; ++u)
    if (warp + kWarps * u < n_spans) load_tokens(u, warp + kWarps * u);
  for (int base = warp; base < n_spans; base += kWarps * kSlots) {
#pragma unroll
    for (int u = 0; u < kSlots; ++u) {
      const int span = base + kWarps * u;
      if (span >= n_spans) break;
#pragma unroll
      for (int m = 0; m < 2; ++m) {
        const uint4 a = wv[u][2 * m], b = wv[u][2 * m + 1];  // rows g and g + 8 of tile m
#pragma unroll
        for (int n = 0; n < NT; ++n) {
          mma_e4m3(acc[m][n], a.x, b.x, a.y, b.y, xv[u][n].x, xv[u][n].y);
          mma_e4m3(acc[m][n], a.z, b.z, a.w, b.w, xv[u][n].z, xv[u][n].w);
        }
      }
      const int next = span + kWarps * kSlots;
      if (next < n_spans) {
        load_weights(u, next);
        load_tokens(u, next);
      }
    }
  }

  // C tile m, n: c0, c1 at row g, tokens 2q, 2q + 1; c2, c3 at row g + 8.
#pragma unroll
  for (int m = 0; m < 2; ++m)
#pragma unroll
    for (int n = 0; n < NT; ++n) {
      const int row = 16 * m + g, t = 8 * n + 2 * q;
      sums[warp][row][t] = acc[m][n][0];
      sums[warp][row][t + 1] = acc[m][n][1];
      sums[warp][row + 8][t] = acc[m][n][2];
      sums[warp][row + 8][t + 1] = acc[m][n][3];
    }
  __syncthreads();
  for (int i = static_cast<int>(threadIdx.x); i < kRows * n_tokens; i += kThreads) {
    const int t = i / kRows, r = i % kRows;
    float s = 0.0f;
#pragma unroll
    for (int k = 0; k < kWarps; ++k) s += sums[k][r][t];
    if (r0 + r < rows) product[static_cast<int64_t>(t) * rows + r0 + r] = s;
  }
}

}  // namespace

bool fp8_small_gemm_takes(const DeviceMatrix& w, int64_t n_tokens, int device) {
  int major = 0, minor = 0;
  TANDEM_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
  TANDEM_CUDA_CHECK(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device));
  return (major > 8 || (major == 8 && minor >= 9)) && w.format == WeightFormat::F8Row && w.cols % kSpan == 0 &&
         n_tokens >= 1 && n_tokens <= kMaxTokens;
}

void fp8_small_gemm(const DeviceMatrix& w, const uint8_t* x, int64_t n_tokens, float* product, cudaStream_t stream) {
  check(w.format == WeightFormat::F8Row && w.cols % kSpan == 0 && n_tokens >= 1 && n_tokens <= kMaxTokens,
        "internal: fp8_small_gemm takes FP8 rows of a multiple of 64 columns and 1-32 tokens");
  check(reinterpret_cast<uintptr_t>(w.data) % 16 == 0 && reinterpret_cast<uintptr_t>(x) % 16 == 0,
        "internal: fp8_small_gemm reads 16-byte aligned rows");
  const dim3 grid(static_cast<unsigned>((w.rows + kRows - 1) / kRows));
  const auto* wq = static_cast<const uint8_t*>(w.data);
  const int n = static_cast<int>(n_tokens);
  switch ((n + 7) / 8) {
    case 1: launch(fp8_small_gemm_kernel<1>, grid, kThreads, stream, wq, w.rows, w.cols, x, n, product); break;
    case 2: launch(fp8_small_gemm_kernel<2>, grid, kThreads, stream, wq, w.rows, w.cols, x, n, product); break;
    case 3: launch(fp8_small_gemm_kernel<3>, grid, kThreads, stream, wq, w.rows, w.cols, x, n, product); break;
    default: launch(fp8_small_gemm_kernel<4>, grid, kThreads, stream, wq, w.rows, w.cols, x, n, product); break;
  }
  TANDEM_CUDA_CHECK(cudaGetLastError());
}

}  // namespace tandem::cuda
