// Paged causal attention for decode (and prompt tokens where the tensor-core
// kernel does not serve the shape). One block per (token, group of query
// heads sharing a KV head, split); the split's warps take tiles of 32 cached positions: each
// lane scores one position against q, the warp keeps an online softmax, and
// the lanes then accumulate the tile's values over their slice of head_dim.
// The warps' partial results merge in shared memory. With several splits
// (small decode batches, where one block per head would leave most SMs idle)
// each split writes its partial result to the workspace and the last split
// of a (token, head) to finish merges them all, in split order.
#include <cuda_fp16.h>

#include <algorithm>
#include <cfloat>

#include "backends/cuda/cuda_check.h"
#include "backends/cuda/kernels.h"
#include "backends/cuda/kv_cache_element.cuh"
#include "backends/cuda/launch.h"
#include "backends/cuda/quantize_block.cuh"

namespace tandem::cuda {
namespace {

constexpr int kWarps = 4;
constexpr int kTile = 32;
constexpr int kMaxHeadDim = 256;

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int off = 16; off > 0; off /= 2) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, off));
  return v;
}
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int off = 16; off > 0; off /= 2) v += __shfl_xor_sync(0xffffffffu, v, off);
  return v;
}

// Writes out[index] = v and, with a.out_q, the warp's 32 consecutive
// outputs (one quant block: head_dim is a multiple of 32 then) quantized as
// quantize_activations does it (quantize_block.cuh). Every lane of the warp
// calls it.
__device__ __forceinline__ void write_output(const AttentionArgs& a, int64_t index, float v) {
  a.out[index] = v;
  if (a.out_q == nullptr) return;
  const quantize_block::Scale s = quantize_block::block_scale<32>(fabsf(v), 0xffffffffu);
  a.out_q[index] = quantize_block::quantize(v, s);
  if (threadIdx.x % 32 == 0) a.out_d[index / 32] = s.d;
}

// DPL halves of one lane's value slice, loaded at once.
template <int DPL>
struct HalfVector;
template <>
struct HalfVector<1> { using type = __half; };
template <>
struct HalfVector<2> { using type = uint32_t; };
template <>
struct HalfVector<4> { using type = uint2; };
template <>
struct HalfVector<8> { using type = uint4; };

// How the kernel reads a cache of element type C (__half, or E4M3 bytes):
// DPL values of a lane's value slice at once, keys 8 values a vector, and
// each value widened to float (E4M3 through f16, exactly).
template <typename C>
struct CacheRead;
template <>
struct CacheRead<__half> {
  template <int DPL>
  using Values = typename HalfVector<DPL>::type;
  using Keys8 = uint4;
  __device__ static float2 pair(const Keys8& k, int e) { return __half22float2(reinterpret_cast<const __half2*>(&k)[e]); }
  __device__ static float value(__half v) { return __half2float(v); }
};
template <int DPL>
struct ByteVector;
template <>
struct ByteVector<1> { using type = uint8_t; };
template <>
struct ByteVector<2> { using type = uint16_t; };
template <>
struct ByteVector<4> { using type = uint32_t; };
template <>
struct ByteVector<8> { using type = uint2; };
template <>
struct CacheRead<__nv_fp8_storage_t> {
  template <int DPL>
  using Values = typename ByteVector<DPL>::type;
  using Keys8 = uint2;
  __device__ static float2 pair(const Keys8& k, int e) {
    return __half22float2(kv_cache_element::fp8x2_to_half2(reinterpret_cast<const __nv_fp8x2_storage_t*>(&k)[e]));
  }
  __device__ static float value(__nv_fp8_storage_t v) { return __half2float(kv_cache_element::fp8_to_half(v)); }
};

