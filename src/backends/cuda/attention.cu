// Paged causal attention for prefill and decode. One block per (token, query
// head, split); the split's warps take tiles of 32 cached positions: each
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
#include "backends/cuda/launch.h"

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

// DPL: head_dim / 32 rounded up. When head_dim == 32 * DPL and DPL <= 4,
// lane j owns dims [j * DPL, (j + 1) * DPL) and loads the tile's 32 value
// rows together with its keys, so a tile waits for memory once; otherwise
// lane j owns dims j, j + 32, ... and loads values after the softmax.
template <int DPL>
__global__ void __launch_bounds__(kWarps * 32) paged_attention_kernel(AttentionArgs a, AttentionShape s) {
  __shared__ float q_s[kMaxHeadDim];
  __shared__ float part_m[kWarps], part_l[kWarps];
  __shared__ float part_acc[kWarps][kMaxHeadDim];

  let_successor_start();
  wait_for_predecessor();
  const int64_t t = blockIdx.x;
  const int h = blockIdx.y;
  const int split = blockIdx.z, n_splits = gridDim.z;
  const int hd = s.head_dim;
  const int kvh = h / (s.n_heads / s.n_kv_heads);
  const int64_t q_dim = static_cast<int64_t>(s.n_heads) * hd;
  const int64_t kv_dim = static_cast<int64_t>(s.n_kv_heads) * hd;
  const int pos = a.positions[t];
  const int32_t* table = a.block_tables + a.table_offsets[t];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const bool contiguous = DPL <= 4 && hd == 32 * DPL;
  auto dim_of = [&](int i) { return contiguous ? lane * DPL + i : lane + 32 * i; };

  for (int d = threadIdx.x; d < hd; d += blockDim.x) q_s[d] = a.q[t * a.q_stride + h * hd + d] * a.scale;
  __syncthreads();

  float m = -FLT_MAX, l = 0.0f;
  float acc[DPL];
#pragma unroll
  for (int i = 0; i < DPL; ++i) acc[i] = 0.0f;

  // This split's positions [begin, end): runs of whole block-rounds of
  // tiles, so that each warp of a busy split has work.
  const int n_pos = pos + 1;
  constexpr int kRound = kWarps * kTile;
  const int run = ((n_pos + n_splits - 1) / n_splits + kRound - 1) / kRound * kRound;
  const int begin = split * run, end = min(n_pos, begin + run);
  using ValueVector = typename HalfVector<DPL>::type;
  for (int base = begin + warp * kTile; base < end; base += kRound) {
    const int j = base + lane;
    const bool valid = j < end;
    // Lanes past the end read position `base` (valid, finite) with weight 0.
    const int jc = valid ? j : base;
    const int64_t slot = static_cast<int64_t>(table[jc / s.block_size]) * s.block_size + jc % s.block_size;
    ValueVector values[kTile];
    if (contiguous) {
#pragma unroll
      for (int jj = 0; jj < kTile; ++jj) {
        const int64_t slot_j = __shfl_sync(0xffffffffu, slot, jj);
        values[jj] = *reinterpret_cast<const ValueVector*>(a.v_cache + slot_j * kv_dim + kvh * hd + lane * DPL);
      }
    }
    const uint4* k = reinterpret_cast<const uint4*>(a.k_cache + slot * kv_dim + kvh * hd);
    float dot = 0.0f;
#pragma unroll
    for (int v = 0; v < DPL * 4; ++v) {
      if (v < hd / 8) {
        const uint4 raw = k[v];
        const __half2* k2 = reinterpret_cast<const __half2*>(&raw);
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const float2 kf = __half22float2(k2[e]);
          dot = fmaf(q_s[8 * v + 2 * e], kf.x, dot);
          dot = fmaf(q_s[8 * v + 2 * e + 1], kf.y, dot);
        }
      }
    }
    const float score = valid ? dot : -FLT_MAX;
    const float m_new = fmaxf(m, warp_max(score));
    const float p = valid ? __expf(score - m_new) : 0.0f;
    const float correction = __expf(m - m_new);
    l = l * correction + warp_sum(p);
#pragma unroll
    for (int i = 0; i < DPL; ++i) acc[i] *= correction;
    // All 32 positions; the padding lanes add p = 0 times finite values.
    if (contiguous) {
#pragma unroll
      for (int jj = 0; jj < kTile; ++jj) {
        const float pj = __shfl_sync(0xffffffffu, p, jj);
        const __half* v = reinterpret_cast<const __half*>(&values[jj]);
#pragma unroll
        for (int i = 0; i < DPL; ++i) acc[i] = fmaf(pj, __half2float(v[i]), acc[i]);
      }
    } else {
#pragma unroll 16
      for (int jj = 0; jj < kTile; ++jj) {
        const float pj = __shfl_sync(0xffffffffu, p, jj);
        const int64_t slot_j = __shfl_sync(0xffffffffu, slot, jj);
        const __half* v = a.v_cache + slot_j * kv_dim + kvh * hd;
#pragma unroll
        for (int i = 0; i < DPL; ++i) {
          const int d = lane + 32 * i;
          if (d < hd) acc[i] = fmaf(pj, __half2float(v[d]), acc[i]);
        }
      }
    }
    m = m_new;
  }

  if (lane == 0) {
    part_m[warp] = m;
    part_l[warp] = l;
  }
