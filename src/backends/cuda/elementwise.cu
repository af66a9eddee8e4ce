// Row-wise and element-wise kernels: embedding lookup, RMSNorm, SiLU*mul,
// conversions, Q8_0 dequantization, and the q/k/v finish (bias, q/k norm,
// RoPE, KV-cache write).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cooperative_groups.h>
#include <cuda_fp8.h>

#include <algorithm>

#include "backends/cuda/cuda_check.h"
#include "backends/cuda/kernels.h"
#include "backends/cuda/kv_cache_element.cuh"
#include "backends/cuda/launch.h"
#include "backends/cuda/qkv_epilogue.cuh"
#include "backends/cuda/quantize_block.cuh"
#include "backends/cuda/rmsnorm_row.cuh"

namespace tandem::cuda {
namespace {

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int off = 16; off > 0; off /= 2) v += __shfl_xor_sync(0xffffffffu, v, off);
  return v;
}

// An FP8 GEMM's product with its row and token scales, (d * row) * token,
// each product rounded on its own: the kernels that apply the scales
// (scale_product and those fused with it) give the same bits whatever the
// compiler would contract.
__device__ __forceinline__ float scaled_product(float d, float row, float token) {
  return __fmul_rn(__fmul_rn(d, row), token);
}

// Sum over the block (blockDim.x a multiple of 32, at most 1024), in a fixed order.
__device__ float block_sum(float v) {
  __shared__ float partial[32];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  v = warp_sum(v);
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  const int n_warps = blockDim.x / 32;
  float total = 0.0f;
  for (int w = 0; w < n_warps; ++w) total += partial[w];
  __syncthreads();
  return total;
}

__device__ __forceinline__ float load_weight(const DeviceMatrix& w, int64_t r, int64_t c) {
  const int64_t i = r * w.cols + c;
  switch (w.format) {
    case WeightFormat::F32: return static_cast<const float*>(w.data)[i];
    case WeightFormat::F16: return __half2float(static_cast<const __half*>(w.data)[i]);
    case WeightFormat::BF16: return __bfloat162float(static_cast<const __nv_bfloat16*>(w.data)[i]);
    case WeightFormat::Q8_0:
      return __half2float(static_cast<const __half*>(w.scales)[r * (w.cols / 32) + c / 32]) *
             static_cast<float>(static_cast<const int8_t*>(w.data)[i]);
    case WeightFormat::I8Row:
      return static_cast<const float*>(w.scales)[r] * static_cast<float>(static_cast<const int8_t*>(w.data)[i]);
    case WeightFormat::F8Row: {
      __nv_fp8_e4m3 v;
      v.__x = static_cast<const __nv_fp8_storage_t*>(w.data)[i];
      return static_cast<const float*>(w.scales)[r] * static_cast<float>(v);
    }
  }
  return 0.0f;
}

// Blocks (token, slice of blockDim.x columns), one column a thread: a
// block-wide loop would wait for each load before the next (the table and
// out may alias as far as the compiler knows), about 9 us for one 4096-wide
// row on an H100.
__global__ void embed_kernel(DeviceMatrix table, const int32_t* __restrict__ ids, float* __restrict__ out) {
  const int64_t i = blockIdx.x;
  const int64_t c = static_cast<int64_t>(blockIdx.y) * blockDim.x + threadIdx.x;
  if (c < table.cols) out[i * table.cols + c] = load_weight(table, ids[i], c);
}

__global__ void rmsnorm_kernel(const float* __restrict__ x, const int32_t* __restrict__ rows,
                               const float* __restrict__ weight, float eps, int64_t n, float* __restrict__ out) {
  let_successor_start();
  wait_for_predecessor();
  const int64_t i = blockIdx.x;
  const float* row = x + (rows ? rows[i] : i) * n;
  float ss = 0.0f;
  for (int64_t c = threadIdx.x; c < n; c += blockDim.x) ss = fmaf(row[c], row[c], ss);
  const float inv = rsqrtf(block_sum(ss) / static_cast<float>(n) + eps);
  for (int64_t c = threadIdx.x; c < n; c += blockDim.x) out[i * n + c] = row[c] * inv * weight[c];
}

// out[t, i] = silu(gate_up[t, i]) * gate_up[t, n + i] over all t * n elements.
__global__ void silu_mul_kernel(const float* __restrict__ gate_up, int64_t n_tokens, int64_t n,
                                float* __restrict__ out) {
  let_successor_start();
  wait_for_predecessor();
  const int64_t total = n_tokens * n;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t t = i / n, c = i % n;
    const float g = gate_up[t * 2 * n + c];
    out[i] = g / (1.0f + __expf(-g)) * gate_up[t * 2 * n + n + c];
  }
}

// silu(gate) * up rounded to T (half or bfloat16), VW columns per thread:
// the bits of silu_mul_kernel followed by convert_kernel. n % VW == 0.
template <typename T, int VW>
__global__ void silu_mul_convert_kernel(const float* __restrict__ gate_up, int64_t n_tokens, int64_t n,
                                        T* __restrict__ out) {
  let_successor_start();
  wait_for_predecessor();
  const int64_t c = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) * VW;
  if (c >= n) return;
  for (int64_t t = blockIdx.y; t < n_tokens; t += gridDim.y) {
    float g[VW], u[VW];
    if constexpr (VW == 4) {
      *reinterpret_cast<float4*>(g) = *reinterpret_cast<const float4*>(gate_up + t * 2 * n + c);
      *reinterpret_cast<float4*>(u) = *reinterpret_cast<const float4*>(gate_up + t * 2 * n + n + c);
    } else {
      g[0] = gate_up[t * 2 * n + c];
      u[0] = gate_up[t * 2 * n + n + c];
    }
    __align__(8) T h[VW];
#pragma unroll
    for (int e = 0; e < VW; ++e) {
      const float v = g[e] / (1.0f + __expf(-g[e])) * u[e];
      if constexpr (std::is_same_v<T, __half>) {
        h[e] = __float2half_rn(v);
      } else {
        h[e] = __float2bfloat16_rn(v);
      }
    }
    if constexpr (VW == 4) {
      *reinterpret_cast<uint2*>(out + t * n + c) = *reinterpret_cast<const uint2*>(h);
    } else {
      out[t * n + c] = h[0];
    }
  }
}

