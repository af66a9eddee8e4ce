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
// Few tiles (a short prompt chunk) leave most SMs idle while each block walks
// its key tiles one after another. Such steps split every tile's key tiles
// into n_splits contiguous ranges, one block each (grid z): a block keeps its
// range's unnormalised output with its row maximum and sum in the workspace,
// and prefill_attention_merge_kernel weighs the splits together.
//
// Fragment layouts of mma.m16n8k16 (g = lane / 4, t = lane % 4):
//   A (16 x 16, row-major): reg0 = row g, cols 2t..2t+1; reg1 = row g+8,
//     cols 2t..2t+1; reg2 = row g, cols 2t+8..; reg3 = row g+8, cols 2t+8..
//   B (16 x 8, "col"): reg0 = rows (k) 2t..2t+1 of col (n) g; reg1 = rows 2t+8..
//   C (16 x 8, f32): c0, c1 = row g, cols 2t, 2t+1; c2, c3 = row g+8.
// Two adjacent C tiles of S are exactly the A fragment of P for one k-step.
#include <cuda_fp16.h>

#include <algorithm>
#include <cmath>
#include <type_traits>

#include "backends/cuda/cuda_check.h"
#include "backends/cuda/kernels.h"
#include "backends/cuda/launch.h"
#include "backends/cuda/mma_tile.cuh"

