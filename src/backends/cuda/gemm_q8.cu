// Decode batches on 8-bit weights (Q8_0 and int8 rows) on int8 tensor
// cores: the quantized activations of gemv_q8 (32 values to an int8 block
// with an f32 scale) against the weights as they are stored, one m16n8k32
// product per 32-value block, so that each weight is read from memory once
// for up to 64 tokens. The dp4a GEMV takes at most 8 tokens a pass and
// re-reads the weights for every 8.
//
// Layout. A block of 4 warps owns 128 rows, 32 a warp (two 16-row tiles);
// its warps walk the same 32-value blocks in the same order, so the
// activations one warp loads are in L1 for the others, and the activations
// cross from L2 once per 128 rows. Each thread keeps its tiles' (row, token)
// sums in f32: per block, the exact int32 product is scaled by the weight's
// and the token's scale and added. Where the row groups alone would leave
// SMs idle, the columns split among blocks too (grid.y): each split writes
// its sums to a workspace and a second kernel adds them in split order.
// The order of a (row, token) sum depends on the matrix shape and the GPU
// only, never on how many tokens a launch takes.
//
// Fragments (PTX m16n8k32, s8): thread (group g = lane / 4, c = lane % 4)
// holds A's rows g and g + 8 at k = 4c..4c+3 and 16+4c..16+4c+3, and B's
// column (token) g at the same k. A dot product does not depend on the
// order of k, so both operands use k = 8c..8c+7 of memory for those eight
// slots: one 8-byte load per row and per token.
#include <cuda_fp16.h>

#include <algorithm>

#include "backends/cuda/cuda_check.h"
#include "backends/cuda/kernels.h"
#include "backends/cuda/launch.h"

namespace tandem::cuda {
namespace {

constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;
constexpr int kTiles = 2;                  // 16-row tiles per warp
constexpr int kWarpRows = 16 * kTiles;     // 32
constexpr int kRows = kWarps * kWarpRows;  // rows per block: 128
constexpr int kMaxTiles = 8;               // 8-token tiles per pass: 64 tokens
constexpr int kBlock = 32;                 // values per scale

// The int32 products reach f32 without a conversion instruction (a
// quarter-rate one, which bounded the kernel): the product starts from the
// bits of 1.5 * 2^23, so that its bits are those of the float 1.5 * 2^23 +
// product, exact while |product| < 2^22 (32 * 128 * 127 at most), and one
// subtraction leaves the product.
constexpr int kMagicBits = 0x4B400000;
constexpr float kMagic = 12582912.0f;  // 1.5 * 2^23

// d = a b + kMagicBits for one m16n8k32 tile (s8 inputs, s32 result).
__device__ __forceinline__ void mma_s8(int (&d)[4], const int (&a)[4], int b0, int b1) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile(
      "mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%10, %10, %10, %10};\n"
      : "=r"(d[0]), "=r"(d[1]), "=r"(d[2]), "=r"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1), "r"(kMagicBits));
#else
  __trap();  // gemm_q8_supported() refuses GPUs before sm_80
#endif
}

// Asynchronous copies to shared memory (sm_80): `bytes` from src, zeros
// where !valid (src is then not read).
template <int kBytes>
__device__ __forceinline__ void copy_async(void* dst, const void* src, bool valid) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  const unsigned d = static_cast<unsigned>(__cvta_generic_to_shared(dst));
  if constexpr (kBytes == 16)
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(d), "l"(src), "r"(valid ? 16 : 0));
  else
    asm volatile("cp.async.ca.shared.global [%0], [%1], %2, %3;\n" ::"r"(d), "l"(src), "n"(kBytes),
                 "r"(valid ? kBytes : 0));
#endif
}
__device__ __forceinline__ void copies_commit() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.commit_group;\n" ::);
#endif
}
// Waits until at most kPending committed groups of this thread are in flight.
template <int kPending>
__device__ __forceinline__ void copies_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending));
#endif
}

// One warp's weights for one 32-value block: a[tile] as mma_s8 takes it and,
// for Q8_0, the scales of the thread's rows g and g + 8 of each tile.
struct BlockLoad {
  int a[kTiles][4];
  float wd[kTiles][2];
};