template <typename T>
__global__ void convert_kernel(const float* __restrict__ x, int64_t n, T* __restrict__ out) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    if constexpr (std::is_same_v<T, __half>) {
      out[i] = __float2half_rn(x[i]);
    } else {
      out[i] = __float2bfloat16_rn(x[i]);
    }
  }
}

__global__ void dequantize_kernel(DeviceMatrix w, int64_t row0, int64_t n, __half* __restrict__ out) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    out[i] = __float2half_rn(load_weight(w, row0 + i / w.cols, i % w.cols));
}

// 8-bit weights (Q8_0, I8Row, F8Row) to f16, 16 per thread: one 16-byte
// load of quants, two 16-byte stores, the same arithmetic as load_weight
// (scale * q in f32, then rounded). Row r0 + blockIdx.y; cols % 16 == 0.
__global__ void dequantize_8bit_kernel(DeviceMatrix w, int64_t row0, __half* __restrict__ out) {
  const int64_t r = row0 + blockIdx.y;
  const int64_t c = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) * 16;
  if (c >= w.cols) return;
  const uint4 raw = *reinterpret_cast<const uint4*>(static_cast<const uint8_t*>(w.data) + r * w.cols + c);
  const uint8_t* q = reinterpret_cast<const uint8_t*>(&raw);
  float scale;
  if (w.format == WeightFormat::Q8_0) {
    scale = __half2float(static_cast<const __half*>(w.scales)[r * (w.cols / 32) + c / 32]);
  } else {
    scale = static_cast<const float*>(w.scales)[r];
  }
  __align__(16) __half h[16];
#pragma unroll
  for (int e = 0; e < 16; ++e) {
    float v;
    if (w.format == WeightFormat::F8Row) {
      __nv_fp8_e4m3 f;
      f.__x = q[e];
      v = static_cast<float>(f);
    } else {
      v = static_cast<float>(static_cast<int8_t>(q[e]));
    }
    h[e] = __float2half_rn(scale * v);
  }
  uint4* o = reinterpret_cast<uint4*>(out + blockIdx.y * w.cols + c);
  o[0] = reinterpret_cast<const uint4*>(h)[0];
  o[1] = reinterpret_cast<const uint4*>(h)[1];
}

// The same for rows of n = 4 * 256 * C' elements (C' <= C): each thread
// loads its float4 pieces of x and of the weight at once, so the kernel waits
// for memory once.
// With q, rows i < n_quantized are also quantized in blocks of 32 values
// (8 consecutive threads' float4 pieces), as quantize_kernel does it.
// With Low (not float), rows i >= low_from are also rounded to Low into
// low[i - low_from] (rmsnorm's `low`).
template <int C, typename Low = float>
__global__ void __launch_bounds__(256) rmsnorm_vec_kernel(const float* __restrict__ x, const int32_t* __restrict__ rows,
                                                          const float* __restrict__ weight, float eps, int64_t n,
                                                          float* __restrict__ out, int8_t* __restrict__ q,
                                                          float* __restrict__ d, int64_t n_quantized,
                                                          Low* __restrict__ low, int64_t low_from) {
  let_successor_start();
  const int64_t i = blockIdx.x;
  const float4* w4 = reinterpret_cast<const float4*>(weight);
  const int n4 = static_cast<int>(n / 4);
  float4 v[C], g[C];
  // The norm weights and the row index (step metadata) before the wait.
#pragma unroll
  for (int k = 0; k < C; ++k) {
    const int c = threadIdx.x + 256 * k;
    if (c < n4) g[k] = __ldg(w4 + c);
  }
  const float4* row = reinterpret_cast<const float4*>(x + (rows ? rows[i] : i) * n);
  wait_for_predecessor();
#pragma unroll
  for (int k = 0; k < C; ++k) {
    const int c = threadIdx.x + 256 * k;
    if (c < n4) v[k] = row[c];
  }
  const bool quantize = q != nullptr && i < n_quantized;
  rmsnorm_row::normalize<C, Low>(v, g, n4, eps, reinterpret_cast<float4*>(out + i * n),
                                 quantize ? reinterpret_cast<char4*>(q + i * n) : nullptr,
                                 quantize ? d + i * (n / 32) : nullptr,
                                 low != nullptr && i >= low_from ? low + (i - low_from) * n : nullptr);
}

// One block per row: the row's max |w| sets the scale, then each weight is
// rounded to the 8-bit format (E4M3 conversion saturates at 448).
__global__ void quantize_rows_kernel(DeviceMatrix src, DeviceMatrix dst) {
  const int64_t r = blockIdx.x;
  float m = 0.0f;
  for (int64_t c = threadIdx.x; c < src.cols; c += blockDim.x) m = fmaxf(m, fabsf(load_weight(src, r, c)));
  __shared__ float partial[32];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
#pragma unroll
  for (int off = 16; off > 0; off /= 2) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, off));
  if (lane == 0) partial[warp] = m;
  __syncthreads();
  float row_max = 0.0f;
  for (int w = 0; w < static_cast<int>(blockDim.x / 32); ++w) row_max = fmaxf(row_max, partial[w]);
  const bool is_int8 = dst.format == WeightFormat::I8Row;
  const float scale = row_max > 0.0f ? row_max / (is_int8 ? 127.0f : 448.0f) : 1.0f;
  const float inv = 1.0f / scale;
  if (threadIdx.x == 0) const_cast<float*>(static_cast<const float*>(dst.scales))[r] = scale;
  for (int64_t c = threadIdx.x; c < src.cols; c += blockDim.x) {
    const float x = load_weight(src, r, c) * inv;
    const int64_t i = r * src.cols + c;
    if (is_int8) {
      static_cast<int8_t*>(const_cast<void*>(dst.data))[i] =
          static_cast<int8_t>(fminf(127.0f, fmaxf(-127.0f, rintf(x))));
    } else {
      static_cast<__nv_fp8_storage_t*>(const_cast<void*>(dst.data))[i] =
          __nv_cvt_float_to_fp8(x, __NV_SATFINITE, __NV_E4M3);
    }
  }
}

// The end of quantize_tokens_fp8 for a row held by a block of 256 threads
// (v[k]: the thread's float4 pieces c = threadIdx.x + 256 k < n4; m: the
// largest |value| among them): the row's scale, max / 448 as quantize_rows
// sets it, then each piece as four E4M3 bytes. scale_out is written after
// a barrier that every thread passes after its last read of the row's inputs.
// The largest m of a block of 256 threads (every thread gets it).
__device__ __forceinline__ float block_max_256(float m) {
  __shared__ float partial[8];
#pragma unroll
  for (int off = 16; off > 0; off /= 2) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, off));
  if (threadIdx.x % 32 == 0) partial[threadIdx.x / 32] = m;
  __syncthreads();
  float row_max = 0.0f;
