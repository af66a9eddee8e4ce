// Decode batches on 8-bit weights (Q8_0 and int8 rows) on int8 tensor
// cores: the quantized activations of gemv_q8 (32 values to an int8 block
// with an f32 scale) against the weights as they are stored, one m16n8k32
// product per 32-value block, so that each weight is read from memory once
// for up to 64 tokens. The dp4a GEMV takes at most 8 tokens a pass and
// re-reads the weights for every 8.
//
// Layout. A block owns 128 rows, 32 to each of its 4 row warps (two 16-row
// tiles); from 9 tokens on, a second set of 4 warps takes the second half
// of the tokens on the same rows (more warps to hide the tensor cores'
// latency, half the sums a thread). The block walks its columns in chunks
// of kChunk 32-value blocks. Each chunk's
// weights (128 bytes of each row: whole lines where the columns are a
// multiple of 128), their Q8_0 scales and the
// tokens' activations are copied asynchronously into one of kStages
// shared-memory stages, kStages - 1 chunks ahead of the one being
// multiplied. Each thread keeps its tiles' (row, token) sums in f32: per
// 32-value block, the exact int32 product is scaled by the weight's and the
// token's scale and added. Where the row groups alone would leave SMs idle,
// the columns split among blocks too (grid.y): each split writes its sums
// to a workspace and a second kernel adds them in split order. The order of
// a (row, token) sum depends on the matrix shape and the GPU only, never on
// how many tokens a launch takes.
//
// Fragments (PTX m16n8k32, s8): thread (group g = lane / 4, c = lane % 4)
// holds A's rows g and g + 8 at k = 4c..4c+3 and 16+4c..16+4c+3, and B's
// column (token) g at the same k. A dot product does not depend on the
// order of k, so both operands use k = 8c..8c+7 of memory for those eight
// slots: one 8-byte shared-memory load per row and per token.
#include <cuda_fp16.h>

#include <algorithm>

#include "backends/cuda/cuda_check.h"
#include "backends/cuda/kernels.h"
#include "backends/cuda/launch.h"

namespace tandem::cuda {
namespace {

constexpr int kWarps = 4;                  // row warps
constexpr int kTiles = 2;                  // 16-row tiles per warp
constexpr int kWarpRows = 16 * kTiles;     // 32
constexpr int kRows = kWarps * kWarpRows;  // rows per block: 128
constexpr int kMaxTiles = 8;               // 8-token tiles per pass: 64 tokens
constexpr int kBlock = 32;                 // values per scale
constexpr int kChunk = 4;                  // 32-value blocks per stage
constexpr int kStages = 3;
// A row's chunk in shared memory: 128 bytes, padded to 160 so that the 4
// rows a half-warp's 8-byte loads read fall in distinct banks.
constexpr int kRowStride = kChunk * kBlock + 32;

// The int32 products reach f32 without a conversion instruction (a
// quarter-rate one): the product starts from the bits of 1.5 * 2^23, so
// that its bits are those of the float 1.5 * 2^23 + product, exact while
// |product| < 2^22 (32 * 128 * 128 = 2^19 at most), and one subtraction leaves the
// product.
constexpr int kMagicBits = 0x4B400000;
constexpr float kMagic = 12582912.0f;  // 1.5 * 2^23

// One stage of shared memory, for NT tokens.
template <int NT>
struct Stage {
  int8_t w[kRows][kRowStride];        // the block's rows, kChunk blocks of 32 weights
  __half wd[kRows][kChunk];           // their Q8_0 scales
  int8_t x[kChunk][NT][kBlock];       // the tokens' quantized activations
  float xd[kChunk][NT];               // and their scales
};
template <int NJ>
constexpr size_t shared_bytes() {
  return sizeof(Stage<8 * NJ>) * kStages;
}
// Warps sharing a block's rows, each with its share of the NJ token tiles.
template <int NJ>
__host__ __device__ constexpr int token_groups() {
  return NJ >= 2 ? 2 : 1;
}
template <int NJ>
__host__ __device__ constexpr int threads() {
  return kWarps * 32 * token_groups<NJ>();
}

// d = a b + kMagicBits for one m16n8k32 tile (s8 inputs, s32 result).
__device__ __forceinline__ void mma_s8(int (&d)[4], const int (&a)[4], int b0, int b1) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile(
      "mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%10, %10, %10, %10};\n"
      : "=r"(d[0]), "=r"(d[1]), "=r"(d[2]), "=r"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1), "r"(kMagicBits));
#else
  __trap();  // gemm_q8_init() refuses GPUs before sm_80
#endif
}

