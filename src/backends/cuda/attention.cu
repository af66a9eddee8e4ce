// Paged causal attention for prefill and decode. One block per (token, query
// head); its warps take tiles of 32 cached positions: each lane scores one
// position against q, the warp keeps an online softmax, and the lanes then
// accumulate the tile's values over their slice of head_dim. The warps'
// partial results merge in shared memory at the end.
#include <cuda_fp16.h>

#include <cfloat>

#include "backends/cuda/cuda_check.h"
#include "backends/cuda/kernels.h"

namespace tandem::cuda {
namespace {

constexpr int kWarps = 8;  // a decode token over ~600 positions: 2-3 tiles per warp
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

// DPL: head_dim / 32 rounded up (lane j owns dims j, j + 32, ...).
template <int DPL>
__global__ void __launch_bounds__(kWarps * 32) paged_attention_kernel(AttentionArgs a, AttentionShape s) {
  __shared__ float q_s[kMaxHeadDim];
  __shared__ float part_m[kWarps], part_l[kWarps];
  __shared__ float part_acc[kWarps][kMaxHeadDim];

  const int64_t t = blockIdx.x;
  const int h = blockIdx.y;
  const int hd = s.head_dim;
  const int kvh = h / (s.n_heads / s.n_kv_heads);
  const int64_t q_dim = static_cast<int64_t>(s.n_heads) * hd;
  const int64_t kv_dim = static_cast<int64_t>(s.n_kv_heads) * hd;
  const int pos = a.positions[t];
  const int32_t* table = a.block_tables + a.table_offsets[t];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;

  for (int d = threadIdx.x; d < hd; d += blockDim.x) q_s[d] = a.q[t * a.q_stride + h * hd + d] * a.scale;
  __syncthreads();

  float m = -FLT_MAX, l = 0.0f;
  float acc[DPL];
#pragma unroll
  for (int i = 0; i < DPL; ++i) acc[i] = 0.0f;

  for (int base = warp * 32; base <= pos; base += kWarps * 32) {
    const int j = base + lane;
    const bool valid = j <= pos;
    // Lanes past the end read position `base` (valid, finite) with weight 0.
    const int jc = valid ? j : base;
    const int64_t slot = static_cast<int64_t>(table[jc / s.block_size]) * s.block_size + jc % s.block_size;
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
    // All 32 positions, unrolled so that their value loads overlap; the
    // padding lanes add p = 0 times finite values.
#pragma unroll 8
    for (int jj = 0; jj < 32; ++jj) {
      const float pj = __shfl_sync(0xffffffffu, p, jj);
      const int64_t slot_j = __shfl_sync(0xffffffffu, slot, jj);
      const __half* v = a.v_cache + slot_j * kv_dim + kvh * hd;
#pragma unroll
      for (int i = 0; i < DPL; ++i) {
        const int d = lane + 32 * i;
        if (d < hd) acc[i] = fmaf(pj, __half2float(v[d]), acc[i]);
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
    const int d = lane + 32 * i;
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
  const float inv = 1.0f / l_all;
  for (int d = threadIdx.x; d < hd; d += blockDim.x) {
    float o = 0.0f;
    for (int w = 0; w < kWarps; ++w) o += part_acc[w][d] * weight[w];
    a.out[t * q_dim + h * hd + d] = o * inv;
  }
}

}  // namespace

void paged_attention(const AttentionArgs& args, const AttentionShape& shape, int64_t n_tokens, cudaStream_t stream) {
  check(shape.head_dim % 8 == 0 && shape.head_dim <= kMaxHeadDim,
        "the CUDA engine's attention supports head sizes that are multiples of 8, up to 256");
  check(shape.n_kv_heads > 0 && shape.n_heads % shape.n_kv_heads == 0, "internal: heads not a multiple of KV heads");
  if (n_tokens == 0) return;
  const dim3 grid(static_cast<unsigned>(n_tokens), static_cast<unsigned>(shape.n_heads));
  const int dpl = (shape.head_dim + 31) / 32;
  if (dpl <= 1) {
    paged_attention_kernel<1><<<grid, kWarps * 32, 0, stream>>>(args, shape);
  } else if (dpl <= 2) {
    paged_attention_kernel<2><<<grid, kWarps * 32, 0, stream>>>(args, shape);
  } else if (dpl <= 4) {
    paged_attention_kernel<4><<<grid, kWarps * 32, 0, stream>>>(args, shape);
  } else {
    paged_attention_kernel<8><<<grid, kWarps * 32, 0, stream>>>(args, shape);
  }
  TANDEM_CUDA_CHECK(cudaGetLastError());
}

}  // namespace tandem::cuda
