// qkv_finish fused into the end of a one-token q·k·v GEMV (gemv.cu,
// gemv_q8.cu): a block's rows are whole RoPE pairs, so the lanes that hold
// the block's sums rotate them with one shuffle and write q, k and the KV
// cache themselves, and the step loses a launch per layer. The rotation
// and bias add are qkv_finish's (rotate_first / rotate_second below,
// shared), so both paths give the same bits.
//
// Which rows a block takes, and where a row's RoPE partner is: qkv_rows.h.
#pragma once

#include <cuda_fp16.h>

#include <cstdint>

#include "backends/cuda/kernels.h"
#include "backends/cuda/kv_cache_element.cuh"
#include "backends/cuda/qkv_rows.h"

namespace tandem::cuda::qkv_epilogue {

// RoPE of the pair (x0, x1) by the angle with cosine c and sine s, each
// product and sum rounded on its own (no contraction): qkv_finish and the
// fused epilogue give the same bits.
__device__ __forceinline__ float rotate_first(float x0, float x1, float c, float s) {
  return __fsub_rn(__fmul_rn(x0, c), __fmul_rn(x1, s));
}
__device__ __forceinline__ float rotate_second(float x0, float x1, float c, float s) {
  return __fadd_rn(__fmul_rn(x0, s), __fmul_rn(x1, c));
}

// Rows a block of the one-token GEMV takes for weights of `format`
// (gemv.cu: 16-bit rows; gemv_q8.cu: Q8_0 and int8 rows; their launchers
// assert it), or 0 where no fused kernel exists.
__host__ __device__ constexpr int block_rows(WeightFormat format) {
  switch (format) {
    case WeightFormat::F16:
    case WeightFormat::BF16:
    case WeightFormat::I8Row: return 8;
    case WeightFormat::Q8_0: return 4;
    default: return 0;
  }
}

// Whether blocks of R rows can finish q·k·v for `shape`: every head holds
// whole blocks, heads are of qkv_finish's sizes, and no step needs a whole
// head (the q/k norm) or FP8 scales.
template <int R>
__host__ __device__ inline bool fits(const QkvFinishArgs& a, const AttentionShape& shape) {
  return shape.head_dim % R == 0 && shape.head_dim % 2 == 0 && shape.head_dim <= 256 && a.q_norm == nullptr &&
         a.k_norm == nullptr && a.row_scale == nullptr;
}

// Row slot i of block `block` (qkv_rows.h).
template <int R, RopeLayout L>
__device__ __forceinline__ int64_t block_row(int block, int i, int head_dim) {
  return qkv_rows::block_row<R, L == RopeLayout::Interleaved>(block, i, head_dim);
}

// What lane i (< R) of the block's first warp needs to finish its row.
// The GEMV loads it into shared memory once its first weights are
// requested, before its wait (step metadata, tables, biases and scales: no
// kernel of the step writes them, launch.h), so that the loads overlap the
// weights' and hold no registers through the main loop. L: args.rope_layout
// (a template argument: with it known, the compiler keeps the rows'
// pointers as two bases and a stride).
// kScaled: the weights have row scales (int8 rows), which multiply the sum.
template <int R, RopeLayout L, bool kScaled>
struct Row {
  static constexpr bool kInterleaved = L == RopeLayout::Interleaved;
  // No initializers: a Row lives in shared memory, and load sets every field.
  int64_t r;    // the row: [0, q_dim) q, then k, then v
  float scale;  // the row's weight scale (kScaled)
  float bias;   // 0 where there is none (qkv_finish adds 0 too)
  float cos, sin;  // the pair's rotation (q and k rows)
  int slot;

  // row_scales: the weights' row scales (kScaled; else not read).
  __device__ __forceinline__ void load(const QkvFinishArgs& a, const AttentionShape& shape, int block, int i,
                                       const float* row_scales) {
    const int hd = shape.head_dim;
    const int64_t q_dim = int64_t{shape.n_heads} * hd, kv_dim = int64_t{shape.n_kv_heads} * hd;
    r = block_row<R, L>(block, i, hd);
    scale = kScaled ? row_scales[r] : 1.0f;
    const float* b = r < q_dim ? a.q_bias : r < q_dim + kv_dim ? a.k_bias : a.v_bias;
    const int64_t j = r < q_dim ? r : r < q_dim + kv_dim ? r - q_dim : r - q_dim - kv_dim;
    bias = b ? b[j] : 0.0f;
    slot = a.slots[0];
    cos = 1.0f;
    sin = 0.0f;
    if (r < q_dim + kv_dim) {
      const int d = static_cast<int>(r % hd);
      const int p = qkv_rows::pair_index<kInterleaved>(d, hd);
      const int64_t at = static_cast<int64_t>(a.positions[0]) * (hd / 2) + p;
      cos = a.rope_cos[at];
      sin = a.rope_sin[at];
    }
  }

  // s: the row's sum (before its scale and the bias); y: the GEMV's
  // output row, [q_dim + 2 kv_dim] (a.q, a.k and a.v point into it). Called
  // by lanes 0 .. R-1 of warp 0 together, lane i for slot i.
  __device__ __forceinline__ void finish(const QkvFinishArgs& a, const AttentionShape& shape, float s,
                                         float* __restrict__ y) const {
    if constexpr (kScaled) s = __fmul_rn(s, scale);  // the GEMV's product with its row scale
    const int hd = shape.head_dim;
    const int64_t q_dim = int64_t{shape.n_heads} * hd, kv_dim = int64_t{shape.n_kv_heads} * hd;
    const unsigned mask = (1u << R) - 1u;  // R <= 16 (qkv_rows::block_row)
    const float x = __fadd_rn(s, bias);
    const float partner = __shfl_xor_sync(mask, x, qkv_rows::partner_offset<R, kInterleaved>());
    if (r >= q_dim + kv_dim) {  // v (the whole block): raw in the buffer, biased in the cache
      y[r] = s;
      if (slot >= 0)
        kv_cache_element::store(a.v_cache, a.cache_type, static_cast<int64_t>(slot) * kv_dim + (r - q_dim - kv_dim), x);
      return;
    }
    const int d = static_cast<int>(r % hd);
    const bool first = qkv_rows::first_of_pair<kInterleaved>(d, hd);
    const float out = first ? rotate_first(x, partner, cos, sin) : rotate_second(partner, x, cos, sin);
    y[r] = out;
    if (r >= q_dim && slot >= 0)
      kv_cache_element::store(a.k_cache, a.cache_type, static_cast<int64_t>(slot) * kv_dim + (r - q_dim), out);
  }
};

}  // namespace tandem::cuda::qkv_epilogue