// DPL: head_dim / 32 rounded up. When head_dim == 32 * DPL and DPL <= 4,
// lane j owns dims [j * DPL, (j + 1) * DPL) and loads the tile's 32 value
// rows together with its keys, so a tile waits for memory once; otherwise
// lane j owns dims j, j + 32, ... and loads values after the softmax.
// GP: query heads per block, all of one KV head (GQA), so that the block
// reads each cached key and value once for all of them. A head's
// arithmetic is the same whatever GP is (the same operations in the same
// order), so GP never changes a result.
// C: the cache's element type (CacheRead).
template <int DPL, int GP, typename C>
__global__ void __launch_bounds__(kWarps * 32) paged_attention_kernel(AttentionArgs a, AttentionShape s) {
  constexpr int HD = 32 * DPL;  // head_dim, at most
  using Read = CacheRead<C>;
  const C* k_cache = static_cast<const C*>(a.k_cache);
  const C* v_cache = static_cast<const C*>(a.v_cache);
  __shared__ float q_s[GP][HD];
  __shared__ float part_m[kWarps][GP], part_l[kWarps][GP];
  __shared__ float part_acc[kWarps][GP][HD];
  __shared__ float merge_weight[GP][kWarps], merged_l[GP];

  let_successor_start();
  const int64_t t = blockIdx.x;
  const int split = blockIdx.z, n_splits = gridDim.z;
  const int hd = s.head_dim;
  const int group = s.n_heads / s.n_kv_heads;             // query heads per KV head
  const int blocks_per_kv = (group + GP - 1) / GP;
  const int kvh = blockIdx.y / blocks_per_kv;
  const int h0 = kvh * group + (blockIdx.y % blocks_per_kv) * GP;  // this block's first query head
  const int nh = min(GP, kvh * group + group - h0);                 // and how many
  const int64_t q_dim = static_cast<int64_t>(s.n_heads) * hd;
  const int64_t kv_dim = static_cast<int64_t>(s.n_kv_heads) * hd;
  const int pos = a.positions[t];
  const int32_t* table = a.block_tables + a.table_offsets[t];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const bool contiguous = DPL <= 4 && hd == 32 * DPL;
  auto dim_of = [&](int i) { return contiguous ? lane * DPL + i : lane + 32 * i; };


  float m[GP], l[GP], acc[GP][DPL];
#pragma unroll
  for (int g = 0; g < GP; ++g) {
    m[g] = -FLT_MAX;
    l[g] = 0.0f;
#pragma unroll
    for (int i = 0; i < DPL; ++i) acc[g][i] = 0.0f;
  }

  // This split's positions [begin, end): runs of whole tiles, dealt to the
  // warps in turn.
  const int n_pos = pos + 1;
  constexpr int kRound = kWarps * kTile;
  const int run = ((n_pos + n_splits - 1) / n_splits + kTile - 1) / kTile * kTile;
  const int begin = split * run, end = min(n_pos, begin + run);
  using ValueVector = typename Read::template Values<DPL>;
  using KeyVector = typename Read::Keys8;
  ValueVector values[kTile];  // contiguous: this lane's dims of the tile's 32 value rows
  KeyVector keys[DPL * 4];    // this lane's key (position base + lane), hd / 8 vectors
  int64_t slot = 0;
  // Loads the tile at `base`: slots, the lane's key and (contiguous) the
  // values. Lanes past the end read position `base` (their scores are masked
  // and they get weight 0). `only` >= 0 reloads whatever was read from
  // position `only` (a lane's key, value rows; the padding's too when `base`
  // is `only`), for the reload after the wait: in an early load the token's
  // own position holds whatever bits were there (NaN in reused memory), and
  // those must never meet p = 0.
  auto load_tile = [&](int base, int only) {
    const int j = base + lane;
    const int jc = j < end ? j : base;
    slot = static_cast<int64_t>(table[jc / s.block_size]) * s.block_size + jc % s.block_size;
    if (contiguous) {
#pragma unroll
      for (int jj = 0; jj < kTile; ++jj) {
        const int64_t slot_j = __shfl_sync(0xffffffffu, slot, jj);
        const int position_j = base + jj < end ? base + jj : base;
        if (only < 0 || position_j == only)
          values[jj] = *reinterpret_cast<const ValueVector*>(v_cache + slot_j * kv_dim + kvh * hd + lane * DPL);
      }
    }
    const KeyVector* k = reinterpret_cast<const KeyVector*>(k_cache + slot * kv_dim + kvh * hd);
    if (only < 0 || jc == only) {
#pragma unroll
      for (int v = 0; v < DPL * 4; ++v)
        if (v < hd / 8) keys[v] = k[v];
    }
  };
  // Decode steps: positions before pos were cached by earlier steps, so the
  // first tile loads before the wait, overlapping the kernels before this
  // one; position pos (written by this step's qkv_finish, or the q·k·v GEMV
  // that finishes q, k and v) is reloaded after.
  const int first = begin + warp * kTile;
  const bool early = a.decode_only && first < end;
  if (early) load_tile(first, -1);
  wait_for_predecessor();
  if (early && pos >= first && pos < first + kTile) load_tile(first, pos);

  for (int i = threadIdx.x; i < GP * hd; i += blockDim.x) {
    const int g = i / hd, d = i % hd;
    q_s[g][d] = g < nh ? a.q[t * a.q_stride + static_cast<int64_t>(h0 + g) * hd + d] * a.scale : 0.0f;
  }
  __syncthreads();

  for (int base = first; base < end; base += kRound) {
    const int j = base + lane;
    const bool valid = j < end;
    if (!(early && base == first)) load_tile(base, -1);
    float dot[GP];
#pragma unroll
    for (int g = 0; g < GP; ++g) dot[g] = 0.0f;
#pragma unroll
    for (int v = 0; v < DPL * 4; ++v) {
      if (v < hd / 8) {
        const KeyVector raw = keys[v];
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const float2 kf = Read::pair(raw, e);
#pragma unroll
          for (int g = 0; g < GP; ++g) {
            dot[g] = fmaf(q_s[g][8 * v + 2 * e], kf.x, dot[g]);
            dot[g] = fmaf(q_s[g][8 * v + 2 * e + 1], kf.y, dot[g]);
          }
        }
      }
    }
    float p[GP];
#pragma unroll
    for (int g = 0; g < GP; ++g) {
      const float score = valid ? dot[g] : -FLT_MAX;
      const float m_new = fmaxf(m[g], warp_max(score));
      p[g] = valid ? __expf(score - m_new) : 0.0f;
      const float correction = __expf(m[g] - m_new);
      l[g] = l[g] * correction + warp_sum(p[g]);
#pragma unroll
      for (int i = 0; i < DPL; ++i) acc[g][i] *= correction;
      m[g] = m_new;
    }
    // All 32 positions; the padding lanes add p = 0 times position `base`'s
    // (written, finite) values. A test to skip them here instead kept the
    // compiler from pipelining the loop: 4 sequences x 512 positions took
    // 20.5 us against 13.9.
    if (contiguous) {
#pragma unroll
      for (int jj = 0; jj < kTile; ++jj) {
        const C* v = reinterpret_cast<const C*>(&values[jj]);
#pragma unroll
        for (int g = 0; g < GP; ++g) {
          const float pj = __shfl_sync(0xffffffffu, p[g], jj);
#pragma unroll
          for (int i = 0; i < DPL; ++i) acc[g][i] = fmaf(pj, Read::value(v[i]), acc[g][i]);
        }
      }
    } else {
#pragma unroll 16
      for (int jj = 0; jj < kTile; ++jj) {
        const int64_t slot_j = __shfl_sync(0xffffffffu, slot, jj);
        const C* v = v_cache + slot_j * kv_dim + kvh * hd;
        float vf[DPL];
#pragma unroll
        for (int i = 0; i < DPL; ++i) {
          const int d = lane + 32 * i;
          vf[i] = d < hd ? Read::value(v[d]) : 0.0f;
        }
#pragma unroll
        for (int g = 0; g < GP; ++g) {
          const float pj = __shfl_sync(0xffffffffu, p[g], jj);
#pragma unroll
          for (int i = 0; i < DPL; ++i)
            if (lane + 32 * i < hd) acc[g][i] = fmaf(pj, vf[i], acc[g][i]);
        }
      }
    }
  }