#pragma unroll
  for (int w = 0; w < 8; ++w) row_max = fmaxf(row_max, partial[w]);
  return row_max;
}

// Pieces c = begin + threadIdx.x + 256 k < end of a row, each as four E4M3
// bytes of v[k] * inv.
template <int C>
__device__ __forceinline__ void store_fp8_pieces(const float4 (&v)[C], int begin, int end, float inv,
                                                 uint32_t* __restrict__ q_row) {
#pragma unroll
  for (int k = 0; k < C; ++k) {
    const int c = begin + static_cast<int>(threadIdx.x) + 256 * k;
    if (c < end) {
      const uint32_t lo = __nv_cvt_float2_to_fp8x2(make_float2(v[k].x * inv, v[k].y * inv), __NV_SATFINITE, __NV_E4M3);
      const uint32_t hi = __nv_cvt_float2_to_fp8x2(make_float2(v[k].z * inv, v[k].w * inv), __NV_SATFINITE, __NV_E4M3);
      q_row[c] = lo | (hi << 16);
    }
  }
}

// The end of quantize_tokens_fp8 for a row held by a block of 256 threads
// (v[k]: the thread's float4 pieces c = threadIdx.x + 256 k < n4; m: the
// largest |value| among them): the row's scale, max / 448 as quantize_rows
// sets it, then each piece as four E4M3 bytes. scale_out is written after
// a barrier that every thread passes after its last read of the row's inputs.
template <int C>
__device__ __forceinline__ void quantize_row_fp8(const float4 (&v)[C], int n4, float m, uint32_t* __restrict__ q_row,
                                                 float* __restrict__ scale_out) {
  const float row_max = block_max_256(m);
  const float s = row_max > 0.0f ? row_max / 448.0f : 1.0f;
  if (threadIdx.x == 0) *scale_out = s;
  store_fp8_pieces<C>(v, 0, n4, 1.0f / s, q_row);
}

__device__ __forceinline__ float abs_max4(float4 a) {
  return fmaxf(fmaxf(fabsf(a.x), fabsf(a.y)), fmaxf(fabsf(a.z), fabsf(a.w)));
}

// quantize_tokens_fp8 for rows of cols = 4 * 256 * C' floats (C' <= C): each
// thread holds its float4 pieces of the row, so that the row is read once.
template <int C>
__global__ void __launch_bounds__(256) quantize_tokens_fp8_kernel(const float* __restrict__ x, int64_t cols,
                                                                  uint32_t* __restrict__ q, float* __restrict__ scale) {
  let_successor_start();
  const int64_t t = blockIdx.x;
  const int n4 = static_cast<int>(cols / 4);
  const float4* row = reinterpret_cast<const float4*>(x + t * cols);
  wait_for_predecessor();
  float4 v[C];
  float m = 0.0f;
#pragma unroll
  for (int k = 0; k < C; ++k) {
    const int c = threadIdx.x + 256 * k;
    if (c < n4) {
      v[k] = row[c];
      m = fmaxf(m, abs_max4(v[k]));
    }
  }
  quantize_row_fp8<C>(v, n4, m, q + t * n4, scale + t);
}

// rmsnorm_fp8 for rows of n = 4 * 256 * C' floats (C' <= C): rmsnorm_vec_kernel's
// arithmetic (rmsnorm_row::normalize's, the same bits), then quantize_row_fp8
// on the result. out may be null (only q and q_scale wanted).
// With update (add_rmsnorm_fp8; rows is then null), x's row first takes
// x + update * update_row_scale * update_token_scale (scale_product's
// accumulation, in its order) and is written back.
template <int C>
__global__ void __launch_bounds__(256) rmsnorm_fp8_kernel(float* x, const int32_t* __restrict__ rows,
                                                          const float* __restrict__ weight, float eps, int64_t n,
                                                          float* __restrict__ out, uint32_t* __restrict__ q,
                                                          float* q_scale, const float* __restrict__ update,
                                                          const float* __restrict__ update_row_scale,
                                                          const float* update_token_scale) {
  let_successor_start();
  const int64_t i = blockIdx.x;
  const float4* w4 = reinterpret_cast<const float4*>(weight);
  const int n4 = static_cast<int>(n / 4);
  float4 v[C], g[C];
#pragma unroll
  for (int k = 0; k < C; ++k) {
    const int c = threadIdx.x + 256 * k;
    if (c < n4) g[k] = __ldg(w4 + c);
  }
  float4* row = reinterpret_cast<float4*>(x + (rows ? rows[i] : i) * n);
  wait_for_predecessor();
#pragma unroll
  for (int k = 0; k < C; ++k) {
    const int c = threadIdx.x + 256 * k;
    if (c < n4) v[k] = row[c];
  }
  if (update != nullptr) {
    const float4* u = reinterpret_cast<const float4*>(update + i * n);
    const float4* us = reinterpret_cast<const float4*>(update_row_scale);
    const float ts = update_token_scale[i];
#pragma unroll
    for (int k = 0; k < C; ++k) {
      const int c = threadIdx.x + 256 * k;
      if (c < n4) {
        const float4 p = u[c], rs = us[c];
        v[k] = make_float4(__fadd_rn(v[k].x, scaled_product(p.x, rs.x, ts)),
                           __fadd_rn(v[k].y, scaled_product(p.y, rs.y, ts)),
                           __fadd_rn(v[k].z, scaled_product(p.z, rs.z, ts)),
                           __fadd_rn(v[k].w, scaled_product(p.w, rs.w, ts)));
        row[c] = v[k];
      }
    }
  }
  // rmsnorm_row::normalize's arithmetic, in its order, kept in registers.
  float ss = 0.0f;
#pragma unroll
  for (int k = 0; k < C; ++k)
    if (threadIdx.x + 256 * k < n4)
      ss = fmaf(v[k].x, v[k].x, fmaf(v[k].y, v[k].y, fmaf(v[k].z, v[k].z, fmaf(v[k].w, v[k].w, ss))));
  const float inv = rsqrtf(rmsnorm_row::block_sum(ss) / static_cast<float>(4 * n4) + eps);
  float4* out_row = out != nullptr ? reinterpret_cast<float4*>(out + i * n) : nullptr;
  float m = 0.0f;
#pragma unroll
  for (int k = 0; k < C; ++k) {
    const int c = threadIdx.x + 256 * k;
    if (c < n4) {
      v[k] = make_float4(v[k].x * inv * g[k].x, v[k].y * inv * g[k].y, v[k].z * inv * g[k].z, v[k].w * inv * g[k].w);
      if (out_row != nullptr) out_row[c] = v[k];
      m = fmaxf(m, abs_max4(v[k]));
    }
  }
  quantize_row_fp8<C>(v, n4, m, q + i * n4, q_scale + i);
}

