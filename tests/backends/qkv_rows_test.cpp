// The rows a block of the fused one-token q·k·v GEMV takes
// (src/backends/cuda/qkv_rows.h): over every block, each row of the
// product exactly once, and each row's RoPE partner in the same block, in
// the slot the lanes' shuffle reads, with the same pair index and the
// other role (first or second value of the pair), as the CPU's RoPE pairs
// them. Host code, so it runs without a GPU.
#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <vector>

#include "backends/cuda/qkv_rows.h"

namespace {

namespace qkv_rows = tandem::cuda::qkv_rows;

// The CPU's RoPE pairs (CpuModelRunner): interleaved (2p, 2p + 1),
// half-split (p, p + head_dim / 2).
int64_t cpu_partner(int64_t r, int head_dim, bool interleaved) {
  const int64_t head = r / head_dim;
  const int d = static_cast<int>(r % head_dim), half = head_dim / 2;
  const int pd = interleaved ? (d % 2 == 0 ? d + 1 : d - 1) : (d < half ? d + half : d - half);
  return head * head_dim + pd;
}

template <int R, bool kInterleaved>
void check_layout(int head_dim, int heads) {
  if (head_dim % R != 0) return;  // not a shape the fused GEMV takes (gemv_finishes_qkv)
  SCOPED_TRACE(std::to_string(R) + " rows a block, head_dim " + std::to_string(head_dim) +
               (kInterleaved ? ", interleaved" : ", half-split"));
  const int64_t rows = int64_t{heads} * head_dim;
  ASSERT_EQ(rows % R, 0);
  std::vector<int> seen(static_cast<size_t>(rows), 0);
  for (int block = 0; block < rows / R; ++block) {
    for (int i = 0; i < R; ++i) {
      const int64_t r = qkv_rows::block_row<R, kInterleaved>(block, i, head_dim);
      ASSERT_GE(r, 0);
      ASSERT_LT(r, rows);
      ++seen[static_cast<size_t>(r)];
      const int j = i ^ qkv_rows::partner_offset<R, kInterleaved>();
      ASSERT_LT(j, R);
      const int64_t pr = qkv_rows::block_row<R, kInterleaved>(block, j, head_dim);
      EXPECT_EQ(pr, cpu_partner(r, head_dim, kInterleaved)) << "block " << block << " slot " << i;
      const int d = static_cast<int>(r % head_dim), pd = static_cast<int>(pr % head_dim);
      EXPECT_EQ(qkv_rows::pair_index<kInterleaved>(d, head_dim), qkv_rows::pair_index<kInterleaved>(pd, head_dim));
      EXPECT_LT(qkv_rows::pair_index<kInterleaved>(d, head_dim), head_dim / 2);
      EXPECT_NE(qkv_rows::first_of_pair<kInterleaved>(d, head_dim),
                qkv_rows::first_of_pair<kInterleaved>(pd, head_dim));
    }
  }
  for (int64_t r = 0; r < rows; ++r) ASSERT_EQ(seen[static_cast<size_t>(r)], 1) << "row " << r;
}

TEST(QkvRows, BlocksCoverEveryRowOnceWithTheirRopePartners) {
  // Heads: 32 q + 2 x 8 kv (an 8B layer), 4 + 2 x 2, and one.
  for (const int heads : {48, 8, 1}) {
    for (const int head_dim : {8, 16, 64, 128, 256}) {
      check_layout<8, true>(head_dim, heads);
      check_layout<8, false>(head_dim, heads);
      check_layout<4, true>(head_dim, heads);
      check_layout<4, false>(head_dim, heads);
      check_layout<16, true>(head_dim, heads);
      check_layout<16, false>(head_dim, heads);
    }
    check_layout<4, true>(4, heads);  // one block a head
    check_layout<4, false>(4, heads);
  }
}

}  // namespace