// Asynchronous copies to shared memory (sm_80): kBytes from src, zeros
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

// Split blockIdx.y of gridDim.y: [begin, end) in 32-value blocks, split
// boundaries on whole chunks.
__device__ __forceinline__ void split_range(int64_t n_blocks, int64_t& begin, int64_t& end) {
  begin = n_blocks * blockIdx.y / gridDim.y / kChunk * kChunk;
  end = blockIdx.y + 1 == gridDim.y ? n_blocks : n_blocks * (blockIdx.y + 1) / gridDim.y / kChunk * kChunk;
}

// For NJ * 8 tokens from 0 (those below n_tokens), x given as (xq, xd):
// with one split, y[t, r] (+)= W[r, :] . x[t, :]; with several, split s
// writes its part of the sum to partial[s, t, r] (partial: [splits,
// n_tokens, rows]).
template <WeightFormat D, int NJ>
__global__ void __launch_bounds__(threads<NJ>())
    gemm_q8_kernel(const int8_t* __restrict__ weights, const void* __restrict__ scales, int64_t rows, int64_t cols,
                   const int8_t* __restrict__ xq, const float* __restrict__ xd, int64_t n_tokens, float* __restrict__ y,
                   int64_t ldy, bool accumulate_into, float* __restrict__ partial) {
  constexpr int NT = 8 * NJ;
  constexpr int kThreads = threads<NJ>();
  constexpr int JW = (NJ + token_groups<NJ>() - 1) / token_groups<NJ>();  // token tiles a warp
  extern __shared__ __align__(16) unsigned char shared_raw[];
  Stage<NT>* stages = reinterpret_cast<Stage<NT>*>(shared_raw);

  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32 % kWarps;
  const int j0 = threadIdx.x / (32 * kWarps) * JW;  // this warp's first token tile
  const int g = lane / 4, c = lane % 4;
  const int64_t block_r0 = static_cast<int64_t>(blockIdx.x) * kRows;
  const int64_t n_blocks = cols / kBlock;
  int64_t kb_begin, kb_end;
  split_range(n_blocks, kb_begin, kb_end);
  const int64_t n_chunks = (kb_end - kb_begin + kChunk - 1) / kChunk;

  // Weights (and Q8_0 scales) of chunk ch into stage st: 16-byte pieces,
  // 8 threads to a row's 128 bytes. Rows past the matrix repeat its last
  // row; blocks past the split are zeros.
  auto copy_weights = [&](int64_t ch, int st) {
    const int64_t kb0 = kb_begin + ch * kChunk;
    constexpr int kPieces = kBlock / 16 * kChunk;  // per row
    for (int i = threadIdx.x; i < kRows * kPieces; i += kThreads) {
      const int r = i / kPieces, p = i % kPieces;
      const int64_t row = min(block_r0 + r, rows - 1);
      const bool valid = kb0 + p / 2 < kb_end;
      copy_async<16>(&stages[st].w[r][16 * p], valid ? weights + row * cols + kb0 * kBlock + 16 * p : weights, valid);
    }
    if constexpr (D == WeightFormat::Q8_0) {
      // Scales in pairs of blocks (4 bytes; n_blocks is even, chunks start even).
      const __half* sd = static_cast<const __half*>(scales);
      for (int i = threadIdx.x; i < kRows * kChunk / 2; i += kThreads) {
        const int r = i / (kChunk / 2), p = i % (kChunk / 2);
        const int64_t row = min(block_r0 + r, rows - 1);
        const bool valid = kb0 + 2 * p < kb_end;
        copy_async<4>(&stages[st].wd[r][2 * p], valid ? sd + row * n_blocks + kb0 + 2 * p : sd, valid);
      }
    }
  };
  // Activations of chunk ch into stage st: zeros past n_tokens and the split.
  auto copy_activations = [&](int64_t ch, int st) {
    const int64_t kb0 = kb_begin + ch * kChunk;
    for (int i = threadIdx.x; i < NT * kChunk * 2; i += kThreads) {
      const int half = i % 2, k = (i / 2) % kChunk, t = i / (2 * kChunk);
      const bool valid = t < n_tokens && kb0 + k < kb_end;
      copy_async<16>(&stages[st].x[k][t][16 * half], xq + (valid ? t * cols + (kb0 + k) * kBlock + 16 * half : 0),
                     valid);
    }
    for (int i = threadIdx.x; i < NT * kChunk; i += kThreads) {
      const int k = i % kChunk, t = i / kChunk;
      const bool valid = t < n_tokens && kb0 + k < kb_end;
      copy_async<4>(&stages[st].xd[k][t], xd + (valid ? t * n_blocks + kb0 + k : 0), valid);
    }
  };

  float acc[kTiles][JW][4];
#pragma unroll
  for (int m = 0; m < kTiles; ++m)
#pragma unroll
    for (int j = 0; j < JW; ++j)
#pragma unroll
      for (int i = 0; i < 4; ++i) acc[m][j][i] = 0.0f;

  auto multiply = [&](int64_t ch, int st) {
    const Stage<NT>& s = stages[st];
#pragma unroll
    for (int i = 0; i < kChunk; ++i) {
      if (kb_begin + ch * kChunk + i >= kb_end) break;
      int a[kTiles][4];
      float wd[kTiles][2];
#pragma unroll
      for (int m = 0; m < kTiles; ++m)
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const int r = warp * kWarpRows + 16 * m + 8 * h + g;
          const int2 v = *reinterpret_cast<const int2*>(&s.w[r][i * kBlock + 8 * c]);
          a[m][h] = v.x;      // k slots 4c..4c+3 (rows g, g + 8: a0, a1)
          a[m][2 + h] = v.y;  // k slots 16+4c.. (a2, a3)
          wd[m][h] = D == WeightFormat::Q8_0 ? __half2float(s.wd[r][i]) : 1.0f;
        }
#pragma unroll
      for (int jj = 0; jj < JW; ++jj) {
        const int j = j0 + jj;
        if (JW * token_groups<NJ>() != NJ && j >= NJ) break;
        // Token 8j + g's k = 8c..8c+7 (B), the scales of tokens 8j + 2c, 8j + 2c + 1.
        const int2 b = *reinterpret_cast<const int2*>(&s.x[i][8 * j + g][8 * c]);
        const float2 dx = *reinterpret_cast<const float2*>(&s.xd[i][8 * j + 2 * c]);
#pragma unroll
        for (int m = 0; m < kTiles; ++m) {
          int p[4];
          mma_s8(p, a[m], b.x, b.y);
#pragma unroll
          for (int h = 0; h < 2; ++h) {
            // p[2h + e]: row g + 8h of tile m, token 8j + 2c + e.
            const float s0 = D == WeightFormat::Q8_0 ? wd[m][h] * dx.x : dx.x;
            const float s1 = D == WeightFormat::Q8_0 ? wd[m][h] * dx.y : dx.y;
            acc[m][jj][2 * h] = fmaf(__int_as_float(p[2 * h]) - kMagic, s0, acc[m][jj][2 * h]);
            acc[m][jj][2 * h + 1] = fmaf(__int_as_float(p[2 * h + 1]) - kMagic, s1, acc[m][jj][2 * h + 1]);
          }
        }
      }
    }
  };

  // The first stages' weights are copied before the wait for the kernel
  // before (launch.h), the activations after: group s holds stage s's
  // activations (group 0 also every early weight copy).
