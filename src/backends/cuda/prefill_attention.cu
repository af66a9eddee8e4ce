// Causal attention of prompt tokens on tensor cores, flash-attention style.
//
// One block of 4 warps takes a query tile (up to 64 consecutive prompt
// tokens of one sequence) and one query head. Each warp owns 16 query rows
// and keeps them as mma A fragments; the block walks the sequence's cached
// positions [0, kv_len) in tiles of 64. K and V tiles are copied from the
// paged cache into shared memory with cp.async, two stages deep, so that
// the next tile's copy runs under this tile's arithmetic, from cache rows
// that the block looks up a tile further ahead. Per key tile a warp computes
// S = q k^T with mma.sync m16n8k16 (f16 in, f32 out), keeps an online
// softmax in registers (each row's four lanes share its max and sum), and
// adds P V with P rounded to f16, straight from the S fragments. The B
// fragments come from ldmatrix: K as stored ([position][dim] is the "col"
// layout of k^T), V transposed on the way (ldmatrix.trans).
//
// Blocks run the tiles of a step last first (within a sequence the longest
// key ranges first, so that the causal triangle's short tiles fill the tail),
// and the query heads of one KV head side by side, so that their K and V
// reads meet in L2.
//
// Fragment layouts of mma.m16n8k16 (g = lane / 4, t = lane % 4):
//   A (16 x 16, row-major): reg0 = row g, cols 2t..2t+1; reg1 = row g+8,
//     cols 2t..2t+1; reg2 = row g, cols 2t+8..; reg3 = row g+8, cols 2t+8..
//   B (16 x 8, "col"): reg0 = rows (k) 2t..2t+1 of col (n) g; reg1 = rows 2t+8..
//   C (16 x 8, f32): c0, c1 = row g, cols 2t, 2t+1; c2, c3 = row g+8.
// Two adjacent C tiles of S are exactly the A fragment of P for one k-step.
#include <cuda_fp16.h>

#include <cmath>

#include "backends/cuda/cuda_check.h"
#include "backends/cuda/kernels.h"
#include "backends/cuda/launch.h"

namespace tandem::cuda {
namespace {

constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;
constexpr int kQueryTile = kPrefillTileTokens;  // 16 rows per warp
constexpr int kKeyTile = 64;
constexpr int kStages = 2;
static_assert(kQueryTile == 16 * kWarps, "each warp owns 16 query rows");

// Halves per K or V row in shared memory: 16 bytes of padding make the 8
// rows of an ldmatrix fall in distinct banks (the row's byte stride is an
// odd multiple of 16 for every supported head size).
template <int HD>
constexpr int kRowHalves = HD + 8;

template <int HD>
constexpr size_t shared_bytes() {
  return static_cast<size_t>(kStages) * 2 * kKeyTile * kRowHalves<HD> * sizeof(__half);
}

__device__ __forceinline__ uint32_t pack_half2(float lo, float hi) {
  const __half2 h = __floats2half2_rn(lo, hi);  // lo in the low 16 bits
  return *reinterpret_cast<const uint32_t*>(&h);
}

__device__ __forceinline__ uint32_t shared_address(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// 16 bytes from global to shared memory, asynchronously; zeros where
// `valid` is false (src is then not read).
__device__ __forceinline__ void copy_16(uint32_t dst, const void* src, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(valid ? 16 : 0)
               : "memory");
}
__device__ __forceinline__ void copy_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void copy_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

// Four 8 x 8 f16 matrices from shared memory; lane l gives the address of
// row l % 8 of matrix l / 8, and r[i] is this lane's fragment of matrix i
// (row g, cols 2t..2t+1; with .trans the transpose's).
__device__ __forceinline__ void load_matrix_x4(uint32_t (&r)[4], uint32_t address) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(address));
}
__device__ __forceinline__ void load_matrix_x2(uint32_t (&r)[2], uint32_t address) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0, %1}, [%2];\n" : "=r"(r[0]), "=r"(r[1]) : "r"(address));
}
__device__ __forceinline__ void load_matrix_x4_trans(uint32_t (&r)[4], uint32_t address) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(address));
}

