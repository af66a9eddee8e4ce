// Causal attention of prompt tokens on tensor cores, flash-attention style.
//
// One block of 4 warps takes a query tile (up to 64 consecutive prompt
// tokens of one sequence) and one query head. Each warp owns 16 query rows
// and keeps them as mma A fragments; the block walks the sequence's cached
// positions [0, kv_len) in tiles of 64, staging K (row-major) and V
// (transposed) in shared memory from the paged cache. Per key tile a warp
// computes S = q k^T with mma.sync m16n8k16 (f16 in, f32 out), keeps an
// online softmax in registers (each row's four lanes share its max and
// sum), and adds P V with P rounded to f16, straight from the S fragments.
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
constexpr int kQueryTile = kPrefillTileTokens;  // 16 rows per warp
constexpr int kKeyTile = 64;
static_assert(kQueryTile == 16 * kWarps, "each warp owns 16 query rows");

__device__ __forceinline__ uint32_t pack_half2(float lo, float hi) {
  const __half2 h = __floats2half2_rn(lo, hi);  // lo in the low 16 bits
  return *reinterpret_cast<const uint32_t*>(&h);
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
  __trap();  // prefill_attention_supports() refuses GPUs before sm_80
#endif
}

template <int HD>
__global__ void __launch_bounds__(kWarps * 32) prefill_attention_kernel(AttentionArgs a, AttentionShape s,
                                                                          const int32_t* __restrict__ tiles) {
  constexpr int KS = HD / 16;           // k-steps of q k^T over head_dim
  constexpr int NT = HD / 8;            // n-tiles of the output over head_dim
  constexpr int LDK = HD + 8;           // halves per K row in shared memory (conflict-free B loads)
  constexpr int LDV = kKeyTile + 8;     // halves per V^T row (one head dim)
  constexpr int kPieces = HD / 8;       // 16-byte pieces of a cache row
  constexpr int kLoads = kKeyTile * kPieces / (kWarps * 32);  // pieces per thread per key tile
  static_assert(HD % 16 == 0 && kKeyTile * kPieces % (kWarps * 32) == 0, "head_dim must be a multiple of 16");
  __shared__ __align__(16) __half k_s[kKeyTile * LDK];  // [position][dim]
  __shared__ __align__(16) __half vt_s[HD * LDV];       // [dim][position]

  let_successor_start();
  wait_for_predecessor();
  const int tile = blockIdx.x, h = blockIdx.y;
  const int first = tiles[3 * tile], count = tiles[3 * tile + 1], kv_len = tiles[3 * tile + 2];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, tq = lane % 4;
  const int kvh = h / (s.n_heads / s.n_kv_heads);
  const int64_t q_dim = static_cast<int64_t>(s.n_heads) * HD, kv_dim = static_cast<int64_t>(s.n_kv_heads) * HD;
  const int32_t* table = a.block_tables + a.table_offsets[first];

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
  // The last position any row of this warp attends to (warp-uniform).
  int warp_last = max(row_pos[0], row_pos[1]);
#pragma unroll
  for (int off = 16; off > 0; off /= 2) warp_last = max(warp_last, __shfl_xor_sync(0xffffffffu, warp_last, off));

  float o[NT][4];
#pragma unroll
  for (int nt = 0; nt < NT; ++nt) o[nt][0] = o[nt][1] = o[nt][2] = o[nt][3] = 0.0f;

  for (int kv0 = 0; kv0 < kv_len; kv0 += kKeyTile) {
    // Stage the key tile: thread c takes position c % 64 of piece c / 64, so
    // that a warp's V^T stores fall in distinct banks. Positions past
    // kv_len read as zeros (never NaN: they meet p = 0).
    uint4 kv[kLoads], vv[kLoads];
#pragma unroll
    for (int u = 0; u < kLoads; ++u) {
      const int c = threadIdx.x + u * kWarps * 32;
      const int j = c % kKeyTile, piece = c / kKeyTile, p = kv0 + j;
      kv[u] = vv[u] = make_uint4(0, 0, 0, 0);
      if (p < kv_len) {
        const int64_t slot = static_cast<int64_t>(table[p / s.block_size]) * s.block_size + p % s.block_size;
        const int64_t off = slot * kv_dim + static_cast<int64_t>(kvh) * HD + piece * 8;
        kv[u] = *reinterpret_cast<const uint4*>(a.k_cache + off);
        vv[u] = *reinterpret_cast<const uint4*>(a.v_cache + off);
      }
    }
    __syncthreads();  // the previous tile's reads of k_s / vt_s are done
#pragma unroll
    for (int u = 0; u < kLoads; ++u) {
      const int c = threadIdx.x + u * kWarps * 32;
      const int j = c % kKeyTile, piece = c / kKeyTile;
      *reinterpret_cast<uint4*>(k_s + j * LDK + piece * 8) = kv[u];
      const __half* v = reinterpret_cast<const __half*>(&vv[u]);
#pragma unroll
      for (int e = 0; e < 8; ++e) vt_s[(piece * 8 + e) * LDV + j] = v[e];
    }
    __syncthreads();
    if (kv0 > warp_last) continue;  // every row of this warp ends before this tile

    // S = q k^T: 16 rows x 64 positions, 8 tiles of 8 positions.
    float sc[kKeyTile / 8][4];
#pragma unroll
    for (int nt = 0; nt < kKeyTile / 8; ++nt) {
      sc[nt][0] = sc[nt][1] = sc[nt][2] = sc[nt][3] = 0.0f;
#pragma unroll
      for (int ks = 0; ks < KS; ++ks) {
        const __half* kr = k_s + (nt * 8 + g) * LDK + ks * 16 + 2 * tq;
        mma_16816(sc[nt], qa[ks], *reinterpret_cast<const uint32_t*>(kr), *reinterpret_cast<const uint32_t*>(kr + 8));
      }
    }
    // Causal mask and the new row maxima (a row's four lanes agree).
    float mx[2] = {m[0], m[1]};
#pragma unroll
    for (int nt = 0; nt < kKeyTile / 8; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int p = kv0 + nt * 8 + 2 * tq + (e & 1), r = e >> 1;
        if (p > row_pos[r]) sc[nt][e] = -INFINITY;
        mx[r] = fmaxf(mx[r], sc[nt][e]);
      }
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
    // O = O * corr + P V, V^T rows giving the B fragments.
#pragma unroll
    for (int nt = 0; nt < NT; ++nt) {
      o[nt][0] *= corr[0];
      o[nt][1] *= corr[0];
      o[nt][2] *= corr[1];
      o[nt][3] *= corr[1];
#pragma unroll
      for (int kk = 0; kk < kKeyTile / 16; ++kk) {
        const __half* vr = vt_s + (nt * 8 + g) * LDV + kk * 16 + 2 * tq;
        mma_16816(o[nt], pa[kk], *reinterpret_cast<const uint32_t*>(vr), *reinterpret_cast<const uint32_t*>(vr + 8));
      }
    }
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

bool prefill_attention_supports(const AttentionShape& shape, int device) {
  int major = 0;
  TANDEM_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
  const int hd = shape.head_dim;
  return major >= 8 && (hd == 32 || hd == 48 || hd == 64 || hd == 96 || hd == 128);
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
  const dim3 grid(static_cast<unsigned>(n_tiles), static_cast<unsigned>(shape.n_heads));
  switch (shape.head_dim) {
    case 32: launch(prefill_attention_kernel<32>, grid, kWarps * 32, stream, args, shape, tiles); break;
    case 48: launch(prefill_attention_kernel<48>, grid, kWarps * 32, stream, args, shape, tiles); break;
    case 64: launch(prefill_attention_kernel<64>, grid, kWarps * 32, stream, args, shape, tiles); break;
    case 96: launch(prefill_attention_kernel<96>, grid, kWarps * 32, stream, args, shape, tiles); break;
    case 128: launch(prefill_attention_kernel<128>, grid, kWarps * 32, stream, args, shape, tiles); break;
    default: throw Error("internal: prefill attention for head size " + std::to_string(shape.head_dim));
  }
  TANDEM_CUDA_CHECK(cudaGetLastError());
}

}  // namespace tandem::cuda
