// The vector helpers of every variant against plain double-precision loops.
// Tolerance: 1e-5 relative to the sum of magnitudes (f32 accumulation).
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "backends/cpu/cpu_ops.h"
#include "backends/cpu/kernel_set.h"

namespace tandem::cpu {
namespace {

std::vector<float> randn(int64_t n, std::mt19937& rng) {
  std::normal_distribution<float> d(0.0f, 1.0f);
  std::vector<float> v(static_cast<size_t>(n));
  for (auto& x : v) x = d(rng);
  return v;
}

TEST(CpuOps, EveryVariantMatchesScalar) {
  std::mt19937 rng(5);
  for (KernelVariant var : supported_kernel_variants(detect_cpu_features())) {
    const KernelSet& ks = kernel_set(var);
    for (int64_t n : {0, 1, 7, 16, 33, 100, 1024}) {
      const auto a = randn(n, rng), b = randn(n, rng), w = randn(n, rng);
      double d = 0, mag = 0, ss = 0;
      for (int64_t i = 0; i < n; ++i) {
        d += static_cast<double>(a[i]) * b[i];
        mag += std::fabs(static_cast<double>(a[i]) * b[i]);
        ss += static_cast<double>(a[i]) * a[i];
      }
      EXPECT_NEAR(ks.dot(a.data(), b.data(), n), d, 1e-5 * mag + 1e-30) << ks.name << " n " << n;
      EXPECT_NEAR(ks.sum_squares(a.data(), n), ss, 1e-5 * ss + 1e-30) << ks.name;
      std::vector<float> y = b;
      ks.axpy(0.5f, a.data(), y.data(), n);
      for (int64_t i = 0; i < n; ++i) ASSERT_NEAR(y[i], b[i] + 0.5 * a[i], 1e-6 * (std::fabs(b[i]) + std::fabs(a[i]))) << ks.name;
      std::vector<float> out(static_cast<size_t>(n));
      ks.scale_mul(2.0f, a.data(), w.data(), out.data(), n);
      for (int64_t i = 0; i < n; ++i) ASSERT_NEAR(out[i], 2.0 * a[i] * w[i], 1e-6 * std::fabs(2.0 * a[i] * w[i]) + 1e-30);
    }
  }
}

TEST(CpuOps, RmsnormSiluSoftmax) {
  std::mt19937 rng(8);
  const int64_t n = 77;
  auto x = randn(n, rng), w = randn(n, rng);
  double ss = 0;
  for (float v : x) ss += static_cast<double>(v) * v;
  const double inv = 1.0 / std::sqrt(ss / n + 1e-6);
  std::vector<float> out(n);
  rmsnorm(x.data(), w.data(), 1e-6f, out.data(), n);
  for (int64_t i = 0; i < n; ++i) EXPECT_NEAR(out[i], x[i] * inv * w[i], 1e-5 * std::fabs(x[i] * inv * w[i]) + 1e-7);

  auto g = randn(n, rng), u = randn(n, rng);
  auto g2 = g;
  silu_mul(g2.data(), u.data(), n);
  for (int64_t i = 0; i < n; ++i) {
    const double want = g[i] / (1.0 + std::exp(-static_cast<double>(g[i]))) * u[i];
    EXPECT_NEAR(g2[i], want, 1e-6 * std::fabs(want) + 1e-7);
  }

  std::vector<float> s = {1000.0f, 1001.0f, 999.0f};  // would overflow without the max shift
  softmax(s.data(), 3);
  const double e0 = std::exp(-1.0), e2 = std::exp(-2.0), z = e0 + 1.0 + e2;
  EXPECT_NEAR(s[0], e0 / z, 1e-6);
  EXPECT_NEAR(s[1], 1.0 / z, 1e-6);
  EXPECT_NEAR(s[2], e2 / z, 1e-6);
}

}  // namespace
}  // namespace tandem::cpu
