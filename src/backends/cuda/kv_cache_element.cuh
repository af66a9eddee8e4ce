// The paged KV cache's elements: f16, or E4M3 (KvCacheType::Fp8E4M3, half
// the bytes). Writers round a float to the cache's type; readers widen
// E4M3 to f16 first, which is exact, so a kernel reading an E4M3 cache
// computes what it computes on an f16 cache holding the same values.
#pragma once

#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include <cstdint>

#include "backends/cuda/kernels.h"

namespace tandem::cuda::kv_cache_element {

// v rounded to the cache's type and stored at element `index` (E4M3:
// saturated to +-448, the type's largest finite value).
__device__ __forceinline__ void store(void* cache, KvCacheType type, int64_t index, float v) {
  if (type == KvCacheType::Fp8E4M3)
    static_cast<__nv_fp8_storage_t*>(cache)[index] = __nv_cvt_float_to_fp8(v, __NV_SATFINITE, __NV_E4M3);
  else
    static_cast<__half*>(cache)[index] = __float2half_rn(v);
}

// One E4M3 value, widened.
__device__ __forceinline__ __half fp8_to_half(__nv_fp8_storage_t v) {
  return __half(__nv_cvt_fp8_to_halfraw(v, __NV_E4M3));
}
// Two E4M3 values (the lower byte first), widened.
__device__ __forceinline__ __half2 fp8x2_to_half2(__nv_fp8x2_storage_t v) {
  return __half2(__nv_cvt_fp8x2_to_halfraw2(v, __NV_E4M3));
}

// Sixteen E4M3 values (16 bytes) widened into sixteen halves (32 bytes).
__device__ __forceinline__ void widen16(const uint4& in, uint4& lo, uint4& hi) {
  const __nv_fp8x2_storage_t* p = reinterpret_cast<const __nv_fp8x2_storage_t*>(&in);
  __half2 h[8];
#pragma unroll
  for (int i = 0; i < 8; ++i) h[i] = fp8x2_to_half2(p[i]);
  lo = *reinterpret_cast<const uint4*>(&h[0]);
  hi = *reinterpret_cast<const uint4*>(&h[4]);
}

}  // namespace tandem::cuda::kv_cache_element
