// Batch invariance: with MatmulPath::Gemv or ::Gemm, a token's output is
// bit-identical whether it is computed alone or beside other tokens. The
// serving engine depends on this for answers that do not change with load.
#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <vector>

#include "backends/cpu/kernel_set.h"
#include "common/half.h"
#include "common/thread_pool.h"

namespace tandem::cpu {
namespace {

std::vector<uint8_t> random_weights(DType dtype, int64_t rows, int64_t cols, std::mt19937& rng) {
  std::normal_distribution<float> n(0.0f, 0.5f);
  std::vector<float> f(static_cast<size_t>(rows * cols));
  for (float& v : f) v = n(rng);
  const int64_t row_bytes = dtype_row_bytes(dtype, cols);
  std::vector<uint8_t> out(static_cast<size_t>(rows * row_bytes));
  for (int64_t r = 0; r < rows; ++r) {
    const float* src = f.data() + r * cols;
    uint8_t* dst = out.data() + r * row_bytes;
    for (int64_t c = 0; c < cols; ++c) {
      if (dtype == DType::F32) std::memcpy(dst + 4 * c, src + c, 4);
      if (dtype == DType::F16 || dtype == DType::BF16) {
        const uint16_t h = dtype == DType::F16 ? f32_to_f16(src[c]) : f32_to_bf16(src[c]);
        std::memcpy(dst + 2 * c, &h, 2);
      }
    }
    if (dtype == DType::Q8_0) quantize_row_q8_0(src, reinterpret_cast<BlockQ8_0*>(dst), cols);
  }
  return out;
}

TEST(MatmulBatchInvariance, EveryTokenMatchesItselfAlone) {
  std::mt19937 rng(7);
  std::normal_distribution<float> n(0.0f, 1.0f);
  const int64_t rows = 72, cols = 544;  // not multiples of the tile sizes
  for (KernelVariant variant : supported_kernel_variants(detect_cpu_features())) {
    const KernelSet& ks = kernel_set(variant);
    for (int threads : {1, 2}) {
      ThreadPool pool(threads);
      for (DType dtype : {DType::F32, DType::F16, DType::BF16, DType::Q8_0}) {
        const std::vector<uint8_t> wbytes = random_weights(dtype, rows, cols, rng);
        const WeightMatrix w{dtype, rows, cols, wbytes.data()};
        for (MatmulPath path : {MatmulPath::Gemv, MatmulPath::Gemm}) {
          for (int64_t n_tokens : {2, 3, 5, 11, 70}) {
            std::vector<float> x(static_cast<size_t>(n_tokens * cols));
            for (float& v : x) v = n(rng);
            std::vector<float> batched(static_cast<size_t>(n_tokens * rows));
            matmul(ks, w, x.data(), n_tokens, batched.data(), pool, path);
            for (int64_t t = 0; t < n_tokens; ++t) {
              std::vector<float> alone(static_cast<size_t>(rows));
              matmul(ks, w, x.data() + t * cols, 1, alone.data(), pool, path);
              ASSERT_EQ(0, std::memcmp(alone.data(), batched.data() + t * rows, alone.size() * sizeof(float)))
                  << ks.name << " " << dtype_name(dtype) << " path " << static_cast<int>(path) << " token " << t
                  << " of " << n_tokens << ", threads " << threads;
            }
          }
        }
      }
    }
  }
}

TEST(MatmulBatchInvariance, ForcedPathsAgreeWithAutoWhereAutoWouldPickThem) {
  std::mt19937 rng(9);
  std::normal_distribution<float> n(0.0f, 1.0f);
  ThreadPool pool(2);
  const int64_t rows = 40, cols = 256;
  const std::vector<uint8_t> wbytes = random_weights(DType::Q8_0, rows, cols, rng);
  const WeightMatrix w{DType::Q8_0, rows, cols, wbytes.data()};
  std::vector<float> x(static_cast<size_t>(8 * cols));
  for (float& v : x) v = n(rng);
  std::vector<float> a(static_cast<size_t>(8 * rows)), b(a.size());
  matmul(w, x.data(), 1, a.data(), pool, MatmulPath::Auto);
  matmul(w, x.data(), 1, b.data(), pool, MatmulPath::Gemv);
  EXPECT_EQ(0, std::memcmp(a.data(), b.data(), static_cast<size_t>(rows) * sizeof(float)));
  matmul(w, x.data(), 8, a.data(), pool, MatmulPath::Auto);
  matmul(w, x.data(), 8, b.data(), pool, MatmulPath::Gemm);
  EXPECT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * sizeof(float)));
}

}  // namespace
}  // namespace tandem::cpu