// d += a b for one m16n8k16 tile (f16 inputs, f32 accumulators).
__device__ __forceinline__ void mma_16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#else
  __trap();  // prefill_attention_init() refuses GPUs before sm_80
#endif
}

// Two blocks an SM: at head size 128 the kernel takes 248 registers a
// thread. Capped for three (168) it spilled and ran 9-42% slower on an H100
// (cuda_attention_bench --prefill), latency-bound as it is.
template <int HD>
__global__ void __launch_bounds__(kThreads, 2) prefill_attention_kernel(AttentionArgs a, AttentionShape s,
                                                                          const int32_t* __restrict__ tiles) {
  constexpr int KS = HD / 16;        // k-steps of q k^T over head_dim
  constexpr int NT = HD / 8;         // n-tiles of the output over head_dim
  constexpr int LD = kRowHalves<HD>;
  constexpr int kPieces = HD / 8;    // 16-byte pieces of a cache row
  constexpr int kLoads = kKeyTile * kPieces / kThreads;  // pieces a thread copies per tile, of K and of V
  static_assert(HD % 16 == 0 && kKeyTile * kPieces % kThreads == 0, "head_dim must be a multiple of 16");
  extern __shared__ __align__(16) __half shared[];  // [stage][K, V][position][LD]
  __shared__ int64_t rows[kStages][kKeyTile];       // row_of each position of a staged tile

  let_successor_start();
  wait_for_predecessor();
  const int h = blockIdx.x, tile = gridDim.y - 1 - blockIdx.y;
  const int first = tiles[3 * tile], count = tiles[3 * tile + 1], kv_len = tiles[3 * tile + 2];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, tq = lane % 4;
  const int kvh = h / (s.n_heads / s.n_kv_heads);
  const int64_t q_dim = static_cast<int64_t>(s.n_heads) * HD;
  const int32_t* table = a.block_tables + a.table_offsets[first];
  const int n_key_tiles = (kv_len + kKeyTile - 1) / kKeyTile;

  // Where position kv0 + threadIdx.x (threads below kKeyTile) keeps this KV
  // head's key and value: the row's offset in elements, -1 past kv_len.
  const int kv_dim = s.n_kv_heads * HD;
  auto row_of = [&](int kv0) -> int64_t {
    const int p = kv0 + static_cast<int>(threadIdx.x);
    if (p >= kv_len) return -1;
    const int64_t slot = static_cast<int64_t>(table[p / s.block_size]) * s.block_size + p % s.block_size;
    return slot * kv_dim + kvh * HD;
  };
  // Queue the copy of key tile `kt` into its stage (rows[stage] filled):
  // piece c of the tile is piece c % kPieces of position c / kPieces, so a
  // warp reads whole rows.
  const uint32_t shared_base = shared_address(shared);
  auto copy_tile = [&](int kt) {
    const int stage = kt % kStages;
    const uint32_t k_dst = shared_base + static_cast<uint32_t>(stage * 2 * kKeyTile * LD * sizeof(__half));
    const uint32_t v_dst = k_dst + static_cast<uint32_t>(kKeyTile * LD * sizeof(__half));
#pragma unroll
    for (int u = 0; u < kLoads; ++u) {
      const int c = static_cast<int>(threadIdx.x) + u * kThreads, j = c / kPieces, piece = c % kPieces;
      const int64_t row = rows[stage][j];
      const int64_t off = (row < 0 ? 0 : row) + piece * 8;
      const uint32_t d = static_cast<uint32_t>((j * LD + piece * 8) * sizeof(__half));
      copy_16(k_dst + d, a.k_cache + off, row >= 0);
      copy_16(v_dst + d, a.v_cache + off, row >= 0);
    }
    copy_commit();
  };

  if (threadIdx.x < kKeyTile) rows[0][threadIdx.x] = row_of(0);
  __syncthreads();
  copy_tile(0);
  if (threadIdx.x < kKeyTile && n_key_tiles > 1) rows[1][threadIdx.x] = row_of(kKeyTile);

  // This lane's two rows, g and g + 8 of the warp's 16; rows past `count`
  // repeat the tile's first (finite work, never stored).
  int row_pos[2];
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};
  uint32_t qa[KS][4];
  const float q_scale = a.scale * 1.4426950408889634f;  // softmax in base 2
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int i = warp * 16 + g + 8 * r;
    const int64_t t = first + (i < count ? i : 0);
    row_pos[r] = a.positions[t];
    const float* q = a.q + t * a.q_stride + static_cast<int64_t>(h) * HD + 2 * tq;