// Four consecutive values of a product row as floats: f32 (one 16-byte
// load) or bf16 (one 8-byte load, widened exactly).
__device__ __forceinline__ float4 load4(const float* p, int c) { return reinterpret_cast<const float4*>(p)[c]; }
__device__ __forceinline__ float4 load4(const __nv_bfloat16* p, int c) {
  const uint2 v = reinterpret_cast<const uint2*>(p)[c];
  const float2 lo = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&v.x));
  const float2 hi = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&v.y));
  return make_float4(lo.x, lo.y, hi.x, hi.y);
}

// silu_mul_fp8's values for this thread's float4 pieces c = begin +
// threadIdx.x + 256 k < end of a token's row: scale_product's product ((d *
// row) * token), then silu_mul's formula, into v; returns their largest
// |value|.
template <int C, typename In>
__device__ __forceinline__ float silu_mul_pieces(const In* gate, const In* up, const float4* gate_scale,
                                                 const float4* up_scale, float ts, int begin, int end,
                                                 float4 (&v)[C]) {
  auto act = [ts](float g, float gs, float u, float us) {
    const float gv = scaled_product(g, gs, ts), uv = scaled_product(u, us, ts);
    return gv / (1.0f + __expf(-gv)) * uv;
  };
  float m = 0.0f;
#pragma unroll
  for (int k = 0; k < C; ++k) {
    const int c = begin + static_cast<int>(threadIdx.x) + 256 * k;
    if (c < end) {
      const float4 g = load4(gate, c), u = load4(up, c), gs = gate_scale[c], us = up_scale[c];
      v[k] = make_float4(act(g.x, gs.x, u.x, us.x), act(g.y, gs.y, u.y, us.y), act(g.z, gs.z, u.z, us.z),
                         act(g.w, gs.w, u.w, us.w));
      m = fmaxf(m, abs_max4(v[k]));
    }
  }
  return m;
}

// silu_mul_fp8: one block per token, rows of n = 4 * 256 * C' (C' <= C),
// the product in f32 or bf16 (In). The token's input scale is read before
// quantize_row_fp8's barrier, so that q_scale may be token_scale.
template <int C, typename In>
__global__ void __launch_bounds__(256) silu_mul_fp8_kernel(const In* __restrict__ d, const float* row_scale,
                                                           const float* token_scale, int64_t n, uint32_t* q,
                                                           float* q_scale) {
  let_successor_start();
  const int64_t t = blockIdx.x;
  const int n4 = static_cast<int>(n / 4);
  const In* gate = d + t * 2 * n;
  const In* up = gate + n;
  const float4* gate_scale = reinterpret_cast<const float4*>(row_scale);
  const float4* up_scale = gate_scale + n4;
  wait_for_predecessor();
  const float ts = token_scale[t];
  float4 v[C];
  const float m = silu_mul_pieces<C>(gate, up, gate_scale, up_scale, ts, 0, n4, v);
  quantize_row_fp8<C>(v, n4, m, q + t * n4, q_scale + t);
}

// silu_mul_fp8 for few tokens: a token's row split among the blocks of a
// cluster (grid y, the cluster's size; rows of n = 4 * 256 * C' * parts),
// each block its share of the row, the row's largest |value| gathered from
// the cluster's shared memory. The same arithmetic a value as
// silu_mul_fp8_kernel, and a maximum does not depend on its order: the same
// bits. The token's input scale is read before the first cluster barrier,
// after which block 0 may overwrite it.
template <int C, typename In>
__global__ void __launch_bounds__(256) silu_mul_fp8_cluster_kernel(const In* __restrict__ d, const float* row_scale,
                                                                   const float* token_scale, int64_t n, uint32_t* q,
                                                                   float* q_scale) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  let_successor_start();
  namespace cg = cooperative_groups;
  cg::cluster_group cluster = cg::this_cluster();
  const int parts = static_cast<int>(gridDim.y), part = static_cast<int>(blockIdx.y);
  const int64_t t = blockIdx.x;
  const int n4 = static_cast<int>(n / 4);
  const int per_part = (n4 + parts - 1) / parts;
  const int begin = part * per_part, end = min(n4, begin + per_part);
  const In* gate = d + t * 2 * n;
  const In* up = gate + n;
  const float4* gate_scale = reinterpret_cast<const float4*>(row_scale);
  const float4* up_scale = gate_scale + n4;
  wait_for_predecessor();
  const float ts = token_scale[t];
  float4 v[C];
  const float m = silu_mul_pieces<C>(gate, up, gate_scale, up_scale, ts, begin, end, v);
  __shared__ float block_max;
  const float b = block_max_256(m);
  if (threadIdx.x == 0) block_max = b;
  cluster.sync();  // every block's maximum is in; every block has read ts
  float row_max = 0.0f;
  for (int r = 0; r < parts; ++r) row_max = fmaxf(row_max, *cluster.map_shared_rank(&block_max, r));
  const float s = row_max > 0.0f ? row_max / 448.0f : 1.0f;
  if (part == 0 && threadIdx.x == 0) q_scale[t] = s;
  store_fp8_pieces<C>(v, begin, end, 1.0f / s, q + t * n4);
  cluster.sync();  // no block leaves while another may still read its maximum
#else
  __trap();  // launch_silu_mul_fp8 takes it on sm_90 and later only
#endif
}

