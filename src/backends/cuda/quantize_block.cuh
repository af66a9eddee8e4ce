// The activation quantization rule of the 8-bit GEMV, shared by every kernel
// that produces its input (quantize_activations, the RMSNorm before it,
// attention before the o projection): per block of 32 values,
// d = max|x| / 127 and q = round(x / d) (halves away from zero), as
// cpu::quantize_row_q8_0 does. The division and reciprocal are correctly
// rounded (the build uses fast math), so that the quants are the CPU's; a
// NaN in the block makes d NaN (fmaxf alone would drop it), so that it
// reaches the logits as on the float path.
#pragma once

#include <cstdint>

namespace tandem::cuda::quantize_block {

// max(a, b) that keeps a NaN.
__device__ __forceinline__ float nan_max(float a, float b) { return isnan(a) || isnan(b) ? a + b : fmaxf(a, b); }

struct Scale {
  float d;    // the block's scale
  float rcp;  // 1 / d (0 for an all-zero block)
};

// The block's scale from each lane's max |x|, over groups of kLanes lanes
// (xor offsets below kLanes; `mask`: the group's lanes, all active).
template <int kLanes>
__device__ __forceinline__ Scale block_scale(float lane_amax, unsigned mask) {
  float amax = lane_amax;
#pragma unroll
  for (int off = kLanes / 2; off > 0; off /= 2) amax = nan_max(amax, __shfl_xor_sync(mask, amax, off, kLanes));
  const float d = __fdiv_rn(amax, 127.0f);
  return Scale{d, d != 0.0f ? __frcp_rn(d) : 0.0f};
}

__device__ __forceinline__ int8_t quantize(float v, const Scale& s) {
  return static_cast<int8_t>(roundf(__fmul_rn(v, s.rcp)));
}

}  // namespace tandem::cuda::quantize_block