#pragma unroll
    for (int ks = 0; ks < KS; ++ks) {
      const float2 lo = *reinterpret_cast<const float2*>(q + 16 * ks);
      const float2 hi = *reinterpret_cast<const float2*>(q + 16 * ks + 8);
      qa[ks][r] = pack_half2(lo.x * q_scale, lo.y * q_scale);
      qa[ks][2 + r] = pack_half2(hi.x * q_scale, hi.y * q_scale);
    }
  }
  // The last position any row of this warp attends to, and the last one
  // every row attends to (warp-uniform): key tiles up to that one need no mask.
  int warp_last = max(row_pos[0], row_pos[1]), warp_unmasked = min(row_pos[0], row_pos[1]);
#pragma unroll
  for (int off = 16; off > 0; off /= 2) {
    warp_last = max(warp_last, __shfl_xor_sync(0xffffffffu, warp_last, off));
    warp_unmasked = min(warp_unmasked, __shfl_xor_sync(0xffffffffu, warp_unmasked, off));
  }

  float o[NT][4];
#pragma unroll
  for (int nt = 0; nt < NT; ++nt) o[nt][0] = o[nt][1] = o[nt][2] = o[nt][3] = 0.0f;

  // ldmatrix addresses (bytes, relative to a stage's K or V): for K, lane l
  // points at position l % 8 of an 8-position group and dims 8 * (l / 8) of
  // a 32-dim group (two k-steps); for V, at position l % 8 + 8 * (l / 8 % 2)
  // of a 16-position k-step and dims 8 * (l / 16) of a 16-dim pair of n-tiles.
  const uint32_t k_lane = static_cast<uint32_t>(((lane % 8) * LD + (lane / 8) * 8) * sizeof(__half));
  const uint32_t v_lane = static_cast<uint32_t>(((lane % 8 + 8 * (lane / 8 % 2)) * LD + (lane / 16) * 8) * sizeof(__half));

  for (int kt = 0; kt < n_key_tiles; ++kt) {
    const int kv0 = kt * kKeyTile, stage = kt % kStages;
    // The next tile's rows are in place, and every warp is done with the
    // stage it is copied into (it held tile kt - 1).
    __syncthreads();
    if (kt + 1 < n_key_tiles) {
      copy_tile(kt + 1);
      copy_wait<1>();
    } else {
      copy_wait<0>();
    }
    // Look up the rows of tile kt + 2 (stored after this tile's arithmetic,
    // so that the table read does not hold the warp up).
    const int64_t next_row = (threadIdx.x < kKeyTile && kt + 2 < n_key_tiles) ? row_of(kv0 + 2 * kKeyTile) : -1;
    __syncthreads();  // tile kt is in shared memory for every warp
    if (kv0 <= warp_last) {  // else every row of this warp ends before this tile
      const uint32_t k_base = shared_base + static_cast<uint32_t>(stage * 2 * kKeyTile * LD * sizeof(__half));
      const uint32_t v_base = k_base + static_cast<uint32_t>(kKeyTile * LD * sizeof(__half));

      // S = q k^T: 16 rows x 64 positions, 8 tiles of 8 positions.
      float sc[kKeyTile / 8][4];
#pragma unroll
      for (int nt = 0; nt < kKeyTile / 8; ++nt) {
        sc[nt][0] = sc[nt][1] = sc[nt][2] = sc[nt][3] = 0.0f;
        const uint32_t row = k_base + k_lane + static_cast<uint32_t>(nt * 8 * LD * sizeof(__half));
#pragma unroll
        for (int ks = 0; ks + 1 < KS; ks += 2) {
          uint32_t b[4];
          load_matrix_x4(b, row + static_cast<uint32_t>(ks * 16 * sizeof(__half)));
          mma_16816(sc[nt], qa[ks], b[0], b[1]);
          mma_16816(sc[nt], qa[ks + 1], b[2], b[3]);
        }
        if constexpr (KS % 2 == 1) {
          uint32_t b[2];  // lanes 0-15 address the last k-step's two halves
          load_matrix_x2(b, row + static_cast<uint32_t>((KS - 1) * 16 * sizeof(__half)));
          mma_16816(sc[nt], qa[KS - 1], b[0], b[1]);
        }
      }
      // Causal mask (positions past kv_len are past every row too), then the
      // new row maxima (a row's four lanes agree).
      if (kv0 + kKeyTile - 1 > warp_unmasked) {
#pragma unroll
        for (int nt = 0; nt < kKeyTile / 8; ++nt)
#pragma unroll
          for (int e = 0; e < 4; ++e)
            if (kv0 + nt * 8 + 2 * tq + (e & 1) > row_pos[e >> 1]) sc[nt][e] = -INFINITY;
      }
      float mx[2] = {m[0], m[1]};
#pragma unroll
      for (int nt = 0; nt < kKeyTile / 8; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) mx[e >> 1] = fmaxf(mx[e >> 1], sc[nt][e]);
      float corr[2], rowsum[2] = {0.0f, 0.0f};
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
        mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
        corr[r] = exp2f(m[r] - mx[r]);  // m = -inf on the first tile: 0
        m[r] = mx[r];
      }
      // P = exp2(S - m), as the A fragments of 4 k-steps of 16 positions.
      uint32_t pa[kKeyTile / 16][4];
#pragma unroll
      for (int nt = 0; nt < kKeyTile / 8; ++nt) {
        const float p0 = exp2f(sc[nt][0] - m[0]), p1 = exp2f(sc[nt][1] - m[0]);
        const float p2 = exp2f(sc[nt][2] - m[1]), p3 = exp2f(sc[nt][3] - m[1]);
        rowsum[0] += p0 + p1;
        rowsum[1] += p2 + p3;
        pa[nt / 2][2 * (nt % 2)] = pack_half2(p0, p1);
        pa[nt / 2][2 * (nt % 2) + 1] = pack_half2(p2, p3);
      }
#pragma unroll
      for (int r = 0; r < 2; ++r) l[r] = l[r] * corr[r] + rowsum[r];
      // O = O * corr + P V.
#pragma unroll
      for (int nt = 0; nt < NT; ++nt) {
        o[nt][0] *= corr[0];
        o[nt][1] *= corr[0];
        o[nt][2] *= corr[1];
        o[nt][3] *= corr[1];
      }
#pragma unroll
      for (int kk = 0; kk < kKeyTile / 16; ++kk) {
#pragma unroll
        for (int nt = 0; nt < NT; nt += 2) {
          uint32_t b[4];
          load_matrix_x4_trans(b, v_base + v_lane + static_cast<uint32_t>((kk * 16 * LD + nt * 8) * sizeof(__half)));
          mma_16816(o[nt], pa[kk], b[0], b[1]);
          mma_16816(o[nt + 1], pa[kk], b[2], b[3]);
        }
      }
    }
    if (threadIdx.x < kKeyTile && kt + 2 < n_key_tiles) rows[stage][threadIdx.x] = next_row;
  }