// y[t, r] = (accumulate ? y[t, r] : 0) + d[t, r] * row_scale[r] * token_scale[t]; tokens strided over grid y.
__global__ void scale_product_kernel(const float* __restrict__ d, int64_t n_tokens, int64_t rows, const float* __restrict__ row_scale,
                                     const float* __restrict__ token_scale, float* __restrict__ y, int64_t ldy,
                                     bool accumulate) {
  const int64_t r = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (r >= rows) return;
  for (int64_t t = blockIdx.y; t < n_tokens; t += gridDim.y) {
    const float v = scaled_product(d[t * rows + r], row_scale[r], token_scale[t]);
    y[t * ldy + r] = accumulate ? __fadd_rn(y[t * ldy + r], v) : v;
  }
}

// The same, four rows a thread (rows, ldy multiples of 4; 16-byte aligned d, y).
__global__ void scale_product4_kernel(const float4* __restrict__ d, int64_t n_tokens, int64_t rows4,
                                      const float4* __restrict__ row_scale, const float* __restrict__ token_scale,
                                      float4* __restrict__ y, int64_t ldy4, bool accumulate) {
  const int64_t r = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (r >= rows4) return;
  const float4 rs = row_scale[r];
  for (int64_t t = blockIdx.y; t < n_tokens; t += gridDim.y) {
    const float ts = token_scale[t];
    const float4 p = d[t * rows4 + r];
    float4 v = make_float4(scaled_product(p.x, rs.x, ts), scaled_product(p.y, rs.y, ts),
                           scaled_product(p.z, rs.z, ts), scaled_product(p.w, rs.w, ts));
    if (accumulate) {
      const float4 o = y[t * ldy4 + r];
      v = make_float4(__fadd_rn(o.x, v.x), __fadd_rn(o.y, v.y), __fadd_rn(o.z, v.z), __fadd_rn(o.w, v.w));
    }
    y[t * ldy4 + r] = v;
  }
}

unsigned grid_for(int64_t n, int threads) {
  return static_cast<unsigned>(std::min<int64_t>((n + threads - 1) / threads, 65535));
}

// One warp per head. Lane j holds rotation pairs p = j, j + 32, ... of the
// head (at most 4 for head_dim <= 256): (p, p + half) for HalfSplit, (2p, 2p + 1)
// for Interleaved.
constexpr int kMaxPairsPerLane = 4;

// cos_p, sin_p: the rotation of the lane's pairs p = lane + 32 k.
// scale (FP8 products before their scales): the head's row scales, and
// token_scale the token's.
__device__ void finish_head(float* head, const float* bias, const float* scale, float token_scale, const float* norm,
                            float eps, int head_dim, const float (&cos_p)[kMaxPairsPerLane],
                            const float (&sin_p)[kMaxPairsPerLane], RopeLayout layout) {
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
    // scale_product's bits (never fused with the bias add).
    const float ha = scale ? scaled_product(head[ia[k]], scale[ia[k]], token_scale) : head[ia[k]];
    const float hb = scale ? scaled_product(head[ib[k]], scale[ib[k]], token_scale) : head[ib[k]];
    a[k] = __fadd_rn(ha, bias ? bias[ia[k]] : 0.0f);
    b[k] = __fadd_rn(hb, bias ? bias[ib[k]] : 0.0f);
    ss = fmaf(a[k], a[k], fmaf(b[k], b[k], ss));
  }
  float inv = 1.0f;
  if (norm) inv = rsqrtf(warp_sum(ss) / static_cast<float>(head_dim) + eps);
#pragma unroll
  for (int k = 0; k < kMaxPairsPerLane; ++k) {
    const int p = lane + 32 * k;
    if (p >= half) break;
    float x0 = a[k], x1 = b[k];
    if (norm) {
      x0 = x0 * inv * norm[ia[k]];
      x1 = x1 * inv * norm[ib[k]];
    }
    const float c = cos_p[k], s = sin_p[k];
    head[ia[k]] = qkv_epilogue::rotate_first(x0, x1, c, s);
    head[ib[k]] = qkv_epilogue::rotate_second(x0, x1, c, s);
  }
}

// grid: (n_tokens, head groups); one warp per head: the token's q heads, then
// k heads, then v heads.
__global__ void qkv_finish_kernel(QkvFinishArgs args, AttentionShape shape) {
  let_successor_start();
  const int64_t t = blockIdx.x;
  const int hd = shape.head_dim;
  const int kv_dim = shape.n_kv_heads * hd;
  const int64_t stride = args.stride;
  // Step metadata and the RoPE tables before the wait (launch.h).
  const int pos = args.positions[t];
  const int slot = args.slots[t];
  const float* cos_row = args.rope_cos + static_cast<int64_t>(pos) * (hd / 2);
  const float* sin_row = args.rope_sin + static_cast<int64_t>(pos) * (hd / 2);
  const int lane = threadIdx.x % 32;
  float cos_p[kMaxPairsPerLane], sin_p[kMaxPairsPerLane];
#pragma unroll
  for (int k = 0; k < kMaxPairsPerLane; ++k) {
    const int p = lane + 32 * k;
    cos_p[k] = p < hd / 2 ? cos_row[p] : 0.0f;
    sin_p[k] = p < hd / 2 ? sin_row[p] : 0.0f;
  }
  wait_for_predecessor();
  const float* rs = args.row_scale;
  const float ts = rs ? args.token_scale[t] : 1.0f;
  const int q_dim = shape.n_heads * hd;
  const int h = blockIdx.y * (blockDim.x / 32) + threadIdx.x / 32;
  if (h < shape.n_heads + 2 * shape.n_kv_heads) {
    if (h < shape.n_heads) {
      finish_head(args.q + t * stride + h * hd, args.q_bias ? args.q_bias + h * hd : nullptr,
                  rs ? rs + h * hd : nullptr, ts, args.q_norm, args.norm_eps, hd, cos_p, sin_p, args.rope_layout);
    } else if (h < shape.n_heads + shape.n_kv_heads) {
      const int kh = h - shape.n_heads;
      float* head = args.k + t * stride + kh * hd;
      finish_head(head, args.k_bias ? args.k_bias + kh * hd : nullptr, rs ? rs + q_dim + kh * hd : nullptr, ts,
                  args.k_norm, args.norm_eps, hd, cos_p, sin_p, args.rope_layout);
      __syncwarp();
      if (slot >= 0)
        for (int d = lane; d < hd; d += 32)
          kv_cache_element::store(args.k_cache, args.cache_type, static_cast<int64_t>(slot) * kv_dim + kh * hd + d,
                                  head[d]);
    } else {
      const int vh = h - shape.n_heads - shape.n_kv_heads;
      const float* head = args.v + t * stride + vh * hd;
      const float* vs = rs ? rs + q_dim + kv_dim + vh * hd : nullptr;
      if (slot >= 0)
        for (int d = lane; d < hd; d += 32)
          kv_cache_element::store(
              args.v_cache, args.cache_type, static_cast<int64_t>(slot) * kv_dim + vh * hd + d,
              __fadd_rn(vs ? scaled_product(head[d], vs[d], ts) : head[d], args.v_bias ? args.v_bias[vh * hd + d] : 0.0f));
    }
  }
}

}  // namespace