// For NJ * 8 tokens from 0 (those below n_tokens), x given as (xq, xd):
// with one split, y[t, r] (+)= W[r, :] . x[t, :]; with several, split s
// writes its part of the sum to partial[s, t, r] (partial: [splits,
// n_tokens, rows]).
//
// The split's 32-value blocks go in chunks of KC: while the warps multiply
// one chunk, the block copies the next chunk's activations to shared memory
// and each warp loads the next chunk's weights into registers.
template <WeightFormat D, int NJ>
__global__ void __launch_bounds__(kThreads)
    gemm_q8_kernel(const int8_t* __restrict__ weights, const void* __restrict__ scales, int64_t rows, int64_t cols,
                   const int8_t* __restrict__ xq, const float* __restrict__ xd, int64_t n_tokens, float* __restrict__ y,
                   int64_t ldy, bool accumulate_into, float* __restrict__ partial) {
  constexpr int KC = NJ <= 4 ? 4 : 2;  // 32-value blocks a chunk (fewer where many tokens hold registers)
  constexpr int NT = 8 * NJ;           // tokens a pass
  __shared__ __align__(16) int8_t xs[2][KC][NT][kBlock];  // a chunk's activations, double-buffered
  __shared__ __align__(16) float ds[2][KC][NT];           // and their scales

  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int g = lane / 4, c = lane % 4;
  const int64_t r0 = static_cast<int64_t>(blockIdx.x) * kRows + warp * kWarpRows;
  const int64_t n_blocks = cols / kBlock;
  const int64_t kb_begin = n_blocks * blockIdx.y / gridDim.y, kb_end = n_blocks * (blockIdx.y + 1) / gridDim.y;
  const int64_t n_chunks = (kb_end - kb_begin + KC - 1) / KC;

  const int8_t* row[kTiles][2];
  const __half* row_d[kTiles][2];
#pragma unroll
  for (int m = 0; m < kTiles; ++m)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int64_t r = min(r0 + 16 * m + 8 * h + g, rows - 1);
      row[m][h] = weights + r * cols;
      row_d[m][h] = D == WeightFormat::Q8_0 ? static_cast<const __half*>(scales) + r * n_blocks : nullptr;
    }

  // Weights of chunk ch into w (blocks past the split are not read).
  auto load_weights = [&](BlockLoad (&w)[KC], int64_t ch) {
#pragma unroll
    for (int i = 0; i < KC; ++i) {
      const int64_t kb = kb_begin + ch * KC + i;
      if (kb >= kb_end) break;
#pragma unroll
      for (int m = 0; m < kTiles; ++m)
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const int2 v = __ldcs(reinterpret_cast<const int2*>(row[m][h] + kb * kBlock + 8 * c));
          w[i].a[m][h] = v.x;      // k slots 4c..4c+3 (rows g, g + 8: a0, a1)
          w[i].a[m][2 + h] = v.y;  // k slots 16+4c.. (a2, a3)
          if constexpr (D == WeightFormat::Q8_0) w[i].wd[m][h] = __half2float(row_d[m][h][kb]);
        }
    }
  };
  // Activations of chunk ch into buffer buf: zeros past n_tokens and the split.
  auto copy_activations = [&](int64_t ch, int buf) {
    const int64_t kb0 = kb_begin + ch * KC;
    for (int i = threadIdx.x; i < NT * KC * 2; i += kThreads) {
      const int half = i % 2, k = (i / 2) % KC, t = i / (2 * KC);
      const bool valid = t < n_tokens && kb0 + k < kb_end;
      copy_async<16>(&xs[buf][k][t][16 * half], valid ? xq + t * cols + (kb0 + k) * kBlock + 16 * half : xq, valid);
    }
    for (int i = threadIdx.x; i < NT * KC; i += kThreads) {
      const int k = i % KC, t = i / KC;
      const bool valid = t < n_tokens && kb0 + k < kb_end;
      copy_async<4>(&ds[buf][k][t], valid ? xd + t * n_blocks + kb0 + k : xd, valid);
    }
    copies_commit();
  };

  float acc[kTiles][NJ][4];
