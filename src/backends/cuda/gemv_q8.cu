// The 8-bit decode GEMV (Q8_0 and int8-row weights) on quantized
// activations: x is quantized once per input, 32 values to an int8 block
// with an f32 scale, and each 16-byte weight load meets 16 bytes of x in
// four dp4a integer dot products. The float GEMV (gemv.cu) converts and
// multiplies every weight instead, which bounds it by instruction issue at
// about 60% of the memory bandwidth.
//
// Same block layout as gemv.cu (gemv_block.cuh).
#include <cuda_fp16.h>

#include <string>
#include <type_traits>

#include "backends/cuda/cuda_check.h"
#include "backends/cuda/gemv_block.cuh"
#include "backends/cuda/kernels.h"
#include "backends/cuda/launch.h"
#include "backends/cuda/peer_rows.cuh"
#include "backends/cuda/qkv_epilogue.cuh"
#include "backends/cuda/quantize_block.cuh"

namespace tandem::cuda {
namespace {

using gemv_block::kMaxTokens;
using gemv_block::kThreads;
using gemv_block::kUnroll;
constexpr int kBlock = 32;  // values per activation scale

// One warp per 32-value block of a token (quantize_block.cuh).
template <bool kSiluMul>
__global__ void quantize_kernel(const float* __restrict__ x, int64_t n_tokens, int64_t cols, int8_t* __restrict__ q,
                                float* __restrict__ d) {
  let_successor_start();
  wait_for_predecessor();
  const int64_t blocks_per_token = cols / kBlock;
  const int64_t b = static_cast<int64_t>(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
  if (b >= n_tokens * blocks_per_token) return;
  const int64_t t = b / blocks_per_token, c = (b % blocks_per_token) * kBlock + threadIdx.x % 32;
  float v;
  if constexpr (kSiluMul) {
    const float g = x[t * 2 * cols + c];
    v = g / (1.0f + __expf(-g)) * x[t * 2 * cols + cols + c];  // silu_mul_kernel's expression
  } else {
    v = x[t * cols + c];
  }
  const quantize_block::Scale s = quantize_block::block_scale<32>(fabsf(v), 0xffffffffu);
  q[t * cols + c] = quantize_block::quantize(v, s);
  if (threadIdx.x % 32 == 0) d[b] = s.d;
}

// Adds one 16-byte vector of each row (and, for Q8_0, the f16 scale of its
// 32-value block, loaded with it) times x into acc[row][token].
template <WeightFormat D, int NT, int R>
__device__ __forceinline__ void accumulate(const uint4 (&raw)[R], const __half (&wd)[R],
                                           int64_t vec, const int8_t* __restrict__ xq, const float* __restrict__ xd,
                                           int64_t cols, float (&acc)[R][NT]) {
  const int64_t block = vec / 2;  // 16 values per vector, 32 per scale
#pragma unroll
  for (int t = 0; t < NT; ++t) {
    const int4 xv = __ldg(reinterpret_cast<const int4*>(xq + t * cols) + vec);
    const float dx = __ldg(xd + t * (cols / kBlock) + block);
#pragma unroll
    for (int i = 0; i < R; ++i) {
      int s = __dp4a(static_cast<int>(raw[i].x), xv.x, 0);
      s = __dp4a(static_cast<int>(raw[i].y), xv.y, s);
      s = __dp4a(static_cast<int>(raw[i].z), xv.z, s);
      s = __dp4a(static_cast<int>(raw[i].w), xv.w, s);
      const float scale = D == WeightFormat::Q8_0 ? dx * __half2float(wd[i]) : dx;
      acc[i][t] = fmaf(static_cast<float>(s), scale, acc[i][t]);
    }
  }
}

// W[r, :] . x[t, :] for t < NT, x given as (xq, xd), for the block's R rows
// r = row_of(i) (a row past `rows` is read as the last one); before_wait()
// once the first weights are requested and after_wait() right after the
// wait (gemv_block::visit_vectors), then store(i, t, sum) once for each
// (int8 rows: the sum before the row's scale). U load slots a row.
template <WeightFormat D, int NT, int R, int U, typename RowOf, typename BeforeWait,
          typename Store, typename AfterWait>
__device__ __forceinline__ void gemv_q8_rows(const void* __restrict__ weights, const void* __restrict__ scales,
                                             int64_t rows, int64_t cols, const int8_t* __restrict__ xq,
                                             const float* __restrict__ xd, RowOf&& row_of, BeforeWait&& before_wait,
                                             Store&& store, AfterWait&& after_wait) {
  const int64_t n_vec = cols / 16;
  const uint4* row[R];
  const __half* row_scales[R];
#pragma unroll
  for (int i = 0; i < R; ++i) {
    const int64_t r = min(row_of(i), rows - 1);
    row[i] = reinterpret_cast<const uint4*>(weights) + r * n_vec;
    row_scales[i] = D == WeightFormat::Q8_0 ? static_cast<const __half*>(scales) + r * (cols / kBlock) : nullptr;
  }
  float acc[R][NT];
#pragma unroll
  for (int i = 0; i < R; ++i)
#pragma unroll
    for (int t = 0; t < NT; ++t) acc[i][t] = 0.0f;

  uint4 w[U][R];
  __half wd[U][R];
  gemv_block::visit_vectors<U>(
      n_vec,
      [&](int u, int64_t vec) {
#pragma unroll
        for (int i = 0; i < R; ++i) {
          w[u][i] = __ldcs(row[i] + vec);
          if constexpr (D == WeightFormat::Q8_0) wd[u][i] = row_scales[i][vec / 2];
        }
      },
      [&](int u, int64_t vec) { accumulate<D, NT, R>(w[u], wd[u], vec, xq, xd, cols, acc); }, before_wait,
      after_wait);
  gemv_block::reduce_rows<R, NT>(acc, store);
}

// y[t, r] (+)= W[r, :] . x[t, :] for t < NT; block b takes rows [b R, b R + R).
template <WeightFormat D, int NT, int R, int U>
__device__ __forceinline__ void gemv_q8_body(const void* __restrict__ weights, const void* __restrict__ scales,
                                             int64_t rows, int64_t cols, const int8_t* __restrict__ xq,
                                             const float* __restrict__ xd, float* __restrict__ y, int64_t ldy,
                                             bool accumulate_into) {
  const int64_t r0 = static_cast<int64_t>(blockIdx.x) * R;
  gemv_q8_rows<D, NT, R, U>(
      weights, scales, rows, cols, xq, xd, [&](int i) { return r0 + i; }, [] {},
      [&](int i, int t, float s) {
        const int64_t r = r0 + i;
        if constexpr (D == WeightFormat::I8Row) s *= static_cast<const float*>(scales)[min(r, rows - 1)];
        if (r < rows) {
          float* out = y + t * ldy + r;
          *out = accumulate_into ? *out + s : s;
        }
      },
      [] {});
}

// Rows of more than kThreads vectors (the FFN's down projection): two load
// slots a row, at most 128 registers a thread (ptxas's own choice; asking
// for "at least one block an SM" made it take 157 and run one block an SM,
// 20-25% slower end to end on an H100).
template <WeightFormat D, int NT, int R>
__global__ void __launch_bounds__(kThreads)
    gemv_q8_kernel(const void* __restrict__ weights, const void* __restrict__ scales, int64_t rows, int64_t cols,
                   const int8_t* __restrict__ xq, const float* __restrict__ xd, float* __restrict__ y, int64_t ldy,
                   bool accumulate_into) {
  gemv_q8_body<D, NT, R, kUnroll>(weights, scales, rows, cols, xq, xd, y, ldy, accumulate_into);
}

// One token over rows of at most kThreads vectors (4096 columns: q·k·v, o,
// gate·up, the LM head), one vector a thread: one load slot, which leaves
// room for three blocks an SM (78-80 registers) instead of two. Batch-1
// decode of the 8B shape on an H100 (docs/PERFORMANCE.md): int8 306.7 ->
// 313.4 tok/s, Q8_0 288.5 (273.8 before, an earlier session). The sums are
// the same: each thread adds the same vectors in the same order either way.
// kBlocksPerSm: the occupancy asked of the compiler (3, or 2 for 16-row
// blocks, launch_one_token_int8).
template <WeightFormat D, int NT, int R, int kBlocksPerSm = 3>
__global__ void __launch_bounds__(kThreads, kBlocksPerSm)
    gemv_q8_one_vector_kernel(const void* __restrict__ weights, const void* __restrict__ scales, int64_t rows,
                              int64_t cols, const int8_t* __restrict__ xq, const float* __restrict__ xd,
                              float* __restrict__ y, int64_t ldy, bool accumulate_into) {
  gemv_q8_body<D, NT, R, 1>(weights, scales, rows, cols, xq, xd, y, ldy, accumulate_into);
}

// The one-token q·k·v GEMV with qkv_finish at its end (qkv_epilogue.cuh):
// the one-vector kernel's sums, the block's rows placed as RoPE pairs.
template <WeightFormat D, int R, RopeLayout L>
__global__ void __launch_bounds__(kThreads, 3)
    gemv_q8_qkv_kernel(const void* __restrict__ weights, const void* __restrict__ scales, int64_t rows, int64_t cols,
                       const int8_t* __restrict__ xq, const float* __restrict__ xd, float* __restrict__ y,
                       QkvFinishArgs args, AttentionShape shape) {
  static_assert(R == qkv_epilogue::block_rows(D), "gemv_finishes_qkv checks heads against block_rows");
  __shared__ qkv_epilogue::Row<R, L, D == WeightFormat::I8Row> lane_row[R];
  gemv_q8_rows<D, 1, R, 1>(
      weights, scales, rows, cols, xq, xd,
      [&](int i) { return qkv_epilogue::block_row<R, L>(static_cast<int>(blockIdx.x), i, shape.head_dim); },
      [&] {
        if (threadIdx.x < R)
          lane_row[threadIdx.x].load(args, shape, static_cast<int>(blockIdx.x), static_cast<int>(threadIdx.x),
                                     static_cast<const float*>(scales));
      },
      [&](int i, int, float s) { lane_row[i].finish(args, shape, s, y); }, [] {});
}

// gemv_q8_body at one token without accumulation, each row's value also
// stored into the other ranks' peer rows (peer_rows.cuh) with the slot's
// next epoch. U: load slots a row.
template <WeightFormat D, int R, int U>
__device__ __forceinline__ void gemv_q8_peer_body(const void* __restrict__ weights, const void* __restrict__ scales,
                                                  int64_t rows, int64_t cols, const int8_t* __restrict__ xq,
                                                  const float* __restrict__ xd, float* __restrict__ y,
                                                  const PeerRows& peers) {
  const int64_t r0 = static_cast<int64_t>(blockIdx.x) * R;
  uint32_t epoch = 0;  // read by the lanes that store, right after the wait
  gemv_q8_rows<D, 1, R, U>(
      weights, scales, rows, cols, xq, xd, [&](int i) { return r0 + i; }, [] {},
      [&](int i, int, float s) {
        const int64_t r = r0 + i;
        if constexpr (D == WeightFormat::I8Row) s *= static_cast<const float*>(scales)[min(r, rows - 1)];
        if (r < rows) {
          y[r] = s;
          peer_rows::store(peers, epoch, r, s);
        }
      },
      [&] {
        if (threadIdx.x < R) epoch = *peers.epoch + 1;
      });
}

// Rows of at most kThreads vectors, as gemv_q8_one_vector_kernel.
template <WeightFormat D, int R, int kBlocksPerSm>
__global__ void __launch_bounds__(kThreads, kBlocksPerSm)
    gemv_q8_peer_one_vector_kernel(const void* __restrict__ weights, const void* __restrict__ scales, int64_t rows,
                                   int64_t cols, const int8_t* __restrict__ xq, const float* __restrict__ xd,
                                   float* __restrict__ y, PeerRows peers) {
  gemv_q8_peer_body<D, R, 1>(weights, scales, rows, cols, xq, xd, y, peers);
}

// Wider rows, as gemv_q8_kernel (two load slots a row).
template <WeightFormat D, int R>
__global__ void __launch_bounds__(kThreads)
    gemv_q8_peer_kernel(const void* __restrict__ weights, const void* __restrict__ scales, int64_t rows, int64_t cols,
                        const int8_t* __restrict__ xq, const float* __restrict__ xd, float* __restrict__ y,
                        PeerRows peers) {
  gemv_q8_peer_body<D, R, kUnroll>(weights, scales, rows, cols, xq, xd, y, peers);
}

// Rows per block of the one-token GEMV (launch_group).
template <WeightFormat D>
constexpr int one_token_rows() {
  return D == WeightFormat::I8Row ? 8 : gemv_block::kRowsPerBlock;
}

// Blocks the current GPU holds at once at `per_sm` blocks an SM (the
// one-vector kernels reach their launch bounds' occupancy: their registers
// fit and they use little shared memory).
int64_t resident_blocks(int per_sm) {
  int device = 0, sms = 0;
  TANDEM_CUDA_CHECK(cudaGetDevice(&device));
  TANDEM_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  return int64_t{sms} * per_sm;
}

// The share of `waves` whole waves of `slots` blocks that `blocks` blocks use.
double wave_fill(int64_t blocks, int64_t slots) {
  const int64_t waves = (blocks + slots - 1) / slots;
  return static_cast<double>(blocks) / static_cast<double>(waves * slots);
}

// One token of int8 rows over at most 4096 columns: 8 rows a block at three
// blocks an SM, or 16 at two where the grid of 8-row blocks spans less
// than two waves of the GPU's resident blocks and 16-row blocks fill their
// waves better (the 4096 x 4096 o projection on an H100: 512 blocks over
// 396 slots, against 256 over 264). A row's sum does not depend on it.
constexpr int kPerSm8 = 3, kPerSm16 = 2;
bool one_token_int8_takes_16_rows(int64_t rows) {
  const int64_t blocks8 = (rows + 7) / 8, blocks16 = (rows + 15) / 16;
  const int64_t slots8 = resident_blocks(kPerSm8), slots16 = resident_blocks(kPerSm16);
  return blocks8 < 2 * slots8 && wave_fill(blocks16, slots16) > wave_fill(blocks8, slots8) + 0.1;
}

void launch_one_token_int8(const DeviceMatrix& w, const int8_t* xq, const float* xd, float* y, int64_t ldy,
                           bool accumulate, cudaStream_t stream) {
  constexpr auto k8 = gemv_q8_one_vector_kernel<WeightFormat::I8Row, 1, 8, kPerSm8>;
  constexpr auto k16 = gemv_q8_one_vector_kernel<WeightFormat::I8Row, 1, 16, kPerSm16>;
  const int64_t blocks8 = (w.rows + 7) / 8, blocks16 = (w.rows + 15) / 16;
  if (one_token_int8_takes_16_rows(w.rows)) {
    launch(k16, dim3(static_cast<unsigned>(blocks16)), kThreads, stream, w.data, w.scales, w.rows, w.cols, xq, xd, y,
           ldy, accumulate);
  } else {
    launch(k8, dim3(static_cast<unsigned>(blocks8)), kThreads, stream, w.data, w.scales, w.rows, w.cols, xq, xd, y,
           ldy, accumulate);
  }
}

template <WeightFormat D>
void launch_group(const DeviceMatrix& w, const int8_t* xq, const float* xd, int nt, float* y, int64_t ldy,
                  bool accumulate, cudaStream_t stream) {
  if constexpr (D == WeightFormat::I8Row) {
    if (nt == 1 && w.cols / 16 <= kThreads) return launch_one_token_int8(w, xq, xd, y, ldy, accumulate, stream);
  }
  gemv_block::with_token_count(nt, [&](auto n) {
    constexpr int NT = decltype(n)::value;
    // Rows per block: 8 for int8 rows at 1-2 tokens (measured on an H100:
    // 16% faster for gate_up at 2 tokens, within 3% elsewhere; one token
    // over at most 4096 columns took launch_one_token_int8 above), else 4
    // (Q8_0, with its scales, slows down with 8). A row's sum does not
    // depend on it.
    constexpr int R = NT == 1 ? one_token_rows<D>() : D == WeightFormat::I8Row && NT <= 2 ? 8 : gemv_block::kRowsPerBlock;
    const dim3 grid(static_cast<unsigned>((w.rows + R - 1) / R));
    // One token (measured; with more, three blocks an SM make ptxas spill
    // for int8 at 2 and 7-8 tokens).
    if (NT == 1 && w.cols / 16 <= kThreads) {
      launch(gemv_q8_one_vector_kernel<D, NT, R>, grid, kThreads, stream, w.data, w.scales, w.rows, w.cols, xq, xd,
             y, ldy, accumulate);
      return;
    }
    launch(gemv_q8_kernel<D, NT, R>, grid, kThreads, stream, w.data, w.scales, w.rows, w.cols, xq, xd, y, ldy,
           accumulate);
  });
}

template <bool kSiluMul>
void quantize(const float* x, int64_t n_tokens, int64_t cols, int8_t* q, float* d, cudaStream_t stream) {
  check(cols % kBlock == 0, "internal: activations quantize in blocks of 32 values");
  const int64_t blocks = n_tokens * (cols / kBlock);
  if (blocks == 0) return;
  constexpr int kWarpsPerLaunchBlock = 8;
  const dim3 grid(static_cast<unsigned>((blocks + kWarpsPerLaunchBlock - 1) / kWarpsPerLaunchBlock));
  launch(quantize_kernel<kSiluMul>, grid, kWarpsPerLaunchBlock * 32, stream, x, n_tokens, cols, q, d);
}

}  // namespace

void gemv_q8_qkv(const DeviceMatrix& w, const int8_t* xq, const float* xd, float* y, const QkvFinishArgs& args,
                 const AttentionShape& shape, cudaStream_t stream) {
  check(gemv_takes_quantized_input(w.format) && gemv_finishes_qkv(w, y, args, shape),
        "internal: gemv_q8_qkv takes one 8-bit q·k·v product that gemv_finishes_qkv accepts");
  auto run = [&](auto format) {
    constexpr WeightFormat D = decltype(format)::value;
    constexpr int R = one_token_rows<D>();
    const dim3 grid(static_cast<unsigned>(w.rows / R));
    if (args.rope_layout == RopeLayout::Interleaved)
      launch(gemv_q8_qkv_kernel<D, R, RopeLayout::Interleaved>, grid, kThreads, stream, w.data, w.scales, w.rows,
             w.cols, xq, xd, y, args, shape);
    else
      launch(gemv_q8_qkv_kernel<D, R, RopeLayout::HalfSplit>, grid, kThreads, stream, w.data, w.scales, w.rows,
             w.cols, xq, xd, y, args, shape);
  };
  if (w.format == WeightFormat::Q8_0) run(std::integral_constant<WeightFormat, WeightFormat::Q8_0>{});
  else run(std::integral_constant<WeightFormat, WeightFormat::I8Row>{});
  TANDEM_CUDA_CHECK(cudaGetLastError());
}

bool gemv_q8_to_peers_takes(const DeviceMatrix& w) {
  return gemv_takes_quantized_input(w.format) && w.cols % kBlock == 0;
}

// The kernels and rows a block of the one-token GEMV (launch_group and
// launch_one_token_int8), so that y's values have gemv_q8's bits.
void gemv_q8_to_peers(const DeviceMatrix& w, const int8_t* xq, const float* xd, float* y, const PeerRows& peers,
                      cudaStream_t stream) {
  check(gemv_q8_to_peers_takes(w) && peers.n_peers > 0 && peers.n_peers <= PeerRows::kMaxPeers,
        "internal: gemv_q8_to_peers takes 8-bit weights and at least one peer");
  const bool one_vector = w.cols / 16 <= kThreads;
  auto go = [&](auto kernel, int rows_per_block) {
    const dim3 grid(static_cast<unsigned>((w.rows + rows_per_block - 1) / rows_per_block));
    launch(kernel, grid, kThreads, stream, w.data, w.scales, w.rows, w.cols, xq, xd, y, peers);
  };
  if (w.format == WeightFormat::I8Row) {
    constexpr WeightFormat D = WeightFormat::I8Row;
    if (!one_vector) go(gemv_q8_peer_kernel<D, one_token_rows<D>()>, one_token_rows<D>());
    else if (one_token_int8_takes_16_rows(w.rows)) go(gemv_q8_peer_one_vector_kernel<D, 16, kPerSm16>, 16);
    else go(gemv_q8_peer_one_vector_kernel<D, 8, kPerSm8>, 8);
  } else {
    constexpr WeightFormat D = WeightFormat::Q8_0;
    constexpr int R = one_token_rows<D>();
    if (one_vector) go(gemv_q8_peer_one_vector_kernel<D, R, 3>, R);
    else go(gemv_q8_peer_kernel<D, R>, R);
  }
  TANDEM_CUDA_CHECK(cudaGetLastError());
}

bool gemv_takes_quantized_input(WeightFormat format) {
  return format == WeightFormat::Q8_0 || format == WeightFormat::I8Row;
}

void quantize_activations(const float* x, int64_t n_tokens, int64_t cols, int8_t* q, float* d, cudaStream_t stream) {
  quantize<false>(x, n_tokens, cols, q, d, stream);
}

void quantize_silu_mul(const float* gate_up, int64_t n_tokens, int64_t cols, int8_t* q, float* d, cudaStream_t stream) {
  quantize<true>(gate_up, n_tokens, cols, q, d, stream);
}

void gemv_q8(const DeviceMatrix& w, const int8_t* xq, const float* xd, int64_t n_tokens, float* y, int64_t ldy,
             bool accumulate, cudaStream_t stream) {
  check(gemv_takes_quantized_input(w.format), "internal: gemv_q8 takes Q8_0 or int8-row weights");
  check(w.cols % kBlock == 0, "internal: the 8-bit GEMV needs cols to be a multiple of 32");
  for (int64_t t0 = 0; t0 < n_tokens; t0 += kMaxTokens) {
    const int nt = static_cast<int>(std::min<int64_t>(kMaxTokens, n_tokens - t0));
    const int8_t* q = xq + t0 * w.cols;
    const float* d = xd + t0 * (w.cols / kBlock);
    float* yg = y + t0 * ldy;
    if (w.format == WeightFormat::Q8_0) launch_group<WeightFormat::Q8_0>(w, q, d, nt, yg, ldy, accumulate, stream);
    else launch_group<WeightFormat::I8Row>(w, q, d, nt, yg, ldy, accumulate, stream);
  }
  TANDEM_CUDA_CHECK(cudaGetLastError());
}

}  // namespace tandem::cuda
