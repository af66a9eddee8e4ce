// The key in which the GPU's argmax_rows meets a row's blocks
// (src/backends/cuda/argmax_key.h) orders (value, column) pairs as the
// greedy rule does: the larger value, then the lower column, -0 equal to
// +0; key 0 below every value above -inf. Host code, so it runs without a
// GPU.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "backends/cuda/argmax_key.h"

namespace {

using tandem::cuda::argmax_key::column_of;
using tandem::cuda::argmax_key::key_of;

bool beats(float av, int32_t ai, float bv, int32_t bi) { return av > bv || (av == bv && ai < bi); }

TEST(ArgmaxKey, OrdersPairsAsTheGreedyRule) {
  const float inf = std::numeric_limits<float>::infinity(), big = std::numeric_limits<float>::max(),
              tiny = std::numeric_limits<float>::denorm_min(), small = std::numeric_limits<float>::min();
  const std::vector<float> values = {-inf, -big, -1e10f, -1.5f, -1.0f, -small, -tiny, -0.0f, 0.0f,
                                     tiny,  small, 1.0f,   1.5f,  1e10f, big,    inf};
  const std::vector<int32_t> columns = {0, 1, 7, 4095, 4096, 128255, 268435455};
  for (float av : values)
    for (int32_t ai : columns)
      for (float bv : values)
        for (int32_t bi : columns) {
          if (av == -inf || bv == -inf) continue;  // never keyed: nothing above -inf stays at key 0
          EXPECT_EQ(key_of(av, ai) > key_of(bv, bi), beats(av, ai, bv, bi))
              << av << "@" << ai << " against " << bv << "@" << bi;
        }
}

TEST(ArgmaxKey, SignedZerosTieToTheLowerColumn) {
  // The row's best is 0: -0 in one block, +0 at a later column in another.
  EXPECT_GT(key_of(-0.0f, 17), key_of(0.0f, 4500));
  EXPECT_GT(key_of(0.0f, 17), key_of(-0.0f, 4500));
  EXPECT_EQ(key_of(-0.0f, 17), key_of(0.0f, 17));
}

TEST(ArgmaxKey, ColumnsComeBackAndKeyZeroMeansNone) {
  for (int32_t c : {0, 1, 4096, 128255, 268435455}) {
    EXPECT_EQ(column_of(key_of(-std::numeric_limits<float>::max(), c)), c);
    EXPECT_EQ(column_of(key_of(3.5f, c)), c);
    EXPECT_GT(key_of(-std::numeric_limits<float>::max(), c), 0ull);
  }
  EXPECT_EQ(column_of(0), -1);
}

}  // namespace