#pragma unroll
  for (int i = 0; i < DPL; ++i) {
    const int d = dim_of(i);
    if (d < hd) part_acc[warp][d] = acc[i];
  }
  __syncthreads();
  float m_all = -FLT_MAX;
  for (int w = 0; w < kWarps; ++w) m_all = fmaxf(m_all, part_m[w]);
  float l_all = 0.0f;
  float weight[kWarps];
  for (int w = 0; w < kWarps; ++w) {
    weight[w] = part_l[w] > 0.0f ? __expf(part_m[w] - m_all) : 0.0f;
    l_all += part_l[w] * weight[w];
  }
  float* out = a.out + t * q_dim + h * hd;
  if (n_splits == 1) {
    const float inv = 1.0f / l_all;
    for (int d = threadIdx.x; d < hd; d += blockDim.x) {
      float o = 0.0f;
      for (int w = 0; w < kWarps; ++w) o += part_acc[w][d] * weight[w];
      out[d] = o * inv;
    }
    return;
  }

  // Several splits: this one's (m, l, acc[hd]) relative to m_all goes to the
  // workspace; the last to finish merges all of them.
  const int64_t pair = t * gridDim.y + h;
  float* mine = a.split_partials + (pair * n_splits + split) * (kMaxHeadDim + 2);
  if (threadIdx.x == 0) {
    mine[0] = m_all;
    mine[1] = l_all;
  }
  for (int d = threadIdx.x; d < hd; d += blockDim.x) {
    float o = 0.0f;
    for (int w = 0; w < kWarps; ++w) o += part_acc[w][d] * weight[w];
    mine[2 + d] = o;
  }
  __shared__ bool last;
  __syncthreads();
  if (threadIdx.x == 0) {
    __threadfence();  // the partial is visible before the count says so
    last = atomicAdd(a.split_counters + pair, 1) == n_splits - 1;
    if (last) {
      a.split_counters[pair] = 0;  // ready for the next launch
      __threadfence();             // the others' partials are read after their counts
    }
  }
  __syncthreads();
  if (!last) return;
  const float* parts = a.split_partials + pair * n_splits * (kMaxHeadDim + 2);
  float m_max = -FLT_MAX;
  for (int k = 0; k < n_splits; ++k) m_max = fmaxf(m_max, __ldcg(parts + k * (kMaxHeadDim + 2)));
  float l_sum = 0.0f;
  for (int k = 0; k < n_splits; ++k) {
    const float lk = __ldcg(parts + k * (kMaxHeadDim + 2) + 1);
    if (lk > 0.0f) l_sum += lk * __expf(__ldcg(parts + k * (kMaxHeadDim + 2)) - m_max);
  }
  const float inv = 1.0f / l_sum;
  for (int d = threadIdx.x; d < hd; d += blockDim.x) {
    float o = 0.0f;
    for (int k = 0; k < n_splits; ++k) {
      const float* pk = parts + k * (kMaxHeadDim + 2);
      const float lk = __ldcg(pk + 1);
      if (lk > 0.0f) o += __ldcg(pk + 2 + d) * __expf(__ldcg(pk) - m_max);
    }
    out[d] = o * inv;
  }
}

}  // namespace

int attention_splits(const AttentionShape& shape, int64_t n_tokens, int sm_count) {
  const int64_t pairs = n_tokens * shape.n_heads;
  if (pairs <= 0 || pairs >= sm_count) return 1;
  const int64_t want = (2 * sm_count + pairs - 1) / pairs;
  const int64_t fit = kAttentionSplitSlots / pairs;
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>({want, kMaxAttentionSplits, fit})));
}

void paged_attention(const AttentionArgs& args, const AttentionShape& shape, int64_t n_tokens, int n_splits,
                     cudaStream_t stream) {
  check(shape.head_dim % 8 == 0 && shape.head_dim <= kMaxHeadDim,
        "the CUDA engine's attention supports head sizes that are multiples of 8, up to 256");
  check(shape.n_kv_heads > 0 && shape.n_heads % shape.n_kv_heads == 0, "internal: heads not a multiple of KV heads");
  check(n_splits == 1 || (args.split_partials && args.split_counters &&
                          n_tokens * shape.n_heads * n_splits <= kAttentionSplitSlots && n_splits <= kMaxAttentionSplits),
        "internal: attention splits without room in the workspace");
  if (n_tokens == 0) return;
  const dim3 grid(static_cast<unsigned>(n_tokens), static_cast<unsigned>(shape.n_heads), static_cast<unsigned>(n_splits));
  const int dpl = (shape.head_dim + 31) / 32;
  if (dpl <= 1) {
    launch(paged_attention_kernel<1>, grid, kWarps * 32, stream, args, shape);
  } else if (dpl <= 2) {
    launch(paged_attention_kernel<2>, grid, kWarps * 32, stream, args, shape);
  } else if (dpl <= 4) {
    launch(paged_attention_kernel<4>, grid, kWarps * 32, stream, args, shape);
  } else {
    launch(paged_attention_kernel<8>, grid, kWarps * 32, stream, args, shape);
  }
  TANDEM_CUDA_CHECK(cudaGetLastError());
}

}  // namespace tandem::cuda