void embed_rows(const DeviceMatrix& table, const int32_t* ids, int64_t n, float* out, cudaStream_t stream) {
  if (n == 0) return;
  constexpr int kThreads = 256;
  const dim3 grid(static_cast<unsigned>(n), static_cast<unsigned>((table.cols + kThreads - 1) / kThreads));
  embed_kernel<<<grid, kThreads, 0, stream>>>(table, ids, out);
  TANDEM_CUDA_CHECK(cudaGetLastError());
}

namespace {

template <int C>
void launch_rmsnorm_vec(unsigned grid, cudaStream_t stream, const float* x, const int32_t* rows, const float* weight,
                        float eps, int64_t n, float* out, int8_t* q, float* d, int64_t n_quantized, void* low,
                        DType low_type, int64_t low_from) {
  if (low == nullptr) {
    launch(rmsnorm_vec_kernel<C>, grid, 256, stream, x, rows, weight, eps, n, out, q, d, n_quantized,
           static_cast<float*>(nullptr), int64_t{0});
  } else if (low_type == DType::F16) {
    launch(rmsnorm_vec_kernel<C, __half>, grid, 256, stream, x, rows, weight, eps, n, out, q, d, n_quantized,
           static_cast<__half*>(low), low_from);
  } else {
    launch(rmsnorm_vec_kernel<C, __nv_bfloat16>, grid, 256, stream, x, rows, weight, eps, n, out, q, d, n_quantized,
           static_cast<__nv_bfloat16*>(low), low_from);
  }
}

}  // namespace

void rmsnorm(const float* x, const int32_t* rows, const float* weight, float eps, int64_t n_rows, int64_t n,
             float* out, cudaStream_t stream, int8_t* q, float* d, int64_t n_quantized, void* low, DType low_type,
             int64_t low_from) {
  if (n_rows == 0) return;
  check(q == nullptr || (d != nullptr && n % 32 == 0 && n_quantized <= n_rows),
        "internal: rmsnorm quantizes whole blocks of 32 of its own rows");
  check(low == nullptr || ((low_type == DType::F16 || low_type == DType::BF16) && low_from <= n_rows),
        "internal: rmsnorm rounds its rows to F16 or BF16 only");
  if (q == nullptr) n_quantized = 0;
  const int64_t chunks = (n / 4 + 255) / 256;  // float4 pieces per thread of 256
  const bool aligned = n % 4 == 0 && reinterpret_cast<uintptr_t>(x) % 16 == 0 &&
                       reinterpret_cast<uintptr_t>(weight) % 16 == 0 && reinterpret_cast<uintptr_t>(out) % 16 == 0 &&
                       reinterpret_cast<uintptr_t>(q) % 4 == 0 && reinterpret_cast<uintptr_t>(low) % 8 == 0;
  const unsigned grid = static_cast<unsigned>(n_rows);
  bool quantized = n_quantized > 0, rounded = low != nullptr;
  if (aligned && chunks <= 2) {
    launch_rmsnorm_vec<2>(grid, stream, x, rows, weight, eps, n, out, q, d, n_quantized, low, low_type, low_from);
  } else if (aligned && chunks <= 4) {
    launch_rmsnorm_vec<4>(grid, stream, x, rows, weight, eps, n, out, q, d, n_quantized, low, low_type, low_from);
  } else if (aligned && chunks <= 8) {
    launch_rmsnorm_vec<8>(grid, stream, x, rows, weight, eps, n, out, q, d, n_quantized, low, low_type, low_from);
  } else {
    const int threads = n >= 4096 ? 1024 : n >= 1024 ? 256 : 128;
    launch(rmsnorm_kernel, grid, threads, stream, x, rows, weight, eps, n, out);
    quantized = rounded = false;
  }
  TANDEM_CUDA_CHECK(cudaGetLastError());
  if (n_quantized > 0 && !quantized) quantize_activations(out, n_quantized, n, q, d, stream);
  if (low != nullptr && !rounded) convert_f32(out + low_from * n, (n_rows - low_from) * n, low_type, low, stream);
}

namespace {

// rmsnorm_fp8, after add_rmsnorm_fp8's update where `update` is set.
void norm_fp8(float* x, const int32_t* rows, const float* weight, float eps, int64_t n_rows, int64_t n, float* out,
              uint8_t* q, float* q_scale, const float* update, const float* update_row_scale,
              const float* update_token_scale, bool write_out, cudaStream_t stream) {
  if (n_rows == 0) return;
  const int64_t chunks = (n / 4 + 255) / 256;  // float4 pieces per thread of 256
  auto aligned16 = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };
  const bool aligned = n % 4 == 0 && aligned16(x) && aligned16(weight) && aligned16(out) &&
                       reinterpret_cast<uintptr_t>(q) % 4 == 0 &&
                       (update == nullptr || (aligned16(update) && aligned16(update_row_scale)));
  const unsigned grid = static_cast<unsigned>(n_rows);
  uint32_t* q4 = reinterpret_cast<uint32_t*>(q);
  if (aligned && chunks <= 8) {
    auto kernel = chunks <= 2 ? rmsnorm_fp8_kernel<2> : chunks <= 4 ? rmsnorm_fp8_kernel<4> : rmsnorm_fp8_kernel<8>;
    launch(kernel, grid, 256, stream, x, rows, weight, eps, n, write_out ? out : nullptr, q4, q_scale, update,
           update_row_scale, update_token_scale);
  } else {
    if (update != nullptr)
      scale_product(update, n_rows, n, update_row_scale, update_token_scale, x, n, true, stream);
    rmsnorm(x, rows, weight, eps, n_rows, n, out, stream, nullptr, nullptr, 0);
    quantize_tokens_fp8(out, n_rows, n, q, q_scale, stream);
  }
  TANDEM_CUDA_CHECK(cudaGetLastError());
}

}  // namespace