namespace tandem::cuda {
namespace {

using namespace mma_tile;

constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;
constexpr int kQueryTile = kPrefillTileTokens;  // 16 rows per warp
constexpr int kKeyTile = 64;
constexpr int kStages = 2;
constexpr int kMinKeyTilesPerSplit = 4;  // prefill_attention_splits
static_assert(kQueryTile == 16 * kWarps, "each warp owns 16 query rows");

// Halves per K or V row in shared memory: 16 bytes of padding make the 8
// rows of an ldmatrix fall in distinct banks (the row's byte stride is an
// odd multiple of 16 for every supported head size).
template <int HD>
constexpr int kRowHalves = HD + 8;

// An f16 cache's tiles are staged as the mma's read them; an E4M3 cache's
// as they are (rows of HD bytes), then widened into one f16 tile
// (mma_tile::widen_tile) after the stages.
template <int HD>
__host__ __device__ constexpr size_t f16_tile_bytes() {  // K and V of one tile, rows of kRowHalves
  return static_cast<size_t>(2) * kKeyTile * kRowHalves<HD> * sizeof(__half);
}
template <int HD, bool kFp8>
__host__ __device__ constexpr size_t staged_tile_bytes() {
  return kFp8 ? static_cast<size_t>(2) * kKeyTile * HD : f16_tile_bytes<HD>();
}
template <int HD, bool kFp8>
constexpr size_t shared_bytes() {
  return kStages * staged_tile_bytes<HD, kFp8>() + (kFp8 ? f16_tile_bytes<HD>() : 0);
}

// Two blocks an SM: at head size 128 the kernel takes 248 registers a
// thread. Capped for three (168) it spilled and ran 9-42% slower on an H100
// (cuda_attention_bench --prefill), latency-bound as it is.
//
// Split (gridDim.z > 1): block z takes key tiles [z n / Z, (z + 1) n / Z) of
// its tile's n and writes, for token t (row r = t - tiles[0]) and head h,
//   partials[((z * split_rows + r) * n_heads + h) * HD ..]: the output before
//     division by the sum, and after all Z * split_rows * n_heads * HD of
//     those, at the same slot * 2: the row's maximum (base 2, m) and sum (l);
// m = -inf (nothing attended in the range) marks a slot the merge skips.
// kFp8: the cache holds E4M3 (the same bits as an f16 cache of its values).
template <int HD, bool kFp8>
__global__ void __launch_bounds__(kThreads, 2) prefill_attention_kernel(AttentionArgs a, AttentionShape s,
                                                                          const int32_t* __restrict__ tiles,
                                                                          int split_rows) {
  constexpr int KS = HD / 16;        // k-steps of q k^T over head_dim
  constexpr int NT = HD / 8;         // n-tiles of the output over head_dim
  constexpr int LD = kRowHalves<HD>;
  static_assert(HD % 16 == 0 && kKeyTile * (HD / 8) % kThreads == 0, "head_dim must be a multiple of 16");
  // [stage][K, V][position][LD] halves, or (kFp8) [stage][K, V][position][HD]
  // bytes and one widened tile [K, V][position][LD] halves.
  extern __shared__ __align__(16) __half shared[];
  __shared__ int64_t rows[kStages][kKeyTile];  // row_of each position of a staged tile

  let_successor_start();
  wait_for_predecessor();
  const int h = blockIdx.x, tile = gridDim.y - 1 - blockIdx.y;
  const int first = tiles[3 * tile], count = tiles[3 * tile + 1], kv_len = tiles[3 * tile + 2];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, tq = lane % 4;
  const int kvh = h / (s.n_heads / s.n_kv_heads);
  const int64_t q_dim = static_cast<int64_t>(s.n_heads) * HD;
  const int32_t* table = a.block_tables + a.table_offsets[first];
  const int n_splits = static_cast<int>(gridDim.z), split = static_cast<int>(blockIdx.z);
  const int all_key_tiles = (kv_len + kKeyTile - 1) / kKeyTile;
  const int kt_begin = split * all_key_tiles / n_splits, kt_end = (split + 1) * all_key_tiles / n_splits;
  // A split's slots in the workspace (split mode): output rows, then (m, l).
  const int64_t split_slots = static_cast<int64_t>(n_splits) * split_rows * s.n_heads;
  auto slot_of = [&](int i) {  // token first + i's slot of this split and head
    return (static_cast<int64_t>(split) * split_rows + first + i - tiles[0]) * s.n_heads + h;
  };
  if (kt_begin == kt_end) {  // a tile shorter than the splits: this one holds nothing
    for (int i = static_cast<int>(threadIdx.x); i < count; i += kThreads)
      reinterpret_cast<float2*>(a.split_partials + split_slots * HD)[slot_of(i)] = make_float2(-INFINITY, 0.0f);
    return;
  }

  // Where position kv0 + threadIdx.x (threads below kKeyTile) keeps this KV
  // head's key and value: the row's offset in elements, -1 past kv_len.
  const int kv_dim = s.n_kv_heads * HD;
  auto row_of = [&](int kv0) {
    return cache_row(table, s.block_size, kv_dim, kvh * HD, kv0 + static_cast<int>(threadIdx.x), kv_len);
  };
  // Queue the copy of key tile `kt` into its stage (rows[stage] filled).
  const uint32_t shared_base = shared_address(shared);
  constexpr uint32_t kStaged = static_cast<uint32_t>(staged_tile_bytes<HD, kFp8>());
  __half* widened = reinterpret_cast<__half*>(reinterpret_cast<char*>(shared) + kStages * kStaged);  // kFp8
  auto copy_tile = [&](int kt) {
    const int stage = (kt - kt_begin) % kStages;
    const uint32_t k_dst = shared_base + stage * kStaged;
    if constexpr (kFp8) {
      copy_cache_tile_fp8<HD, kKeyTile, kThreads>(k_dst, k_dst + kKeyTile * HD, rows[stage],
                                                  static_cast<const uint8_t*>(a.k_cache),
                                                  static_cast<const uint8_t*>(a.v_cache));
    } else {
      const uint32_t v_dst = k_dst + static_cast<uint32_t>(kKeyTile * LD * sizeof(__half));
      copy_cache_tile<HD, LD, kKeyTile, kThreads>(k_dst, v_dst, rows[stage], static_cast<const __half*>(a.k_cache),
                                                  static_cast<const __half*>(a.v_cache));
    }
  };

  if (threadIdx.x < kKeyTile) rows[0][threadIdx.x] = row_of(kt_begin * kKeyTile);
  __syncthreads();
  copy_tile(kt_begin);
  if (threadIdx.x < kKeyTile && kt_begin + 1 < kt_end) rows[1][threadIdx.x] = row_of((kt_begin + 1) * kKeyTile);

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

  for (int kt = kt_begin; kt < kt_end; ++kt) {
    const int kv0 = kt * kKeyTile, stage = (kt - kt_begin) % kStages;
    // The next tile's rows are in place, and every warp is done with the
    // stage it is copied into (it held tile kt - 1).
    __syncthreads();
    if (kt + 1 < kt_end) {
      copy_tile(kt + 1);
      copy_wait<1>();
    } else {
      copy_wait<0>();
    }
    // Look up the rows of tile kt + 2 (stored after this tile's arithmetic,
    // so that the table read does not hold the warp up).
    const int64_t next_row = (threadIdx.x < kKeyTile && kt + 2 < kt_end) ? row_of(kv0 + 2 * kKeyTile) : -1;
    __syncthreads();  // tile kt is in shared memory for every warp
    if constexpr (kFp8) {
      const uint8_t* staged = reinterpret_cast<const uint8_t*>(shared) + stage * kStaged;
      widen_tile<HD, LD, kKeyTile, kThreads>(staged, staged + kKeyTile * HD, widened, widened + kKeyTile * LD);
      __syncthreads();  // the widened tile is complete (every warp was past the last one's use at the loop's top)
    }
    if (kv0 <= warp_last) {  // else every row of this warp ends before this tile
      const uint32_t k_base =
          kFp8 ? shared_address(widened) : shared_base + static_cast<uint32_t>(stage * 2 * kKeyTile * LD * sizeof(__half));
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
      float corr[2], rowsum[2] = {0.0f, 0.0f}, base[2];
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
        mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
        // A row with nothing attended yet (its positions all before a
        // split's range) keeps m = -inf; exponents are then taken from 0,
        // so that its weights are 0 rather than exp2(-inf + inf).
        base[r] = mx[r] == -INFINITY ? 0.0f : mx[r];
        corr[r] = exp2f(m[r] - base[r]);  // m = -inf on the first tile: 0
        m[r] = mx[r];
      }
      // P = exp2(S - m), as the A fragments of 4 k-steps of 16 positions.
      uint32_t pa[kKeyTile / 16][4];
#pragma unroll
      for (int nt = 0; nt < kKeyTile / 8; ++nt) {
        const float p0 = exp2f(sc[nt][0] - base[0]), p1 = exp2f(sc[nt][1] - base[0]);
        const float p2 = exp2f(sc[nt][2] - base[1]), p3 = exp2f(sc[nt][3] - base[1]);
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
    if (threadIdx.x < kKeyTile && kt + 2 < kt_end) rows[stage][threadIdx.x] = next_row;
  }

#pragma unroll
  for (int r = 0; r < 2; ++r) {
    l[r] += __shfl_xor_sync(0xffffffffu, l[r], 1);
    l[r] += __shfl_xor_sync(0xffffffffu, l[r], 2);
    const int i = warp * 16 + g + 8 * r;
    if (i >= count) continue;
    if (n_splits > 1) {
      const int64_t slot = slot_of(i);
      float* part = a.split_partials + slot * HD + 2 * tq;
#pragma unroll
      for (int nt = 0; nt < NT; ++nt)
        *reinterpret_cast<float2*>(part + nt * 8) = make_float2(o[nt][2 * r], o[nt][2 * r + 1]);
      if (tq == 0) reinterpret_cast<float2*>(a.split_partials + split_slots * HD)[slot] = make_float2(m[r], l[r]);
      continue;
    }
    const float inv = 1.0f / l[r];
    float* out = a.out + (first + i) * q_dim + static_cast<int64_t>(h) * HD + 2 * tq;
#pragma unroll
    for (int nt = 0; nt < NT; ++nt)
      *reinterpret_cast<float2*>(out + nt * 8) = make_float2(o[nt][2 * r] * inv, o[nt][2 * r + 1] * inv);
  }
}

// The splits of each (token, head) weighed together: out = sum_z w_z o_z /
// sum_z w_z l_z with w_z = exp2(m_z - max m), splits with m = -inf skipped
// (split 0 holds position 0, which every token attends to). One thread a
// float4 of out; the tokens are first..first + rows of out's [T, q_dim].
__global__ void prefill_attention_merge_kernel(const float* __restrict__ partials, int n_splits, int rows,
                                               int n_heads, int head_dim, const int32_t* __restrict__ tiles,
                                               float* __restrict__ out) {
  let_successor_start();
  wait_for_predecessor();
  const int q_dim = n_heads * head_dim;
  const int64_t index = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;  // a float4 of [rows, q_dim]
  if (index >= static_cast<int64_t>(rows) * q_dim / 4) return;
  const int64_t r = index / (q_dim / 4);
  const int col = static_cast<int>(index % (q_dim / 4)) * 4, h = col / head_dim;
  const int64_t split_slots = static_cast<int64_t>(n_splits) * rows * n_heads;
  const float2* ml = reinterpret_cast<const float2*>(partials + split_slots * head_dim);
  float mx = -INFINITY;
  for (int z = 0; z < n_splits; ++z) mx = fmaxf(mx, ml[(z * static_cast<int64_t>(rows) + r) * n_heads + h].x);
  float4 sum = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
  float l = 0.0f;
  for (int z = 0; z < n_splits; ++z) {
    const int64_t slot = (z * static_cast<int64_t>(rows) + r) * n_heads + h;
    const float2 part_ml = ml[slot];
    if (part_ml.x == -INFINITY) continue;
    const float w = exp2f(part_ml.x - mx);
    const float4 o = *reinterpret_cast<const float4*>(partials + slot * head_dim + col % head_dim);
    sum.x += w * o.x;
    sum.y += w * o.y;
    sum.z += w * o.z;
    sum.w += w * o.w;
    l += w * part_ml.y;
  }
  const float inv = 1.0f / l;
  *reinterpret_cast<float4*>(out + (tiles[0] + r) * q_dim + col) =
      make_float4(sum.x * inv, sum.y * inv, sum.z * inv, sum.w * inv);
}

}  // namespace

int prefill_attention_splits(const AttentionShape& shape, int64_t n_tiles, int64_t n_tokens, int max_kv_len,
                             int sm_count) {
  const int64_t blocks = n_tiles * shape.n_heads, sms = sm_count;
  const int64_t key_tiles = (max_kv_len + kKeyTile - 1) / kKeyTile;
  if (blocks <= 0 || n_tokens <= 0) return 1;
  // A block an SM, or two splits where the tiles alone nearly fill the SMs
  // once (two blocks an SM still run at once: the launch bounds), and at
  // least four key tiles a split: past that, a block's fixed costs (its
  // queries, the first copy, the partial result) and the merge outweigh the
  // keys it takes. H100, cuda_attention_bench --prefill L:C --splits 2,3,4,8,
  // us a call in 1 / 2 / 3 / 4 / 8 splits: 512:128 22.5 / 15.7 / - / 18.6 /
  // 26.4; 768:128 31.7 / 19.1 / 21.9 / 20.8 / 29.5; 1024:256 41.4 / 30.4 /
  // - / 36.1 / -; 512:512 25.5 / 29.3.
  const int64_t n = std::min<int64_t>({std::max<int64_t>(2, sms / blocks), 2 * sms / blocks,
                                       key_tiles / kMinKeyTilesPerSplit, kMaxPrefillSplits,
                                       kPrefillSplitRows / n_tokens});
  return static_cast<int>(std::max<int64_t>(n, 1));
}

namespace {
// Calls f(kernel, shared bytes) for head size hd and the cache type.
template <typename F>
void with_head(int hd, KvCacheType cache, F&& f) {
  auto pick = [&](auto head) {
    constexpr int HD = decltype(head)::value;
    if (cache == KvCacheType::Fp8E4M3)
      f(prefill_attention_kernel<HD, true>, shared_bytes<HD, true>());
    else
      f(prefill_attention_kernel<HD, false>, shared_bytes<HD, false>());
  };
  switch (hd) {
    case 32: pick(std::integral_constant<int, 32>{}); break;
    case 48: pick(std::integral_constant<int, 48>{}); break;
    case 64: pick(std::integral_constant<int, 64>{}); break;
    case 96: pick(std::integral_constant<int, 96>{}); break;
    case 128: pick(std::integral_constant<int, 128>{}); break;
    default: throw Error("internal: prefill attention for head size " + std::to_string(hd));
  }
}
}  // namespace

int64_t prefill_attention_workspace_floats(const AttentionShape& shape) {
  return kPrefillSplitRows * shape.n_heads * (shape.head_dim + 2);
}

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
  with_head(hd, KvCacheType::F16, allow);
  with_head(hd, KvCacheType::Fp8E4M3, allow);
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
                       cudaStream_t stream, int n_splits, int64_t n_tokens) {
  check(shape.n_kv_heads > 0 && shape.n_heads % shape.n_kv_heads == 0, "internal: heads not a multiple of KV heads");
  if (n_tiles == 0) return;
  check(n_tiles <= 65535, "internal: more prefill tiles in a step than a grid's y dimension holds");
  check(n_splits >= 1 && n_splits <= kMaxPrefillSplits, "internal: prefill attention splits out of range");
  check(n_splits == 1 || (args.split_partials != nullptr && n_tokens > 0 && n_splits * n_tokens <= kPrefillSplitRows),
        "internal: prefill attention splits without room in the workspace");
  const int rows = n_splits > 1 ? static_cast<int>(n_tokens) : 0;
  const dim3 grid(static_cast<unsigned>(shape.n_heads), static_cast<unsigned>(n_tiles), static_cast<unsigned>(n_splits));
  with_head(shape.head_dim, args.cache_type, [&](auto kernel, size_t bytes) {
    launch_with_shared(kernel, grid, kThreads, bytes, stream, args, shape, tiles, rows);
  });
  TANDEM_CUDA_CHECK(cudaGetLastError());
  if (n_splits > 1) {
    const int64_t vectors = n_tokens * shape.n_heads * shape.head_dim / 4;
    constexpr int kMergeThreads = 256;
    launch(prefill_attention_merge_kernel, dim3(static_cast<unsigned>((vectors + kMergeThreads - 1) / kMergeThreads)),
           dim3(kMergeThreads), stream, static_cast<const float*>(args.split_partials), n_splits, rows, shape.n_heads,
           shape.head_dim, tiles, args.out);
    TANDEM_CUDA_CHECK(cudaGetLastError());
  }
}

}  // namespace tandem::cuda
