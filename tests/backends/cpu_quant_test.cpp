// Q8_0 format exactness, row conversions, and the activation quantizers of
// every kernel variant.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "backends/cpu/cpu_kernels.h"
#include "backends/cpu/kernel_set.h"
#include "common/error.h"
#include "common/half.h"

namespace tandem::cpu {
namespace {

TEST(Q8_0, ScaleIsAmaxOver127StoredAsF16) {
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> dist(-3.0f, 3.0f);
  std::vector<float> x(32 * 64);
  for (auto& v : x) v = dist(rng);
  std::vector<BlockQ8_0> q(64);
  quantize_row_q8_0(x.data(), q.data(), static_cast<int64_t>(x.size()));
  for (int b = 0; b < 64; ++b) {
    float amax = 0.0f;
    int imax = 0;
    for (int j = 0; j < 32; ++j) {
      if (std::fabs(x[b * 32 + j]) > amax) {
        amax = std::fabs(x[b * 32 + j]);
        imax = j;
      }
    }
    const float d = amax / 127.0f;
    EXPECT_EQ(q[b].d, f32_to_f16(d));
    // The largest magnitude maps to +-127.
    EXPECT_EQ(std::abs(q[b].qs[imax]), 127);
    for (int j = 0; j < 32; ++j) {
      // Each quant is the nearest integer to x / d (within f32 rounding of 1/d).
      EXPECT_LE(std::fabs(x[b * 32 + j] / d - q[b].qs[j]), 0.5f + 1e-4f);
    }
  }
}

TEST(Q8_0, HalfwayRoundsAwayFromZeroAndZeroBlockIsZero) {
  // amax = 127 -> d = 1 exactly, so x / d is x.
  std::vector<float> x(32, 0.0f);
  x[0] = 127.0f;
  x[1] = 2.5f;
  x[2] = -2.5f;
  x[3] = 0.49f;
  x[4] = -126.5f;
  BlockQ8_0 q{};
  quantize_row_q8_0(x.data(), &q, 32);
  EXPECT_EQ(q.d, 0x3c00);  // 1.0 in f16
  EXPECT_EQ(q.qs[0], 127);
  EXPECT_EQ(q.qs[1], 3);
  EXPECT_EQ(q.qs[2], -3);
  EXPECT_EQ(q.qs[3], 0);
  EXPECT_EQ(q.qs[4], -127);
  std::vector<float> zeros(32, 0.0f);
  quantize_row_q8_0(zeros.data(), &q, 32);
  EXPECT_EQ(q.d, 0);
  for (int j = 0; j < 32; ++j) EXPECT_EQ(q.qs[j], 0);
}

TEST(Q8_0, RoundTripIsExactOnTheGridAndBoundedElsewhere) {
  // Multiples of 0.5 with amax 63.5: d = 0.5 is exact in f16, so the round trip is exact.
  std::vector<float> grid(64);
  for (int i = 0; i < 64; ++i) grid[i] = 0.5f * static_cast<float>((i * 37) % 255 - 127);
  grid[5] = 63.5f;
  std::vector<BlockQ8_0> q(2);
  quantize_row_q8_0(grid.data(), q.data(), 64);
  std::vector<float> back(64);
  dequantize_row(DType::Q8_0, q.data(), back.data(), 64);
  for (int i = 0; i < 64; ++i) EXPECT_EQ(back[i], grid[i]) << i;

  std::mt19937 rng(3);
  std::normal_distribution<float> dist(0.0f, 10.0f);
  std::vector<float> x(32 * 16);
  for (auto& v : x) v = dist(rng);
  std::vector<BlockQ8_0> qb(16);
  quantize_row_q8_0(x.data(), qb.data(), static_cast<int64_t>(x.size()));
  std::vector<float> y(x.size());
  dequantize_row(DType::Q8_0, qb.data(), y.data(), static_cast<int64_t>(x.size()));
  for (int b = 0; b < 16; ++b) {
    float amax = 0.0f;
    for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(x[b * 32 + j]));
    const float d = amax / 127.0f;
    const float d16 = f16_to_f32(qb[b].d);
    // Half a step from rounding, plus up to 127 times the f16 rounding of d.
    const float bound = 0.5f * d + 127.0f * std::fabs(d16 - d) + 1e-6f * amax;
    for (int j = 0; j < 32; ++j) EXPECT_LE(std::fabs(x[b * 32 + j] - y[b * 32 + j]), bound);
  }
}

TEST(Q8_0, BadLengthThrows) {
  std::vector<float> x(40);
  std::vector<BlockQ8_0> q(2);
  EXPECT_THROW(quantize_row_q8_0(x.data(), q.data(), 40), Error);
  EXPECT_THROW(dequantize_row(DType::Q8_0, q.data(), x.data(), 40), Error);
  EXPECT_THROW(dequantize_row(DType::Q4_0, q.data(), x.data(), 32), Error);
}

TEST(DequantizeRow, HalfFormatsDecodeKnownValues) {
  const uint16_t f16[] = {0x3c00, 0xc000, 0x7bff, 0x0001, 0x0000, 0x8000};
  const float f16_want[] = {1.0f, -2.0f, 65504.0f, 5.9604645e-8f, 0.0f, -0.0f};
  float out[6];
  dequantize_row(DType::F16, f16, out, 6);
  for (int i = 0; i < 6; ++i) EXPECT_EQ(out[i], f16_want[i]) << i;
  const uint16_t bf16[] = {0x3f80, 0xc040, 0x4049};
  dequantize_row(DType::BF16, bf16, out, 3);
  EXPECT_EQ(out[0], 1.0f);
  EXPECT_EQ(out[1], -3.0f);
  EXPECT_EQ(out[2], 3.140625f);
}

// Every variant's activation quantizer: same contract, same bits as generic.
TEST(ActivationQuantizer, EveryVariantMatchesGenericAndBound) {
  std::mt19937 rng(11);
  std::normal_distribution<float> dist(0.0f, 2.0f);
  const int64_t n = 32 * 40;
  std::vector<float> x(n);
  for (auto& v : x) v = dist(rng);
  for (int j = 0; j < 32; ++j) x[64 + j] = 0.0f;  // an all-zero block
  x[100] = 1e30f;                                 // a huge value
  std::vector<int8_t> gq(n);
  std::vector<float> gd(n / 32);
  kernel_set(KernelVariant::Generic).quantize_activations(x.data(), n, gq.data(), gd.data());
  for (int64_t b = 0; b < n / 32; ++b) {
    for (int j = 0; j < 32; ++j) {
      const float xi = x[b * 32 + j];
      EXPECT_LE(std::fabs(xi - gq[b * 32 + j] * gd[b]), 0.5f * gd[b] * 1.0001f + 1e-30f);
    }
  }
  for (KernelVariant v : supported_kernel_variants(detect_cpu_features())) {
    const KernelSet& ks = kernel_set(v);
    std::vector<int8_t> q(n);
    std::vector<float> d(n / 32);
    ks.quantize_activations(x.data(), n, q.data(), d.data());
    EXPECT_EQ(0, std::memcmp(q.data(), gq.data(), n)) << ks.name;
    EXPECT_EQ(0, std::memcmp(d.data(), gd.data(), d.size() * 4)) << ks.name;
  }
}

}  // namespace
}  // namespace tandem::cpu