void rmsnorm_fp8(const float* x, const int32_t* rows, const float* weight, float eps, int64_t n_rows, int64_t n,
                 float* out, uint8_t* q, float* q_scale, cudaStream_t stream, bool write_out) {
  // x is only read without an update.
  norm_fp8(const_cast<float*>(x), rows, weight, eps, n_rows, n, out, q, q_scale, nullptr, nullptr, nullptr, write_out,
           stream);
}

void add_rmsnorm_fp8(float* x, const float* update, const float* update_row_scale, const float* update_token_scale,
                     const float* weight, float eps, int64_t n_rows, int64_t n, float* out, uint8_t* q,
                     float* q_scale, cudaStream_t stream, bool write_out) {
  check(update != nullptr && update_row_scale != nullptr && update_token_scale != nullptr,
        "internal: add_rmsnorm_fp8 takes an update and its scales");
  norm_fp8(x, nullptr, weight, eps, n_rows, n, out, q, q_scale, update, update_row_scale, update_token_scale,
           write_out, stream);
}

void silu_mul(const float* gate_up, int64_t n_tokens, int64_t n, float* out, cudaStream_t stream) {
  if (n_tokens * n == 0) return;
  launch(silu_mul_kernel, grid_for(n_tokens * n, 256), 256, stream, gate_up, n_tokens, n, out);
  TANDEM_CUDA_CHECK(cudaGetLastError());
}

void silu_mul_convert(const float* gate_up, int64_t n_tokens, int64_t n, DType to, void* out, cudaStream_t stream) {
  check(to == DType::F16 || to == DType::BF16, "internal: silu_mul_convert to F16 or BF16 only");
  if (n_tokens * n == 0) return;
  constexpr int kThreads = 256;
  const int vw = n % 4 == 0 ? 4 : 1;
  const dim3 grid(static_cast<unsigned>((n / vw + kThreads - 1) / kThreads),
                  static_cast<unsigned>(std::min<int64_t>(n_tokens, 65535)));
  if (to == DType::F16) {
    auto* o = static_cast<__half*>(out);
    if (vw == 4) {
      launch(silu_mul_convert_kernel<__half, 4>, grid, kThreads, stream, gate_up, n_tokens, n, o);
    } else {
      launch(silu_mul_convert_kernel<__half, 1>, grid, kThreads, stream, gate_up, n_tokens, n, o);
    }
  } else {
    auto* o = static_cast<__nv_bfloat16*>(out);
    if (vw == 4) {
      launch(silu_mul_convert_kernel<__nv_bfloat16, 4>, grid, kThreads, stream, gate_up, n_tokens, n, o);
    } else {
      launch(silu_mul_convert_kernel<__nv_bfloat16, 1>, grid, kThreads, stream, gate_up, n_tokens, n, o);
    }
  }
  TANDEM_CUDA_CHECK(cudaGetLastError());
}

void convert_f32(const float* x, int64_t n, DType to, void* out, cudaStream_t stream) {
  if (n == 0) return;
  if (to == DType::F16) {
    convert_kernel<__half><<<grid_for(n, 256), 256, 0, stream>>>(x, n, static_cast<__half*>(out));
  } else {
    check(to == DType::BF16, "internal: convert_f32 to F16 or BF16 only");
    convert_kernel<__nv_bfloat16><<<grid_for(n, 256), 256, 0, stream>>>(x, n, static_cast<__nv_bfloat16*>(out));
  }
  TANDEM_CUDA_CHECK(cudaGetLastError());
}

void dequantize_to_f16(const DeviceMatrix& w, int64_t row0, int64_t n_rows, __half* out, cudaStream_t stream) {
  const int64_t n = n_rows * w.cols;
  if (n == 0) return;
  const bool eight_bit =
      w.format == WeightFormat::Q8_0 || w.format == WeightFormat::I8Row || w.format == WeightFormat::F8Row;
  if (eight_bit && w.cols % 16 == 0 && n_rows <= 65535) {
    constexpr int kThreads = 128;
    const dim3 grid(static_cast<unsigned>((w.cols / 16 + kThreads - 1) / kThreads), static_cast<unsigned>(n_rows));
    dequantize_8bit_kernel<<<grid, kThreads, 0, stream>>>(w, row0, out);
  } else {
    dequantize_kernel<<<grid_for(n, 256), 256, 0, stream>>>(w, row0, n, out);
  }
  TANDEM_CUDA_CHECK(cudaGetLastError());
}

void quantize_rows(const DeviceMatrix& src, const DeviceMatrix& dst, cudaStream_t stream) {
  check(dst.format == WeightFormat::I8Row || dst.format == WeightFormat::F8Row,
        "internal: quantize_rows writes int8 or fp8 rows");
  check(src.rows == dst.rows && src.cols == dst.cols, "internal: quantize_rows shapes differ");
  if (src.rows == 0) return;
  quantize_rows_kernel<<<static_cast<unsigned>(src.rows), 256, 0, stream>>>(src, dst);
  TANDEM_CUDA_CHECK(cudaGetLastError());
}

void quantize_tokens_fp8(const float* x, int64_t n_tokens, int64_t cols, uint8_t* q, float* scale,
                         cudaStream_t stream) {
  if (n_tokens == 0) return;
  const int64_t n4 = cols / 4;
  const bool vec = cols % 4 == 0 && reinterpret_cast<uintptr_t>(x) % 16 == 0 && reinterpret_cast<uintptr_t>(q) % 4 == 0;
  const unsigned grid = static_cast<unsigned>(n_tokens);
  uint32_t* q4 = reinterpret_cast<uint32_t*>(q);
  if (vec && n4 <= 256) launch(quantize_tokens_fp8_kernel<1>, grid, 256, stream, x, cols, q4, scale);
  else if (vec && n4 <= 512) launch(quantize_tokens_fp8_kernel<2>, grid, 256, stream, x, cols, q4, scale);
  else if (vec && n4 <= 1024) launch(quantize_tokens_fp8_kernel<4>, grid, 256, stream, x, cols, q4, scale);
  else if (vec && n4 <= 2048) launch(quantize_tokens_fp8_kernel<8>, grid, 256, stream, x, cols, q4, scale);
  else if (vec && n4 <= 4096) launch(quantize_tokens_fp8_kernel<16>, grid, 256, stream, x, cols, q4, scale);
  else quantize_rows(DeviceMatrix{WeightFormat::F32, n_tokens, cols, x, nullptr},
                     DeviceMatrix{WeightFormat::F8Row, n_tokens, cols, q, scale}, stream);
  TANDEM_CUDA_CHECK(cudaGetLastError());
}

