// Decode attention on tensor cores, for batches whose (token, KV head) pairs
// alone fill the GPU.
//
// One block of 4 warps takes one token and one KV head; the KV head's query
// heads (up to 16: the group of grouped-query attention) are the rows of the
// mma tiles, rows past the group zero. The block walks the token's cached
// positions [0, pos] in tiles of 64, copied from the paged cache into shared
// memory with cp.async S stages deep (2 or 3) from cache rows looked up a
// stage ahead (as prefill_attention does), so that the next tiles' copies
// run under this tile's arithmetic. Warp w takes positions [16 w, 16 w + 16) of every
// tile: S = q k^T (16 rows x 16 positions) and an online softmax in
// registers, then O += P V with P rounded to f16. At the end the four
// warps' (max, sum, output) merge through shared memory, in warp order;
// with AttentionArgs::out_q the merged rows are also quantized for the
// 8-bit o projection, a warp to each block of 32 values.
//
// Against paged_attention (CUDA cores, a lane a position): K and V are read
// with whole-row 16-byte copies that need no registers, the arithmetic is a
// few mma's a tile, and a thread holds ~100 registers instead of 255, so
// more blocks share an SM. q and the softmax weights are rounded to f16 for
// the tensor cores (the cache is f16, or E4M3 widened to f16), sums are f32.
#include <cuda_fp16.h>

#include <cmath>

#include "backends/cuda/cuda_check.h"
#include "backends/cuda/kernels.h"
#include "backends/cuda/launch.h"
#include "backends/cuda/mma_tile.cuh"
#include "backends/cuda/quantize_block.cuh"