#pragma unroll
  for (int m = 0; m < kTiles; ++m)
#pragma unroll
    for (int j = 0; j < NJ; ++j)
#pragma unroll
      for (int i = 0; i < 4; ++i) acc[m][j][i] = 0.0f;

  auto multiply = [&](const BlockLoad (&w)[KC], int64_t ch, int buf) {
#pragma unroll
    for (int i = 0; i < KC; ++i) {
      if (kb_begin + ch * KC + i >= kb_end) break;
#pragma unroll
      for (int j = 0; j < NJ; ++j) {
        // Token 8j + g's k = 8c..8c+7 (B), the scales of tokens 8j + 2c, 8j + 2c + 1.
        const int2 b = *reinterpret_cast<const int2*>(&xs[buf][i][8 * j + g][8 * c]);
        const float2 dx = *reinterpret_cast<const float2*>(&ds[buf][i][8 * j + 2 * c]);
#pragma unroll
        for (int m = 0; m < kTiles; ++m) {
          int p[4];
          mma_s8(p, w[i].a[m], b.x, b.y);
#pragma unroll
          for (int h = 0; h < 2; ++h) {
            // p[2h + e]: row g + 8h of tile m, token 8j + 2c + e.
            const float s0 = D == WeightFormat::Q8_0 ? w[i].wd[m][h] * dx.x : dx.x;
            const float s1 = D == WeightFormat::Q8_0 ? w[i].wd[m][h] * dx.y : dx.y;
            acc[m][j][2 * h] = fmaf(__int_as_float(p[2 * h]) - kMagic, s0, acc[m][j][2 * h]);
            acc[m][j][2 * h + 1] = fmaf(__int_as_float(p[2 * h + 1]) - kMagic, s1, acc[m][j][2 * h + 1]);
          }
        }
      }
    }
  };
  // Chunk ch (weights in cur, activations in buffer buf) while chunk ch + 1
  // arrives in next and buffer buf ^ 1.
  auto step = [&](const BlockLoad (&cur)[KC], BlockLoad (&next)[KC], int64_t ch, int buf) {
    if (ch + 1 < n_chunks) {
      copy_activations(ch + 1, buf ^ 1);
      load_weights(next, ch + 1);
      copies_wait<1>();
    } else {
      copies_wait<0>();
    }
    __syncthreads();
    multiply(cur, ch, buf);
    __syncthreads();  // buffer buf is free for chunk ch + 2
  };

  // The first chunk's weights load before the wait for the kernel before
  // (launch.h); the activations are that kernel's output.
  BlockLoad wa[KC], wb[KC];
  load_weights(wa, 0);
  let_successor_start();
  wait_for_predecessor();
  copy_activations(0, 0);
  for (int64_t ch = 0; ch < n_chunks; ch += 2) {
    step(wa, wb, ch, 0);
    if (ch + 1 < n_chunks) step(wb, wa, ch + 1, 1);
  }

  const bool split = gridDim.y > 1;
  float* out_base = split ? partial + blockIdx.y * n_tokens * rows : y;
  const int64_t ld = split ? rows : ldy;
#pragma unroll
  for (int m = 0; m < kTiles; ++m)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int64_t r = r0 + 16 * m + 8 * h + g;
      if (r >= rows) continue;
      const float row_scale = D == WeightFormat::I8Row ? static_cast<const float*>(scales)[r] : 1.0f;
#pragma unroll
      for (int j = 0; j < NJ; ++j)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const int64_t t = 8 * j + 2 * c + e;
          if (t >= n_tokens) continue;
          const float s = D == WeightFormat::I8Row ? acc[m][j][2 * h + e] * row_scale : acc[m][j][2 * h + e];
          float* out = out_base + t * ld + r;
          *out = split ? s : accumulate_into ? *out + s : s;
        }
    }
}