bool silu_mul_fp8_supports(int64_t n) { return n > 0 && n % 4 == 0 && n / 4 <= 4096; }

template <typename In>
void launch_silu_mul_fp8(const In* d, const float* row_scale, const float* token_scale, int64_t n_tokens, int64_t n,
                         uint8_t* q, float* q_scale, cudaStream_t stream) {
  check(silu_mul_fp8_supports(n), "internal: silu_mul_fp8 takes widths that are multiples of 4 up to 16384");
  auto aligned16 = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };
  check(aligned16(d) && aligned16(row_scale) && reinterpret_cast<uintptr_t>(q) % 4 == 0,
        "internal: silu_mul_fp8 takes 16-byte aligned rows");
  if (n_tokens == 0) return;
  const int64_t n4 = n / 4;
  const unsigned grid = static_cast<unsigned>(n_tokens);
  uint32_t* q4 = reinterpret_cast<uint32_t*>(q);
  // Few tokens: a block a token would leave most SMs idle, each block
  // streaming its row alone (a decode batch of 32 at width 14336: 11.6 us
  // on an H100). Split each row among a cluster of up to 8 blocks so that
  // the launch has about 256.
  const int parts = static_cast<int>(std::clamp<int64_t>((256 + n_tokens - 1) / n_tokens, 1, 8));
  int device = 0, major = 0;
  TANDEM_CUDA_CHECK(cudaGetDevice(&device));
  TANDEM_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
  if (parts > 1 && major >= 9) {
    const dim3 cgrid(grid, static_cast<unsigned>(parts)), cluster(1, static_cast<unsigned>(parts), 1);
    const int64_t per_part = (n4 + parts - 1) / parts;
    if (per_part <= 256) {
      launch_clusters(silu_mul_fp8_cluster_kernel<1, In>, cgrid, 256, cluster, stream, d, row_scale, token_scale, n,
                      q4, q_scale);
    } else if (per_part <= 512) {
      launch_clusters(silu_mul_fp8_cluster_kernel<2, In>, cgrid, 256, cluster, stream, d, row_scale, token_scale, n,
                      q4, q_scale);
    } else if (per_part <= 1024) {
      launch_clusters(silu_mul_fp8_cluster_kernel<4, In>, cgrid, 256, cluster, stream, d, row_scale, token_scale, n,
                      q4, q_scale);
    } else {
      launch_clusters(silu_mul_fp8_cluster_kernel<16, In>, cgrid, 256, cluster, stream, d, row_scale, token_scale, n,
                      q4, q_scale);
    }
    TANDEM_CUDA_CHECK(cudaGetLastError());
    return;
  }
  if (n4 <= 1024) launch(silu_mul_fp8_kernel<4, In>, grid, 256, stream, d, row_scale, token_scale, n, q4, q_scale);
  else if (n4 <= 2048) launch(silu_mul_fp8_kernel<8, In>, grid, 256, stream, d, row_scale, token_scale, n, q4, q_scale);
  else launch(silu_mul_fp8_kernel<16, In>, grid, 256, stream, d, row_scale, token_scale, n, q4, q_scale);
  TANDEM_CUDA_CHECK(cudaGetLastError());
}

void silu_mul_fp8(const float* d, const float* row_scale, const float* token_scale, int64_t n_tokens, int64_t n,
                  uint8_t* q, float* q_scale, cudaStream_t stream) {
  launch_silu_mul_fp8(d, row_scale, token_scale, n_tokens, n, q, q_scale, stream);
}

void silu_mul_fp8(const __nv_bfloat16* d, const float* row_scale, const float* token_scale, int64_t n_tokens,
                  int64_t n, uint8_t* q, float* q_scale, cudaStream_t stream) {
  launch_silu_mul_fp8(d, row_scale, token_scale, n_tokens, n, q, q_scale, stream);
}

void scale_product(const float* d, int64_t n_tokens, int64_t rows, const float* row_scale, const float* token_scale,
                   float* y, int64_t ldy, bool accumulate, cudaStream_t stream) {
  if (n_tokens * rows == 0) return;
  constexpr int kThreads = 256;
  auto aligned16 = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };
  if (rows % 4 == 0 && ldy % 4 == 0 && aligned16(d) && aligned16(row_scale) && aligned16(y)) {
    const int64_t rows4 = rows / 4;
    const dim3 grid4(static_cast<unsigned>((rows4 + kThreads - 1) / kThreads),
                     static_cast<unsigned>(std::min<int64_t>(n_tokens, 65535)));
    scale_product4_kernel<<<grid4, kThreads, 0, stream>>>(
        reinterpret_cast<const float4*>(d), n_tokens, rows4, reinterpret_cast<const float4*>(row_scale), token_scale,
        reinterpret_cast<float4*>(y), ldy / 4, accumulate);
    TANDEM_CUDA_CHECK(cudaGetLastError());
    return;
  }
  const dim3 grid(static_cast<unsigned>((rows + kThreads - 1) / kThreads),
                  static_cast<unsigned>(std::min<int64_t>(n_tokens, 65535)));
  scale_product_kernel<<<grid, kThreads, 0, stream>>>(d, n_tokens, rows, row_scale, token_scale, y, ldy, accumulate);
  TANDEM_CUDA_CHECK(cudaGetLastError());
}

void qkv_finish(const QkvFinishArgs& args, const AttentionShape& shape, int64_t n_tokens, cudaStream_t stream) {
  check(shape.head_dim % 2 == 0 && shape.head_dim <= 2 * 32 * kMaxPairsPerLane,
        "the CUDA engine supports even head sizes up to 256");
  if (n_tokens == 0) return;
  const int heads = shape.n_heads + 2 * shape.n_kv_heads;
  constexpr int kWarpsPerBlock = 4;
  const dim3 grid(static_cast<unsigned>(n_tokens), static_cast<unsigned>((heads + kWarpsPerBlock - 1) / kWarpsPerBlock));
  launch(qkv_finish_kernel, grid, kWarpsPerBlock * 32, stream, args, shape);
  TANDEM_CUDA_CHECK(cudaGetLastError());
}

}  // namespace tandem::cuda