namespace tandem::cuda {
namespace {

using namespace mma_tile;

constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;
constexpr int kKeyTile = 16 * kWarps;  // 16 positions a warp
constexpr int kMaxGroup = 16;  // query heads a KV head: the rows of an mma tile

template <int HD>
constexpr int kRowHalves = HD + 8;  // padded as in prefill_attention: ldmatrix rows in distinct banks

// An f16 cache's tiles are copied as the mma's read them, S stages of K
// and V. An E4M3 cache's are copied as they are (S stages of rows of HD
// bytes) and widened into one f16 tile before use (mma_tile::widen_tile).
template <int HD>
__host__ __device__ constexpr size_t f16_tile_bytes() {  // K and V of one tile, rows of kRowHalves
  return static_cast<size_t>(2) * kKeyTile * kRowHalves<HD> * sizeof(__half);
}
template <int HD, bool kFp8>
__host__ __device__ constexpr size_t staged_tile_bytes() {
  return kFp8 ? static_cast<size_t>(2) * kKeyTile * HD : f16_tile_bytes<HD>();
}
template <int HD, int S, bool kFp8>
constexpr size_t stage_bytes() {
  return S * staged_tile_bytes<HD, kFp8>() + (kFp8 ? f16_tile_bytes<HD>() : 0);
}
template <int HD>
constexpr size_t merge_bytes() {  // the warps' outputs [warp][row][HD], then max and sum [warp][row]
  return static_cast<size_t>(kWarps) * kMaxGroup * (HD + 2) * sizeof(float);
}
template <int HD, int S, bool kFp8>
constexpr size_t shared_bytes() {
  return stage_bytes<HD, S, kFp8>() > merge_bytes<HD>() ? stage_bytes<HD, S, kFp8>() : merge_bytes<HD>();
}

// S: the copy pipeline's stages, tiles kt + 1 .. kt + S - 1 in flight while
// tile kt is used. The arithmetic, and so the bits, do not depend on it.
// kFp8: the cache holds E4M3 (the same bits as an f16 cache of its values).
template <int HD, int S, bool kFp8>
__global__ void __launch_bounds__(kThreads) grouped_decode_attention_kernel(AttentionArgs a, AttentionShape s) {
  constexpr int KS = HD / 16;  // k-steps of q k^T over head_dim
  constexpr int NT = HD / 8;   // n-tiles of the output over head_dim
  constexpr int LD = kRowHalves<HD>;
  static_assert(HD % 32 == 0 && kKeyTile * (HD / 8) % kThreads == 0, "head_dim must be a multiple of 32");
  static_assert(S >= 2, "at least one tile copies while another is used");
  // [stage][K, V][position][LD] halves, or (kFp8) [stage][K, V][position][HD]
  // bytes and one widened tile [K, V][position][LD] halves; then the merge.
  extern __shared__ __align__(16) __half shared[];
  __shared__ int64_t rows[S][kKeyTile];

  let_successor_start();
  wait_for_predecessor();
  const int64_t t = blockIdx.x;
  const int kvh = blockIdx.y;
  const int group = s.n_heads / s.n_kv_heads;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, tq = lane % 4;
  const int pos = a.positions[t];
  const int kv_len = pos + 1;
  const int32_t* table = a.block_tables + a.table_offsets[t];
  const int n_key_tiles = (kv_len + kKeyTile - 1) / kKeyTile;
  const int kv_dim = s.n_kv_heads * HD;

  // Where position kv0 + threadIdx.x (threads below kKeyTile) keeps this KV
  // head's key and value: the row's offset in elements, -1 past kv_len.
  auto row_of = [&](int kv0) {
    return cache_row(table, s.block_size, kv_dim, kvh * HD, kv0 + static_cast<int>(threadIdx.x), kv_len);
  };
  const uint32_t shared_base = shared_address(shared);
  constexpr uint32_t kStaged = static_cast<uint32_t>(staged_tile_bytes<HD, kFp8>());
  __half* widened = reinterpret_cast<__half*>(reinterpret_cast<char*>(shared) + S * kStaged);  // kFp8
  auto copy_tile = [&](int kt) {
    const int stage = kt % S;
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

  // Tiles 0 .. S - 2 copying (a group each, empty past the last tile), the
  // rows of tile S - 1 looked up.
  if (threadIdx.x < kKeyTile) {
#pragma unroll
    for (int kt = 0; kt < S - 1; ++kt)
      if (kt < n_key_tiles) rows[kt][threadIdx.x] = row_of(kt * kKeyTile);
  }
  __syncthreads();
#pragma unroll
  for (int kt = 0; kt < S - 1; ++kt) {
    if (kt < n_key_tiles)
      copy_tile(kt);
    else
      copy_commit();
  }
  if (threadIdx.x < kKeyTile && S - 1 < n_key_tiles) rows[S - 1][threadIdx.x] = row_of((S - 1) * kKeyTile);

  // This lane's rows g and g + 8: query heads kvh * group + row, zero past
  // the group (finite scores, never stored).
  uint32_t qa[KS][4];
  const float q_scale = a.scale * 1.4426950408889634f;  // softmax in base 2
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int row = g + 8 * r;
    const bool valid = row < group;
    const float* q = a.q + t * a.q_stride + static_cast<int64_t>(kvh * group + (valid ? row : 0)) * HD + 2 * tq;
#pragma unroll
    for (int ks = 0; ks < KS; ++ks) {
      const float2 lo = valid ? *reinterpret_cast<const float2*>(q + 16 * ks) : make_float2(0.0f, 0.0f);
      const float2 hi = valid ? *reinterpret_cast<const float2*>(q + 16 * ks + 8) : make_float2(0.0f, 0.0f);
      qa[ks][r] = pack_half2(lo.x * q_scale, lo.y * q_scale);
      qa[ks][2 + r] = pack_half2(hi.x * q_scale, hi.y * q_scale);
    }
  }
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};
  float o[NT][4];
#pragma unroll
  for (int nt = 0; nt < NT; ++nt) o[nt][0] = o[nt][1] = o[nt][2] = o[nt][3] = 0.0f;
  // ldmatrix addresses as in prefill_attention, offset to this warp's 16 positions.
  const uint32_t k_lane = static_cast<uint32_t>(((warp * 16 + lane % 8) * LD + (lane / 8) * 8) * sizeof(__half));
  const uint32_t v_lane =
      static_cast<uint32_t>(((warp * 16 + lane % 8 + 8 * (lane / 8 % 2)) * LD + (lane / 16) * 8) * sizeof(__half));

