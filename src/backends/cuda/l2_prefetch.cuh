// L2Prefetch (kernels.h) on the device: each block of the grid asks for an
// equal share of every range, issued by its first thread as one bulk
// prefetch (cp.async.bulk.prefetch.L2, sm_90 and later; nothing earlier).
// Weights only: no kernel of the step writes them, so a kernel launched
// with launch.h may issue this before wait_for_predecessor().
#pragma once

#include <cstdint>

#include "backends/cuda/kernels.h"

namespace tandem::cuda {

__device__ __forceinline__ void prefetch_l2_share(const L2Prefetch& p) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  if (threadIdx.x != 0 || threadIdx.y != 0 || threadIdx.z != 0) return;
  const int64_t n_blocks = static_cast<int64_t>(gridDim.x) * gridDim.y * gridDim.z;
  const int64_t block = blockIdx.x + static_cast<int64_t>(gridDim.x) * (blockIdx.y + static_cast<int64_t>(gridDim.y) * blockIdx.z);
#pragma unroll
  for (int r = 0; r < L2Prefetch::kMaxRanges; ++r) {
    if (p.data[r] == nullptr) continue;
    const int64_t units = p.bytes[r] / 16;  // 16-byte units
    const int64_t share = (units + n_blocks - 1) / n_blocks;
    const int64_t begin = block * share, end = min(units, begin + share);
    if (begin >= end) continue;
    const char* from = static_cast<const char*>(p.data[r]) + begin * 16;
    const uint32_t bytes = static_cast<uint32_t>((end - begin) * 16);
    asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(from), "r"(bytes) : "memory");
  }
#else
  (void)p;
#endif
}

}  // namespace tandem::cuda
