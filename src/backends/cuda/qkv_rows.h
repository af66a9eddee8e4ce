// Which rows of the q·k·v product a block of the fused one-token GEMV takes
// (qkv_epilogue.cuh), and where each row's RoPE partner is. Host and device
// code, so that a CPU test checks the mapping (tests/backends/qkv_rows_test.cpp).
//
// A block takes R rows (a power of two), whole RoPE pairs of one head:
// - interleaved layout: a pair is rows (2p, 2p + 1) of a head, and block b
//   takes rows [b R, b R + R); slot i's partner is slot i ^ 1;
// - half-split layout: a pair is rows (p, p + head_dim / 2) of a head, and
//   block b takes R / 2 pairs of one head: rows p0 .. p0 + R/2 - 1 and
//   their partners half a head on; slot i's partner is slot i ^ R/2.
// v's rows are placed the same way (no rotation; any order would do).
// head_dim must be a multiple of R. 32-bit arithmetic: a q·k·v matrix has
// far fewer than 2^31 rows.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define TANDEM_QKV_ROWS_FN __host__ __device__ __forceinline__
#else
#define TANDEM_QKV_ROWS_FN inline
#endif

namespace tandem::cuda::qkv_rows {

// The row of slot i (< R) of block `block`.
template <int R, bool kInterleaved>
TANDEM_QKV_ROWS_FN int64_t block_row(int block, int i, int head_dim) {
  static_assert(R >= 2 && R <= 16 && (R & (R - 1)) == 0, "a block's rows: a power of two, at most 16");
  if constexpr (kInterleaved) return block * R + i;
  const int blocks_per_head = head_dim / R;
  const int first = block / blocks_per_head * head_dim + block % blocks_per_head * (R / 2);
  return first + (i >= R / 2 ? head_dim / 2 : 0) + i % (R / 2);
}

// The slot holding slot i's RoPE partner (a lane's shuffle offset).
template <int R, bool kInterleaved>
TANDEM_QKV_ROWS_FN int partner_offset() {
  return kInterleaved ? 1 : R / 2;
}

// For dimension d of a head: its pair's index p (the RoPE table's column)
// and whether it is the pair's first value.
template <bool kInterleaved>
TANDEM_QKV_ROWS_FN int pair_index(int d, int head_dim) {
  return kInterleaved ? d / 2 : d % (head_dim / 2);
}
template <bool kInterleaved>
TANDEM_QKV_ROWS_FN bool first_of_pair(int d, int head_dim) {
  return kInterleaved ? d % 2 == 0 : d < head_dim / 2;
}

}  // namespace tandem::cuda::qkv_rows