#pragma unroll
  for (int g = 0; g < GP; ++g) {
    if (lane == 0) {
      part_m[warp][g] = m[g];
      part_l[warp][g] = l[g];
    }
#pragma unroll
    for (int i = 0; i < DPL; ++i) {
      const int d = dim_of(i);
      if (d < hd) part_acc[warp][g][d] = acc[g][i];
    }
  }
  __syncthreads();
  // Each head's warps merge with weights exp(m_w - m_all), in warp order.
  if (threadIdx.x < GP) {
    const int g = threadIdx.x;
    float m_all = -FLT_MAX;
    for (int w = 0; w < kWarps; ++w) m_all = fmaxf(m_all, part_m[w][g]);
    float l_all = 0.0f;
    for (int w = 0; w < kWarps; ++w) {
      merge_weight[g][w] = part_l[w][g] > 0.0f ? __expf(part_m[w][g] - m_all) : 0.0f;
      l_all += part_l[w][g] * merge_weight[g][w];
    }
    part_m[0][g] = m_all;  // read below, after the barrier, by the split path
    merged_l[g] = l_all;
  }
  __syncthreads();
  if (n_splits == 1) {
    for (int i = threadIdx.x; i < nh * hd; i += blockDim.x) {
      const int g = i / hd, d = i % hd;
      float o = 0.0f;
      for (int w = 0; w < kWarps; ++w) o += part_acc[w][g][d] * merge_weight[g][w];
      write_output(a, t * q_dim + static_cast<int64_t>(h0 + g) * hd + d, o * (1.0f / merged_l[g]));
    }
    return;
  }

  // Several splits: this one's (m, l, acc[hd]) of each head, relative to its
  // m_all, goes to the workspace; the last split of the block's heads to
  // finish merges them all.
  for (int i = threadIdx.x; i < nh * (hd + 2); i += blockDim.x) {
    const int g = i / (hd + 2), d = i % (hd + 2);
    const int64_t pair = t * s.n_heads + h0 + g;
    float* mine = a.split_partials + (pair * n_splits + split) * (kMaxHeadDim + 2);
    if (d == 0) {
      mine[0] = part_m[0][g];
    } else if (d == 1) {
      mine[1] = merged_l[g];
    } else {
      float o = 0.0f;
      for (int w = 0; w < kWarps; ++w) o += part_acc[w][g][d - 2] * merge_weight[g][w];
      mine[d] = o;
    }
  }
  __shared__ bool last;
  __syncthreads();
  const int64_t counter = t * s.n_heads + h0;
  if (threadIdx.x == 0) {
    __threadfence();  // the partials are visible before the count says so
    last = atomicAdd(a.split_counters + counter, 1) == n_splits - 1;
    if (last) {
      a.split_counters[counter] = 0;  // ready for the next launch
      __threadfence();                // the others' partials are read after their counts
    }
  }
  __syncthreads();
  if (!last) return;
  // Every split's (m, l) of each head in one round of loads, then each
  // output element's partials in one more: the loads of a round are issued
  // together. Sums run in split order.
  __shared__ float split_m[GP][kMaxAttentionSplits], split_l[GP][kMaxAttentionSplits];
  __shared__ float split_weight[GP][kMaxAttentionSplits], inv_l[GP];
  for (int i = threadIdx.x; i < nh * n_splits; i += blockDim.x) {
    const int g = i / n_splits, k = i % n_splits;
    const float* pk = a.split_partials + ((t * s.n_heads + h0 + g) * n_splits + k) * (kMaxHeadDim + 2);
    split_m[g][k] = __ldcg(pk);
    split_l[g][k] = __ldcg(pk + 1);
  }
  __syncthreads();
  if (threadIdx.x < nh) {
    const int g = threadIdx.x;
    float m_max = -FLT_MAX;
    for (int k = 0; k < n_splits; ++k) m_max = fmaxf(m_max, split_m[g][k]);
    float l_sum = 0.0f;
    for (int k = 0; k < n_splits; ++k) {
      const float lk = split_l[g][k];
      const float w = lk > 0.0f ? __expf(split_m[g][k] - m_max) : 0.0f;
      split_weight[g][k] = w;
      if (lk > 0.0f) l_sum += lk * w;
    }
    inv_l[g] = 1.0f / l_sum;
  }
  __syncthreads();
  for (int i = threadIdx.x; i < nh * hd; i += blockDim.x) {
    const int g = i / hd, d = i % hd;
    const float* parts = a.split_partials + (t * s.n_heads + h0 + g) * n_splits * (kMaxHeadDim + 2) + 2 + d;
    float acc_k[kMaxAttentionSplits];
#pragma unroll
    for (int k = 0; k < kMaxAttentionSplits; ++k)
      acc_k[k] = k < n_splits && split_l[g][k] > 0.0f ? __ldcg(parts + k * (kMaxHeadDim + 2)) : 0.0f;
    float o = 0.0f;
#pragma unroll
    for (int k = 0; k < kMaxAttentionSplits; ++k)
      if (k < n_splits && split_l[g][k] > 0.0f) o += acc_k[k] * split_weight[g][k];
    write_output(a, t * q_dim + static_cast<int64_t>(h0 + g) * hd + d, o * inv_l[g]);
  }
}

