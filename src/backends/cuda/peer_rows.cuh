// The words of a tensor-parallel reduction's peer rows (tensor_reduce.h,
// PeerRows): a one-token product stores each value of its row into every
// other rank's memory as (f32 bits) | (epoch << 32), one 8-byte store, and
// the reduction on that rank polls its own memory until every word of the
// row carries the reduction's epoch. A word is written whole, so a value is
// never seen with another reduction's epoch; no flag or fence orders it.
#pragma once

#include <cstdint>

#include "backends/cuda/tensor_reduce.h"

namespace tandem::cuda::peer_rows {

__device__ __forceinline__ uint64_t word(float v, uint32_t epoch) {
  return (static_cast<uint64_t>(epoch) << 32) | __float_as_uint(v);
}

__device__ __forceinline__ float value(uint64_t w) { return __uint_as_float(static_cast<uint32_t>(w)); }

__device__ __forceinline__ uint32_t epoch_of(uint64_t w) { return static_cast<uint32_t>(w >> 32); }

// Column c's value of this rank's row, into every other rank's memory.
__device__ __forceinline__ void store(const PeerRows& p, uint32_t epoch, int64_t c, float v) {
  const uint64_t w = word(v, epoch);
#pragma unroll
  for (int i = 0; i < PeerRows::kMaxPeers; ++i)
    if (i < p.n_peers) asm volatile("st.relaxed.sys.global.u64 [%0], %1;" ::"l"(p.row[i] + c), "l"(w) : "memory");
}

// Words p[0] and p[1] (16-byte aligned), as they are now.
__device__ __forceinline__ void load_pair(const uint64_t* p, uint64_t& a, uint64_t& b) {
  asm volatile("ld.volatile.global.v2.u64 {%0, %1}, [%2];" : "=l"(a), "=l"(b) : "l"(p) : "memory");
}

}  // namespace tandem::cuda::peer_rows