#pragma unroll
  for (int r = 0; r < 2; ++r) {
    l[r] += __shfl_xor_sync(0xffffffffu, l[r], 1);
    l[r] += __shfl_xor_sync(0xffffffffu, l[r], 2);
    const int i = warp * 16 + g + 8 * r;
    if (i >= count) continue;
    const float inv = 1.0f / l[r];
    float* out = a.out + (first + i) * q_dim + static_cast<int64_t>(h) * HD + 2 * tq;
#pragma unroll
    for (int nt = 0; nt < NT; ++nt)
      *reinterpret_cast<float2*>(out + nt * 8) = make_float2(o[nt][2 * r] * inv, o[nt][2 * r + 1] * inv);
  }
}

}  // namespace

bool prefill_attention_init(const AttentionShape& shape, int device) {
  int major = 0;
  TANDEM_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
  const int hd = shape.head_dim;
  if (major < 8 || !(hd == 32 || hd == 48 || hd == 64 || hd == 96 || hd == 128)) return false;
  int current = 0;
  TANDEM_CUDA_CHECK(cudaGetDevice(&current));
  TANDEM_CUDA_CHECK(cudaSetDevice(device));
  auto allow = [](auto kernel, size_t bytes) {
    TANDEM_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)));
  };
  allow(prefill_attention_kernel<32>, shared_bytes<32>());
  allow(prefill_attention_kernel<48>, shared_bytes<48>());
  allow(prefill_attention_kernel<64>, shared_bytes<64>());
  allow(prefill_attention_kernel<96>, shared_bytes<96>());
  allow(prefill_attention_kernel<128>, shared_bytes<128>());
  TANDEM_CUDA_CHECK(cudaSetDevice(current));
  return true;
}