  for (int kt = 0; kt < n_key_tiles; ++kt) {
    const int kv0 = kt * kKeyTile, stage = kt % S;
    __syncthreads();  // every warp is done with the stage the next copy overwrites
    if (kt + S - 1 < n_key_tiles)
      copy_tile(kt + S - 1);
    else
      copy_commit();  // an empty group: S - 1 groups stay younger than tile kt's
    copy_wait<S - 1>();
    const int64_t next_row = (threadIdx.x < kKeyTile && kt + S < n_key_tiles) ? row_of(kv0 + S * kKeyTile) : -1;
    __syncthreads();  // tile kt is in shared memory for every warp
    if constexpr (kFp8) {
      const uint8_t* staged = reinterpret_cast<const uint8_t*>(shared) + stage * kStaged;
      widen_tile<HD, LD, kKeyTile, kThreads>(staged, staged + kKeyTile * HD, widened, widened + kKeyTile * LD);
      __syncthreads();  // the widened tile is complete (every warp was past the last one's use at the loop's top)
    }
    const int p0 = kv0 + warp * 16;  // this warp's first position
    if (p0 <= pos) {  // position p0 is attended: every row's maximum is finite from here on
      const uint32_t k_base =
          kFp8 ? shared_address(widened) : shared_base + static_cast<uint32_t>(stage * 2 * kKeyTile * LD * sizeof(__half));
      const uint32_t v_base = k_base + static_cast<uint32_t>(kKeyTile * LD * sizeof(__half));
      float sc[2][4];
#pragma unroll
      for (int nt = 0; nt < 2; ++nt) {
        sc[nt][0] = sc[nt][1] = sc[nt][2] = sc[nt][3] = 0.0f;
        const uint32_t row = k_base + k_lane + static_cast<uint32_t>(nt * 8 * LD * sizeof(__half));
#pragma unroll
        for (int ks = 0; ks < KS; ks += 2) {
          uint32_t b[4];
          load_matrix_x4(b, row + static_cast<uint32_t>(ks * 16 * sizeof(__half)));
          mma_16816(sc[nt], qa[ks], b[0], b[1]);
          mma_16816(sc[nt], qa[ks + 1], b[2], b[3]);
        }
      }
      if (p0 + 15 > pos) {  // positions past the token's own
#pragma unroll
        for (int nt = 0; nt < 2; ++nt)
#pragma unroll
          for (int e = 0; e < 4; ++e)
            if (p0 + nt * 8 + 2 * tq + (e & 1) > pos) sc[nt][e] = -INFINITY;
      }
      float mx[2] = {m[0], m[1]}, corr[2], rowsum[2] = {0.0f, 0.0f};
#pragma unroll
      for (int nt = 0; nt < 2; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) mx[e >> 1] = fmaxf(mx[e >> 1], sc[nt][e]);
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
        mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
        corr[r] = exp2f(m[r] - mx[r]);  // m = -inf on the warp's first tile: 0
        m[r] = mx[r];
      }
      // P as the A fragment of one k-step of 16 positions.
      uint32_t pa[4];
#pragma unroll
      for (int nt = 0; nt < 2; ++nt) {
        const float p0v = exp2f(sc[nt][0] - m[0]), p1v = exp2f(sc[nt][1] - m[0]);
        const float p2v = exp2f(sc[nt][2] - m[1]), p3v = exp2f(sc[nt][3] - m[1]);
        rowsum[0] += p0v + p1v;
        rowsum[1] += p2v + p3v;
        pa[2 * nt] = pack_half2(p0v, p1v);
        pa[2 * nt + 1] = pack_half2(p2v, p3v);
      }
#pragma unroll
      for (int r = 0; r < 2; ++r) l[r] = l[r] * corr[r] + rowsum[r];
#pragma unroll
      for (int nt = 0; nt < NT; ++nt) {
        o[nt][0] *= corr[0];
        o[nt][1] *= corr[0];
        o[nt][2] *= corr[1];
        o[nt][3] *= corr[1];
      }
#pragma unroll
      for (int nt = 0; nt < NT; nt += 2) {
        uint32_t b[4];
        load_matrix_x4_trans(b, v_base + v_lane + static_cast<uint32_t>(nt * 8 * sizeof(__half)));
        mma_16816(o[nt], pa, b[0], b[1]);
        mma_16816(o[nt + 1], pa, b[2], b[3]);
      }
    }
    if (threadIdx.x < kKeyTile && kt + S < n_key_tiles) rows[stage][threadIdx.x] = next_row;
  }