template <int DPL, typename C>
void launch_paged_attention(dim3 grid, int heads_per_block, cudaStream_t stream, const AttentionArgs& args,
                            const AttentionShape& shape) {
  switch (heads_per_block) {
    case 1: launch(paged_attention_kernel<DPL, 1, C>, grid, kWarps * 32, stream, args, shape); break;
    case 2: launch(paged_attention_kernel<DPL, 2, C>, grid, kWarps * 32, stream, args, shape); break;
    case 4: launch(paged_attention_kernel<DPL, 4, C>, grid, kWarps * 32, stream, args, shape); break;
    default: launch(paged_attention_kernel<DPL, 8, C>, grid, kWarps * 32, stream, args, shape); break;
  }
}
template <int DPL>
void launch_paged_attention(dim3 grid, int heads_per_block, cudaStream_t stream, const AttentionArgs& args,
                            const AttentionShape& shape) {
  if (args.cache_type == KvCacheType::Fp8E4M3)
    launch_paged_attention<DPL, __nv_fp8_storage_t>(grid, heads_per_block, stream, args, shape);
  else
    launch_paged_attention<DPL, __half>(grid, heads_per_block, stream, args, shape);
}

}  // namespace

int attention_heads_per_block(const AttentionShape& shape, int64_t n_tokens, int sm_count) {
  const int group = shape.n_heads / std::max(shape.n_kv_heads, 1);
  int hpb = 1;
  while (hpb < group && hpb < kMaxAttentionHeadsPerBlock) hpb *= 2;
  // Grouped blocks only where they alone fill the GPU; a few tokens keep a
  // block per head (and split their positions instead).
  const int64_t blocks = n_tokens * shape.n_kv_heads * ((group + hpb - 1) / hpb);
  return blocks >= sm_count ? hpb : 1;
}