#pragma unroll
  for (int st = 0; st < kStages - 1; ++st)
    if (st < n_chunks) copy_weights(st, st);
  let_successor_start();
  wait_for_predecessor();
#pragma unroll
  for (int st = 0; st < kStages - 1; ++st) {
    if (st < n_chunks) copy_activations(st, st);
    copies_commit();
  }
  for (int64_t ch = 0; ch < n_chunks; ++ch) {
    copies_wait<kStages - 2>();  // chunk ch has arrived
    __syncthreads();             // for every thread; and chunk ch - 1's stage is free
    const int64_t next = ch + kStages - 1;
    if (next < n_chunks) {
      copy_weights(next, static_cast<int>(next % kStages));
      copy_activations(next, static_cast<int>(next % kStages));
    }
    copies_commit();
    multiply(ch, static_cast<int>(ch % kStages));
  }

  const bool split = gridDim.y > 1;
  float* out_base = split ? partial + blockIdx.y * n_tokens * rows : y;
  const int64_t ld = split ? rows : ldy;
#pragma unroll
  for (int m = 0; m < kTiles; ++m)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int64_t r = block_r0 + warp * kWarpRows + 16 * m + 8 * h + g;
      if (r >= rows) continue;
      const float row_scale = D == WeightFormat::I8Row ? static_cast<const float*>(scales)[r] : 1.0f;