  // The warps' results into shared memory (the stages are free once every
  // warp is past the loop), then each output merged over the warps in order.
  float* merge_o = reinterpret_cast<float*>(shared);       // [warp][row][HD]
  float* merge_ml = merge_o + kWarps * kMaxGroup * HD;     // [warp][row][max, sum]
  __syncthreads();
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    l[r] += __shfl_xor_sync(0xffffffffu, l[r], 1);
    l[r] += __shfl_xor_sync(0xffffffffu, l[r], 2);
    const int row = g + 8 * r;
    if (row >= group) continue;
    const int slot = warp * kMaxGroup + row;
    if (tq == 0) {
      merge_ml[2 * slot] = m[r];
      merge_ml[2 * slot + 1] = l[r];
    }
#pragma unroll
    for (int nt = 0; nt < NT; ++nt)
      *reinterpret_cast<float2*>(merge_o + slot * HD + nt * 8 + 2 * tq) = make_float2(o[nt][2 * r], o[nt][2 * r + 1]);
  }
  __syncthreads();
  const int64_t q_dim = static_cast<int64_t>(s.n_heads) * HD;
  // A warp writes 32 consecutive outputs of one query head (HD is a
  // multiple of 32, so group * HD is too and whole warps run each round):
  // with out_q, one quant block of the 8-bit o projection's input,
  // quantized as quantize_activations does it.
  for (int i = static_cast<int>(threadIdx.x); i < group * HD; i += kThreads) {
    const int row = i / HD, d = i % HD;
    float mx = -INFINITY;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) mx = fmaxf(mx, merge_ml[2 * (w * kMaxGroup + row)]);
    float sum = 0.0f, total = 0.0f;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) {
      const float mw = merge_ml[2 * (w * kMaxGroup + row)];
      if (mw == -INFINITY) continue;  // a warp whose positions all lie past the token's
      const float weight = exp2f(mw - mx);
      sum += weight * merge_o[(w * kMaxGroup + row) * HD + d];
      total += weight * merge_ml[2 * (w * kMaxGroup + row) + 1];
    }
    const int64_t index = t * q_dim + static_cast<int64_t>(kvh * group + row) * HD + d;
    const float v = sum / total;
    a.out[index] = v;
    if (a.out_q != nullptr) {
      const quantize_block::Scale qs = quantize_block::block_scale<32>(fabsf(v), 0xffffffffu);
      a.out_q[index] = quantize_block::quantize(v, qs);
      if (lane == 0) a.out_d[index / 32] = qs.d;
    }
  }
}

// Calls f(kernel, shared bytes) for head size hd, s stages and the cache type.
template <typename F>
void with_head_and_stages(int hd, int stages, KvCacheType cache, F&& f) {
  auto pick = [&](auto head) {
    constexpr int HD = decltype(head)::value;
    const bool fp8 = cache == KvCacheType::Fp8E4M3;
    if (stages == 3 && fp8)
      f(grouped_decode_attention_kernel<HD, 3, true>, shared_bytes<HD, 3, true>());
    else if (stages == 3)
      f(grouped_decode_attention_kernel<HD, 3, false>, shared_bytes<HD, 3, false>());
    else if (fp8)
      f(grouped_decode_attention_kernel<HD, 2, true>, shared_bytes<HD, 2, true>());
    else
      f(grouped_decode_attention_kernel<HD, 2, false>, shared_bytes<HD, 2, false>());
  };
  switch (hd) {
    case 32: pick(std::integral_constant<int, 32>{}); break;
    case 64: pick(std::integral_constant<int, 64>{}); break;
    case 96: pick(std::integral_constant<int, 96>{}); break;
    case 128: pick(std::integral_constant<int, 128>{}); break;
    default: throw Error("internal: grouped decode attention for head size " + std::to_string(hd));
  }
}

}  // namespace