int attention_splits(const AttentionShape& shape, int64_t n_tokens, int sm_count, int heads_per_block) {
  const int group = shape.n_heads / std::max(shape.n_kv_heads, 1);
  const int64_t blocks = n_tokens * shape.n_kv_heads * ((group + heads_per_block - 1) / heads_per_block);
  if (blocks <= 0 || blocks >= sm_count) return 1;
  const int64_t want = (2 * sm_count + blocks - 1) / blocks;
  const int64_t fit = kAttentionSplitSlots / (n_tokens * shape.n_heads);
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>({want, kMaxAttentionSplits, fit})));
}

void paged_attention(const AttentionArgs& args, const AttentionShape& shape, int64_t n_tokens, int n_splits,
                     cudaStream_t stream, int heads_per_block) {
  check(shape.head_dim % 8 == 0 && shape.head_dim <= kMaxHeadDim,
        "the CUDA engine's attention supports head sizes that are multiples of 8, up to 256");
  check(shape.n_kv_heads > 0 && shape.n_heads % shape.n_kv_heads == 0, "internal: heads not a multiple of KV heads");
  check(heads_per_block == 1 || heads_per_block == 2 || heads_per_block == 4 || heads_per_block == 8,
        "internal: attention heads per block must be 1, 2, 4 or 8");
  check(args.out_q == nullptr || (args.out_d != nullptr && shape.head_dim % 32 == 0),
        "internal: attention quantizes its output in blocks of 32 values of a head");
  check(n_splits == 1 || (args.split_partials && args.split_counters &&
                          n_tokens * shape.n_heads * n_splits <= kAttentionSplitSlots && n_splits <= kMaxAttentionSplits),
        "internal: attention splits without room in the workspace");
  if (n_tokens == 0) return;
  const int group = shape.n_heads / shape.n_kv_heads;
  const int blocks_per_kv = (group + heads_per_block - 1) / heads_per_block;
  const dim3 grid(static_cast<unsigned>(n_tokens), static_cast<unsigned>(shape.n_kv_heads * blocks_per_kv),
                  static_cast<unsigned>(n_splits));
  const int dpl = (shape.head_dim + 31) / 32;
  if (dpl <= 1) {
    launch_paged_attention<1>(grid, heads_per_block, stream, args, shape);
  } else if (dpl <= 2) {
    launch_paged_attention<2>(grid, heads_per_block, stream, args, shape);
  } else if (dpl <= 4) {
    launch_paged_attention<4>(grid, heads_per_block, stream, args, shape);
  } else {
    launch_paged_attention<8>(grid, heads_per_block, stream, args, shape);
  }
  TANDEM_CUDA_CHECK(cudaGetLastError());
}

}  // namespace tandem::cuda