// y[t, r] (+)= sum over s of partial[s, t, r], s in order.
__global__ void add_splits_kernel(const float* __restrict__ partial, int splits, int64_t n_tokens, int64_t rows,
                                  float* __restrict__ y, int64_t ldy, bool accumulate_into) {
  let_successor_start();
  wait_for_predecessor();
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n_tokens * rows) return;
  float s = partial[i];
  for (int k = 1; k < splits; ++k) s += partial[k * n_tokens * rows + i];
  float* out = y + (i / rows) * ldy + i % rows;
  *out = accumulate_into ? *out + s : s;
}

template <WeightFormat D, int NJ = 1>
void launch_pass(int nj, dim3 grid, const DeviceMatrix& w, const int8_t* xq, const float* xd, int64_t n_tokens,
                 float* y, int64_t ldy, bool accumulate, float* partial, cudaStream_t stream) {
  if constexpr (NJ <= kMaxTiles) {
    if (nj != NJ) {
      launch_pass<D, NJ + 1>(nj, grid, w, xq, xd, n_tokens, y, ldy, accumulate, partial, stream);
      return;
    }
    launch(gemm_q8_kernel<D, NJ>, grid, kThreads, stream, static_cast<const int8_t*>(w.data), w.scales, w.rows,
           w.cols, xq, xd, n_tokens, y, ldy, accumulate, partial);
  }
}

}  // namespace

bool gemm_q8_supported(int device) {
  int major = 0;
  TANDEM_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
  return major >= 8;
}

int gemm_q8_splits(int64_t rows, int64_t cols, int sm_count) {
  // Enough blocks for four on every SM (three or four fit, by registers: a
  // block's 4 warps alone cannot keep enough loads in flight), each split
  // keeping at least 8 blocks of 32 values.
  const int64_t groups = (rows + kRows - 1) / kRows;
  const int64_t want = (4 * static_cast<int64_t>(sm_count) + groups - 1) / groups;
  const int64_t most = std::max<int64_t>(1, cols / kBlock / 8);
  return static_cast<int>(std::clamp<int64_t>(want, 1, std::min<int64_t>(most, 16)));
}

int64_t gemm_q8_workspace_floats(int64_t rows, int64_t cols, int sm_count) {
  const int splits = gemm_q8_splits(rows, cols, sm_count);
  return splits > 1 ? splits * 8 * kMaxTiles * rows : 0;
}

void gemm_q8(const DeviceMatrix& w, const int8_t* xq, const float* xd, int64_t n_tokens, float* y, int64_t ldy,
             bool accumulate, int sm_count, float* workspace, cudaStream_t stream) {
  check(gemv_takes_quantized_input(w.format), "internal: gemm_q8 takes Q8_0 or int8-row weights");
  check(w.cols % kBlock == 0, "internal: the 8-bit GEMM needs cols to be a multiple of 32");
  const int splits = gemm_q8_splits(w.rows, w.cols, sm_count);
  check(splits == 1 || workspace != nullptr, "internal: gemm_q8 needs a workspace for this shape");
  const dim3 grid(static_cast<unsigned>((w.rows + kRows - 1) / kRows), static_cast<unsigned>(splits));
  constexpr int64_t kPass = 8 * kMaxTiles;
  for (int64_t t0 = 0; t0 < n_tokens; t0 += kPass) {
    const int64_t nt = std::min(kPass, n_tokens - t0);
    const int nj = static_cast<int>((nt + 7) / 8);
    const int8_t* q = xq + t0 * w.cols;
    const float* d = xd + t0 * (w.cols / kBlock);
    float* yp = y + t0 * ldy;
    if (w.format == WeightFormat::Q8_0)
      launch_pass<WeightFormat::Q8_0>(nj, grid, w, q, d, nt, yp, ldy, accumulate, workspace, stream);
    else
      launch_pass<WeightFormat::I8Row>(nj, grid, w, q, d, nt, yp, ldy, accumulate, workspace, stream);
    if (splits > 1) {
      const int64_t n = nt * w.rows;
      launch(add_splits_kernel, dim3(static_cast<unsigned>((n + 255) / 256)), 256, stream,
             static_cast<const float*>(workspace), splits, nt, w.rows, yp, ldy, accumulate);
    }
  }
  TANDEM_CUDA_CHECK(cudaGetLastError());
}

}  // namespace tandem::cuda