int grouped_decode_attention_init(const AttentionShape& shape, int device, KvCacheType cache) {
  int major = 0;
  TANDEM_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
  const int hd = shape.head_dim;
  if (major < 8 || !(hd == 32 || hd == 64 || hd == 96 || hd == 128) || shape.n_kv_heads <= 0 ||
      shape.n_heads % shape.n_kv_heads != 0 || shape.n_heads / shape.n_kv_heads > kMaxGroup)
    return 0;
  // Three stages where a block may take their shared memory (with the
  // kernel's static cache rows): 104 KiB at head size 128, more than sm_86
  // and sm_89 give a block.
  int optin = 0;
  TANDEM_CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  size_t three = 0;
  with_head_and_stages(hd, 3, cache, [&](auto, size_t bytes) { three = bytes; });
  const int max_stages = three + 3 * kKeyTile * sizeof(int64_t) <= static_cast<size_t>(optin) ? 3 : 2;
  int current = 0;
  TANDEM_CUDA_CHECK(cudaGetDevice(&current));
  TANDEM_CUDA_CHECK(cudaSetDevice(device));
  auto allow = [](auto kernel, size_t bytes) {
    TANDEM_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)));
  };
  for (int stages = 2; stages <= max_stages; ++stages)
    with_head_and_stages(hd, stages, cache, [&](auto kernel, size_t bytes) { allow(kernel, bytes); });
  TANDEM_CUDA_CHECK(cudaSetDevice(current));
  return max_stages;
}

bool grouped_decode_attention_takes(const AttentionShape& shape, int64_t n_tokens, int sm_count) {
  // From a block for every third SM. H100, 8 KV heads, us a call against
  // paged_attention's choice (cuda_attention_bench): 8 tokens x 640
  // positions (64 blocks) 21.9 against 24.8, 16 x 640 25.2 against 47.7,
  // 32 x 640 39.6 against 40.4, 128 x 640 123.9 against 151.5. Fewer
  // tokens keep paged_attention, which splits their positions over blocks.
  return 3 * n_tokens * shape.n_kv_heads >= sm_count;
}

int grouped_decode_attention_stages(const AttentionShape& shape, int64_t n_tokens, int sm_count, int max_stages) {
  // Three stages where the blocks are few enough that each SM's blocks must
  // keep more tiles in flight. H100, 8 KV heads, us a call, 2 against 3
  // stages (cuda_attention_bench): 8 tokens x 640 positions 20.60 against
  // 18.75, 16 x 640 24.04 / 21.84, 32 x 512 32.55 / 28.68, 32 x 640 39.33 /
  // 35.12, 64 x 640 66.58 / 64.91; 128 x 640 (1024 blocks) 123.84 / 124.03,
  // alike from there. Two stages where the device's shared memory holds
  // no more (sm_86, sm_89: 99 KB a block).
  const int64_t blocks = n_tokens * shape.n_kv_heads;
  return blocks <= 4 * int64_t{sm_count} && max_stages >= 3 ? 3 : 2;
}

void grouped_decode_attention(const AttentionArgs& args, const AttentionShape& shape, int64_t n_tokens, int stages,
                              cudaStream_t stream) {
  check(shape.n_kv_heads > 0 && shape.n_heads % shape.n_kv_heads == 0 &&
            shape.n_heads / shape.n_kv_heads <= kMaxGroup,
        "internal: grouped decode attention takes up to 16 query heads a KV head");
  check(args.out_q == nullptr || args.out_d != nullptr, "internal: grouped decode attention quantizes into out_q and out_d");
  if (n_tokens == 0) return;
  check(n_tokens <= 2147483647, "internal: too many tokens for one grid");
  const dim3 grid(static_cast<unsigned>(n_tokens), static_cast<unsigned>(shape.n_kv_heads));
  check(stages == 2 || stages == 3, "internal: grouped decode attention copies 2 or 3 stages deep");
  with_head_and_stages(shape.head_dim, stages, args.cache_type, [&](auto kernel, size_t bytes) {
    launch_with_shared(kernel, grid, kThreads, bytes, stream, args, shape);
  });
  TANDEM_CUDA_CHECK(cudaGetLastError());
}

}  // namespace tandem::cuda
