// The finish of a token's q, k and v heads after the q·k·v product: the
// FP8 scales, the bias, the q/k RMSNorm and RoPE. qkv_finish (elementwise.cu)
// runs it for every head of a step; paged_attention runs it itself in decode
// steps (AttentionArgs::finish). Both call these functions, whose rounding is
// spelled out (no contraction left to the compiler), so both give the same
// bits.
#pragma once

#include "backends/cuda/kernels.h"

namespace tandem::cuda {

// An FP8 GEMM's product with its row and token scales, (d * row) * token,
// each product rounded on its own: the kernels that apply the scales give
// the same bits whatever the compiler would contract.
__device__ __forceinline__ float scaled_product(float d, float row, float token) {
  return __fmul_rn(__fmul_rn(d, row), token);
}

namespace qkv_heads {

// One warp per head. Lane j holds rotation pairs p = j, j + 32, ... of the
// head (at most 4 for head_dim <= 256): (p, p + half) for HalfSplit, (2p, 2p + 1)
// for Interleaved.
constexpr int kMaxPairsPerLane = 4;

struct Rotation {
  float cos_p[kMaxPairsPerLane], sin_p[kMaxPairsPerLane];
};

// The rotation of the lane's pairs at position pos (tables [positions, head_dim / 2]).
__device__ __forceinline__ Rotation rotation_at(const float* rope_cos, const float* rope_sin, int pos, int head_dim) {
  const int lane = threadIdx.x % 32;
  const float* cos_row = rope_cos + static_cast<int64_t>(pos) * (head_dim / 2);
  const float* sin_row = rope_sin + static_cast<int64_t>(pos) * (head_dim / 2);
  Rotation r;
#pragma unroll
  for (int k = 0; k < kMaxPairsPerLane; ++k) {
    const int p = lane + 32 * k;
    r.cos_p[k] = p < head_dim / 2 ? cos_row[p] : 0.0f;
    r.sin_p[k] = p < head_dim / 2 ? sin_row[p] : 0.0f;
  }
  return r;
}

// out = rope(norm(in * scales + bias)) for one head; every lane of the warp
// calls it. out may be in (each lane reads and writes only its own pairs).
// scale (FP8 products before their scales): the head's row scales, and
// token_scale the token's.
__device__ __forceinline__ void finish_head(const float* in, float* out, const float* bias, const float* scale,
                                            float token_scale, const float* norm, float eps, int head_dim,
                                            const Rotation& rot, RopeLayout layout) {
  const int lane = threadIdx.x % 32;
  const int half = head_dim / 2;
  float a[kMaxPairsPerLane], b[kMaxPairsPerLane];
  int ia[kMaxPairsPerLane], ib[kMaxPairsPerLane];
  float ss = 0.0f;
#pragma unroll
  for (int k = 0; k < kMaxPairsPerLane; ++k) {
    const int p = lane + 32 * k;
    if (p >= half) break;
    ia[k] = layout == RopeLayout::HalfSplit ? p : 2 * p;
    ib[k] = layout == RopeLayout::HalfSplit ? p + half : 2 * p + 1;
    const float ha = scale ? scaled_product(in[ia[k]], scale[ia[k]], token_scale) : in[ia[k]];
    const float hb = scale ? scaled_product(in[ib[k]], scale[ib[k]], token_scale) : in[ib[k]];
    a[k] = __fadd_rn(ha, bias ? bias[ia[k]] : 0.0f);
    b[k] = __fadd_rn(hb, bias ? bias[ib[k]] : 0.0f);
    ss = fmaf(a[k], a[k], fmaf(b[k], b[k], ss));
  }
  float inv = 1.0f;
  if (norm) {
#pragma unroll
    for (int off = 16; off > 0; off /= 2) ss += __shfl_xor_sync(0xffffffffu, ss, off);
    inv = rsqrtf(ss / static_cast<float>(head_dim) + eps);
  }
#pragma unroll
  for (int k = 0; k < kMaxPairsPerLane; ++k) {
    const int p = lane + 32 * k;
    if (p >= half) break;
    float x0 = a[k], x1 = b[k];
    if (norm) {
      x0 = __fmul_rn(__fmul_rn(x0, inv), norm[ia[k]]);
      x1 = __fmul_rn(__fmul_rn(x1, inv), norm[ib[k]]);
    }
    const float c = rot.cos_p[k], s = rot.sin_p[k];
    out[ia[k]] = __fsub_rn(__fmul_rn(x0, c), __fmul_rn(x1, s));
    out[ib[k]] = __fadd_rn(__fmul_rn(x0, s), __fmul_rn(x1, c));
  }
}

// The value head's element d: (in * scale) + bias, as the cache stores it.
__device__ __forceinline__ __half finish_value(const float* in, const float* bias, const float* scale,
                                               float token_scale, int d) {
  const float v = scale ? scaled_product(in[d], scale[d], token_scale) : in[d];
  return __float2half_rn(__fadd_rn(v, bias ? bias[d] : 0.0f));
}

}  // namespace qkv_heads
}  // namespace tandem::cuda
