// The RMSNorm of one row held in registers by a block of 256 threads, with
// the 8-bit GEMV's input quantization, shared by the kernels that end in it:
// rmsnorm_vec_kernel (elementwise.cu) and the tensor-parallel reduction that
// sums the ranks' parts first (nccl_tensor_reduce.cu). Both give the same
// bits for the same row.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <type_traits>

#include "backends/cuda/quantize_block.cuh"

namespace tandem::cuda::rmsnorm_row {

constexpr int kThreads = 256;

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int off = 16; off > 0; off /= 2) v += __shfl_xor_sync(0xffffffffu, v, off);
  return v;
}

// Sum over the block of kThreads, in a fixed order. Every thread calls it.
__device__ __forceinline__ float block_sum(float v) {
  __shared__ float partial[kThreads / 32];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  v = warp_sum(v);
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  float total = 0.0f;
#pragma unroll
  for (int w = 0; w < kThreads / 32; ++w) total += partial[w];
  __syncthreads();
  return total;
}

// Thread t holds v[k] = the row's float4 piece t + 256 k and g[k] the norm
// weight's (pieces at or past n4 = n / 4 are ignored). Writes
// out[c] = v * rsqrt(mean(v^2) + eps) * g, and with q the row quantized in
// blocks of 32 values (8 consecutive threads' pieces; n a multiple of 32):
// q[4c..4c+3] and d[c / 8], quantize_kernel's rule (quantize_block.cuh).
// With Low (__half or __nv_bfloat16) and low, out also rounded to Low (the
// bits of convert_kernel): the 16-bit GEMM's input.
// Every thread of the block calls it.
template <int C, typename Low = float>
__device__ __forceinline__ void normalize(const float4 (&v)[C], const float4 (&g)[C], int n4, float eps,
                                          float4* __restrict__ out, char4* __restrict__ q, float* __restrict__ d,
                                          Low* __restrict__ low = nullptr) {
  float ss = 0.0f;
#pragma unroll
  for (int k = 0; k < C; ++k)
    if (threadIdx.x + kThreads * k < n4)
      ss = fmaf(v[k].x, v[k].x, fmaf(v[k].y, v[k].y, fmaf(v[k].z, v[k].z, fmaf(v[k].w, v[k].w, ss))));
  const float inv = rsqrtf(block_sum(ss) / static_cast<float>(4 * n4) + eps);
#pragma unroll
  for (int k = 0; k < C; ++k) {
    const int c = threadIdx.x + kThreads * k;
    // Whole quant blocks: n4 is a multiple of 8, so a group of 8 lanes is all in or all out.
    if (c < n4) {
      const float4 r = make_float4(v[k].x * inv * g[k].x, v[k].y * inv * g[k].y, v[k].z * inv * g[k].z,
                                   v[k].w * inv * g[k].w);
      out[c] = r;
      if constexpr (!std::is_same_v<Low, float>) {
        if (low != nullptr) {
          uint2 packed;
          if constexpr (std::is_same_v<Low, __half>) {
            const __half2 a = __floats2half2_rn(r.x, r.y), b = __floats2half2_rn(r.z, r.w);
            packed = make_uint2(*reinterpret_cast<const uint32_t*>(&a), *reinterpret_cast<const uint32_t*>(&b));
          } else {
            const __nv_bfloat162 a = __floats2bfloat162_rn(r.x, r.y), b = __floats2bfloat162_rn(r.z, r.w);
            packed = make_uint2(*reinterpret_cast<const uint32_t*>(&a), *reinterpret_cast<const uint32_t*>(&b));
          }
          reinterpret_cast<uint2*>(low)[c] = packed;
        }
      }
      if (q != nullptr) {
        using quantize_block::nan_max;
        const float lane_amax = nan_max(nan_max(fabsf(r.x), fabsf(r.y)), nan_max(fabsf(r.z), fabsf(r.w)));
        const quantize_block::Scale s = quantize_block::block_scale<8>(lane_amax, 0xffu << (threadIdx.x % 32 / 8 * 8));
        char4 qv;
        qv.x = quantize_block::quantize(r.x, s);
        qv.y = quantize_block::quantize(r.y, s);
        qv.z = quantize_block::quantize(r.z, s);
        qv.w = quantize_block::quantize(r.w, s);
        q[c] = qv;
        if (c % 8 == 0) d[c / 8] = s.d;
      }
    }
  }
}

}  // namespace tandem::cuda::rmsnorm_row