#pragma unroll
      for (int jj = 0; jj < JW; ++jj)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const int64_t t = 8 * (j0 + jj) + 2 * c + e;
          if (t >= n_tokens) continue;
          const float v = D == WeightFormat::I8Row ? acc[m][jj][2 * h + e] * row_scale : acc[m][jj][2 * h + e];
          float* out = out_base + t * ld + r;
          *out = split ? v : accumulate_into ? *out + v : v;
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

// Calls f(gemm_q8_kernel<D, NJ>, shared_bytes<NJ>(), threads<NJ>()) for
// the nj asked.
template <WeightFormat D, int NJ = 1, typename F>
void with_kernel(int nj, F&& f) {
  if constexpr (NJ <= kMaxTiles) {
    if (nj == NJ) f(gemm_q8_kernel<D, NJ>, shared_bytes<NJ>(), threads<NJ>());
    else with_kernel<D, NJ + 1>(nj, std::forward<F>(f));
  }
}

}  // namespace

bool gemm_q8_init(int device) {
  int major = 0;
  TANDEM_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
  if (major < 8) return false;
  int current = 0;
  TANDEM_CUDA_CHECK(cudaGetDevice(&current));
  TANDEM_CUDA_CHECK(cudaSetDevice(device));
  for (int nj = 1; nj <= kMaxTiles; ++nj) {
    auto allow = [](auto kernel, size_t bytes, int) {
      TANDEM_CUDA_CHECK(
          cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)));
    };
    with_kernel<WeightFormat::Q8_0>(nj, allow);
    with_kernel<WeightFormat::I8Row>(nj, allow);
  }
  TANDEM_CUDA_CHECK(cudaSetDevice(current));
  return true;
}

bool gemm_q8_takes(const DeviceMatrix& w) {
  // Q8_0 scales are copied in pairs of 32-value blocks.
  return gemv_takes_quantized_input(w.format) && w.cols % (2 * kBlock) == 0;
}

int gemm_q8_splits(int64_t rows, int64_t cols, int sm_count) {
  // Enough blocks for three on every SM (as many as their shared memory
  // lets in), each split keeping at least two chunks.
  const int64_t groups = (rows + kRows - 1) / kRows;
  const int64_t want = (3 * static_cast<int64_t>(sm_count) + groups - 1) / groups;
  const int64_t most = std::max<int64_t>(1, cols / kBlock / (2 * kChunk));
  return static_cast<int>(std::clamp<int64_t>(want, 1, std::min<int64_t>(most, 16)));
}

int64_t gemm_q8_workspace_floats(int64_t rows, int64_t cols, int sm_count) {
  const int splits = gemm_q8_splits(rows, cols, sm_count);
  return splits > 1 ? splits * 8 * kMaxTiles * rows : 0;
}

void gemm_q8(const DeviceMatrix& w, const int8_t* xq, const float* xd, int64_t n_tokens, float* y, int64_t ldy,
             bool accumulate, int sm_count, float* workspace, cudaStream_t stream) {
  check(gemm_q8_takes(w), "internal: gemm_q8 takes Q8_0 or int8-row weights of a multiple of 64 columns");
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
    auto run = [&](auto kernel, size_t bytes, int n_threads) {
      launch_with_shared(kernel, grid, n_threads, bytes, stream, static_cast<const int8_t*>(w.data), w.scales, w.rows,
                         w.cols, q, d, nt, yp, ldy, accumulate, workspace);
    };
    if (w.format == WeightFormat::Q8_0) with_kernel<WeightFormat::Q8_0>(nj, run);
    else with_kernel<WeightFormat::I8Row>(nj, run);
    if (splits > 1) {
      const int64_t n = nt * w.rows;
      launch(add_splits_kernel, dim3(static_cast<unsigned>((n + 255) / 256)), 256, stream,
             static_cast<const float*>(workspace), splits, nt, w.rows, yp, ldy, accumulate);
    }
  }
  TANDEM_CUDA_CHECK(cudaGetLastError());
}

}  // namespace tandem::cuda