int64_t plan_prefill_tiles(const int32_t* positions, const int32_t* sequence, int64_t first, int64_t n_tokens,
                           int32_t* tiles) {
  int64_t n_tiles = 0;
  for (int64_t t = first; t < first + n_tokens;) {
    int64_t end = t + 1;
    while (end < first + n_tokens && end - t < kPrefillTileTokens && sequence[end] == sequence[t] &&
           positions[end] == positions[end - 1] + 1)
      ++end;
    tiles[3 * n_tiles] = static_cast<int32_t>(t);
    tiles[3 * n_tiles + 1] = static_cast<int32_t>(end - t);
    tiles[3 * n_tiles + 2] = positions[end - 1] + 1;
    ++n_tiles;
    t = end;
  }
  return n_tiles;
}

void prefill_attention(const AttentionArgs& args, const AttentionShape& shape, const int32_t* tiles, int64_t n_tiles,
                       cudaStream_t stream) {
  check(shape.n_kv_heads > 0 && shape.n_heads % shape.n_kv_heads == 0, "internal: heads not a multiple of KV heads");
  if (n_tiles == 0) return;
  check(n_tiles <= 65535, "internal: more prefill tiles in a step than a grid's y dimension holds");
  const dim3 grid(static_cast<unsigned>(shape.n_heads), static_cast<unsigned>(n_tiles));
  switch (shape.head_dim) {
    case 32: launch_with_shared(prefill_attention_kernel<32>, grid, kThreads, shared_bytes<32>(), stream, args, shape, tiles); break;
    case 48: launch_with_shared(prefill_attention_kernel<48>, grid, kThreads, shared_bytes<48>(), stream, args, shape, tiles); break;
    case 64: launch_with_shared(prefill_attention_kernel<64>, grid, kThreads, shared_bytes<64>(), stream, args, shape, tiles); break;
    case 96: launch_with_shared(prefill_attention_kernel<96>, grid, kThreads, shared_bytes<96>(), stream, args, shape, tiles); break;
    case 128: launch_with_shared(prefill_attention_kernel<128>, grid, kThreads, shared_bytes<128>(), stream, args, shape, tiles); break;
    default: throw Error("internal: prefill attention for head size " + std::to_string(shape.head_dim));
  }
  TANDEM_CUDA_CHECK(cudaGetLastError());
}

}  // namespace tandem::cuda
