// Every kernel variant this CPU supports against matmul_ref, for every dtype,
// odd shapes and 1..3 threads.
//
// Tolerances (checked per output element, S = sum_c |W[r,c] * x[t,c]|):
//   f32 / f16 / bf16 weights, and Q8_0 on the GEMM path (n_tokens > 4) and the
//   generic variant: the weights are converted to f32 exactly and accumulated
//   in f32, so |y - ref| <= 1e-5 * S.
//   Q8_0 on the SIMD GEMV path (n_tokens <= 4): x is quantized to int8 per
//   block of 32 (scale max|x|/127, round to nearest), so each x value moves by
//   at most half a step: |y - ref| <= sum_blocks(sum_{c in b} |W[r,c]|) *
//   max_{c in b}|x[t,c]| / 254 * 1.001 + 1e-5 * S.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

#include "backends/cpu/cpu_kernels.h"
#include "backends/cpu/kernel_set.h"
#include "backends/cpu/q8_0_rows8.h"
#include "common/error.h"
#include "common/half.h"

namespace tandem::cpu {
namespace {

// A random weight matrix in `dtype`, plus its exact f32 values.
struct TestMatrix {
  DType dtype;
  int64_t rows, cols;
  std::vector<uint8_t> bytes;  // [rows, cols] in dtype
  std::vector<float> values;   // [rows, cols] f32, what the bytes decode to
  WeightMatrix view() const { return WeightMatrix{dtype, rows, cols, bytes.data()}; }
};

TestMatrix make_matrix(DType dtype, int64_t rows, int64_t cols, std::mt19937& rng) {
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> src(static_cast<size_t>(rows * cols));
  for (auto& v : src) v = dist(rng);
  TestMatrix m{dtype, rows, cols, {}, {}};
  const int64_t row_bytes = dtype_row_bytes(dtype, cols);
  m.bytes.resize(static_cast<size_t>(rows * row_bytes));
  for (int64_t r = 0; r < rows; ++r) {
    const float* s = src.data() + r * cols;
    uint8_t* d = m.bytes.data() + r * row_bytes;
    switch (dtype) {
      case DType::F32: std::memcpy(d, s, static_cast<size_t>(cols * 4)); break;
      case DType::F16:
        for (int64_t c = 0; c < cols; ++c) reinterpret_cast<uint16_t*>(d)[c] = f32_to_f16(s[c]);
        break;
      case DType::BF16:
        for (int64_t c = 0; c < cols; ++c) reinterpret_cast<uint16_t*>(d)[c] = f32_to_bf16(s[c]);
        break;
      case DType::Q8_0: quantize_row_q8_0(s, reinterpret_cast<BlockQ8_0*>(d), cols); break;
      default: break;
    }
  }
  m.values.resize(src.size());
  for (int64_t r = 0; r < rows; ++r)
    dequantize_row(dtype, m.bytes.data() + r * row_bytes, m.values.data() + r * cols, cols);
  return m;
}

std::vector<float> make_x(int64_t n_tokens, int64_t cols, std::mt19937& rng) {
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(n_tokens * cols));
  for (auto& v : x) v = dist(rng);
  return x;
}

// Allowed |y - ref| for element (t, r); see the file comment.
double tolerance(const TestMatrix& m, const std::vector<float>& x, int64_t t, int64_t r,
                 bool quantized_x) {
  const float* w = m.values.data() + r * m.cols;
  const float* xt = x.data() + t * m.cols;
  double s = 0.0;
  for (int64_t c = 0; c < m.cols; ++c) s += std::fabs(static_cast<double>(w[c]) * xt[c]);
  double tol = 1e-5 * s + 1e-30;
  if (quantized_x) {
    for (int64_t b = 0; b < m.cols / 32; ++b) {
      double wsum = 0.0, xmax = 0.0;
      for (int64_t c = b * 32; c < b * 32 + 32; ++c) {
        wsum += std::fabs(w[c]);
        xmax = std::max(xmax, static_cast<double>(std::fabs(xt[c])));
      }
      tol += wsum * xmax / 254.0 * 1.001;
    }
  }
  return tol;
}

struct Case {
  DType dtype;
  std::vector<int64_t> cols;
};

std::vector<KernelVariant> variants() { return supported_kernel_variants(detect_cpu_features()); }

TEST(CpuMatmul, EveryVariantMatchesReference) {
  std::mt19937 rng(1234);
  const std::vector<Case> cases = {
      {DType::F32, {5, 32, 200, 1061}},
      {DType::F16, {5, 32, 200, 1061}},
      {DType::BF16, {5, 32, 200, 1061}},
      {DType::Q8_0, {32, 96, 1056}},
  };
  const int64_t row_counts[] = {1, 5, 33, 67};
  const int64_t token_counts[] = {1, 2, 3, 4, 7, 64, 65};
  ThreadPool pools[] = {ThreadPool(1), ThreadPool(2), ThreadPool(3)};
  for (KernelVariant v : variants()) {
    const KernelSet& ks = kernel_set(v);
    for (const Case& cs : cases) {
      for (int64_t cols : cs.cols) {
        for (int64_t rows : row_counts) {
          const TestMatrix m = make_matrix(cs.dtype, rows, cols, rng);
          for (int64_t nt : token_counts) {
            const std::vector<float> x = make_x(nt, cols, rng);
            std::vector<float> ref(static_cast<size_t>(nt * rows));
            matmul_ref(m.view(), x.data(), nt, ref.data());
            const bool qx = cs.dtype == DType::Q8_0 && nt <= ks.gemv_max_tokens;
            std::vector<float> first;
            for (ThreadPool& pool : pools) {
              std::vector<float> y(static_cast<size_t>(nt * rows), std::nanf(""));
              matmul(ks, m.view(), x.data(), nt, y.data(), pool);
              int bad = 0;
              for (int64_t t = 0; t < nt; ++t) {
                for (int64_t r = 0; r < rows; ++r) {
                  const double err = std::fabs(static_cast<double>(y[t * rows + r]) - ref[t * rows + r]);
                  if (!(err <= tolerance(m, x, t, r, qx)) && bad++ < 3) {
                    ADD_FAILURE() << ks.name << " " << dtype_name(cs.dtype) << " rows " << rows
                                  << " cols " << cols << " tokens " << nt << " threads "
                                  << pool.size() << " at (t " << t << ", r " << r << "): got "
                                  << y[t * rows + r] << ", want " << ref[t * rows + r];
                  }
                }
              }
              // Rows are independent: the thread count must not change a single bit.
              if (first.empty()) {
                first = y;
              } else {
                EXPECT_EQ(0, std::memcmp(first.data(), y.data(), y.size() * 4))
                    << ks.name << " " << dtype_name(cs.dtype) << " differs with " << pool.size()
                    << " threads";
              }
            }
          }
        }
      }
    }
  }
}

// The 0.6B model's shapes, once, at GEMV and GEMM sizes (several K panels).
TEST(CpuMatmul, ModelShapesMatchReference) {
  std::mt19937 rng(99);
  ThreadPool pool(2);
  for (KernelVariant v : variants()) {
    const KernelSet& ks = kernel_set(v);
    for (DType dt : {DType::F16, DType::BF16, DType::Q8_0}) {
      const TestMatrix m = make_matrix(dt, 96, 3072, rng);
      for (int64_t nt : {1, 4, 70}) {
        const std::vector<float> x = make_x(nt, 3072, rng);
        std::vector<float> ref(static_cast<size_t>(nt * 96)), y(ref.size());
        matmul_ref(m.view(), x.data(), nt, ref.data());
        matmul(ks, m.view(), x.data(), nt, y.data(), pool);
        const bool qx = dt == DType::Q8_0 && nt <= ks.gemv_max_tokens;
        for (int64_t t = 0; t < nt; ++t)
          for (int64_t r = 0; r < 96; ++r)
            ASSERT_LE(std::fabs(y[t * 96 + r] - ref[t * 96 + r]), tolerance(m, x, t, r, qx))
                << ks.name << " " << dtype_name(dt) << " tokens " << nt;
      }
    }
  }
}

// Q8_0 regrouped by 8 rows (q8_0_rows8.h): the same values (matmul_ref on
// both layouts agrees bit for bit); one kernel with quantized activations for
// every token count, within the Q8_0 GEMV tolerance; rows not a multiple of
// 8; 1..3 threads giving the same bits; a token's result independent of the
// other tokens and of the path (decode or prompt); the kernels without rows8
// support refusing it.
TEST(CpuMatmul, Q8_0Rows8MatchesReference) {
  std::mt19937 rng(4321);
  ThreadPool pools[] = {ThreadPool(1), ThreadPool(2), ThreadPool(3)};
  for (KernelVariant v : variants()) {
    const KernelSet& ks = kernel_set(v);
    for (int64_t rows : {1, 8, 13, 67}) {
      for (int64_t cols : {32, 96, 1056}) {
        const TestMatrix m = make_matrix(DType::Q8_0, rows, cols, rng);
        PackedWeights storage;
        const WeightMatrix packed = repack_q8_0_rows8(m.view(), storage);
        ASSERT_EQ(packed.layout, WeightLayout::Q8_0Rows8);
        ASSERT_NE(packed.data, m.view().data);
        if (!ks.q8_0_rows8) {
          std::vector<float> x = make_x(1, cols, rng), y(static_cast<size_t>(rows));
          EXPECT_THROW(matmul(ks, packed, x.data(), 1, y.data(), pools[0]), Error) << ks.name;
          continue;
        }
        for (int64_t nt : {1, 2, 3, 4, 5, 64}) {
          const std::vector<float> x = make_x(nt, cols, rng);
          std::vector<float> ref(static_cast<size_t>(nt * rows)), ref8(ref.size());
          matmul_ref(m.view(), x.data(), nt, ref.data());
          matmul_ref(packed, x.data(), nt, ref8.data());
          ASSERT_EQ(0, std::memcmp(ref.data(), ref8.data(), ref.size() * 4)) << "rows " << rows << " cols " << cols;
          const bool qx = true;  // every token count takes the quantized-activation kernel
          std::vector<float> first;
          for (ThreadPool& pool : pools) {
            std::vector<float> y(ref.size(), std::nanf(""));
            matmul(ks, packed, x.data(), nt, y.data(), pool);
            for (int64_t t = 0; t < nt; ++t)
              for (int64_t r = 0; r < rows; ++r)
                ASSERT_LE(std::fabs(y[t * rows + r] - ref[t * rows + r]), tolerance(m, x, t, r, qx))
                    << ks.name << " rows " << rows << " cols " << cols << " tokens " << nt << " (t " << t << ", r "
                    << r << ")";
            if (first.empty()) {
              first = y;
            } else {
              ASSERT_EQ(0, std::memcmp(first.data(), y.data(), y.size() * 4)) << ks.name << " " << pool.size();
            }
          }
          // Each token alone gives the bits it gets among the others, on the
          // decode and the prompt path alike (one kernel).
          std::vector<float> all(ref.size()), prompt(ref.size()), one(static_cast<size_t>(rows));
          matmul(ks, packed, x.data(), nt, all.data(), pools[1], MatmulPath::Gemv);
          matmul(ks, packed, x.data(), nt, prompt.data(), pools[1], MatmulPath::Gemm);
          ASSERT_EQ(0, std::memcmp(all.data(), prompt.data(), all.size() * 4)) << ks.name << " tokens " << nt;
          for (int64_t t = 0; t < nt; ++t) {
            matmul(ks, packed, x.data() + t * cols, 1, one.data(), pools[1], MatmulPath::Gemv);
            ASSERT_EQ(0, std::memcmp(one.data(), all.data() + t * rows, one.size() * 4)) << ks.name << " token " << t;
          }
        }
      }
    }
  }
  // A quant of -128 (not written by GGUF's quantizers, but valid) keeps the row-major layout.
  TestMatrix m = make_matrix(DType::Q8_0, 9, 64, rng);
  reinterpret_cast<BlockQ8_0*>(m.bytes.data())[3].qs[5] = -128;
  PackedWeights storage;
  const WeightMatrix kept = repack_q8_0_rows8(m.view(), storage);
  EXPECT_EQ(kept.layout, WeightLayout::RowMajor);
  EXPECT_EQ(kept.data, m.view().data);
  EXPECT_FALSE(storage.bytes);
}

// silu(g) * u in every variant against double precision: relative error
// where e^-g is a float, absolute below (silu ~ 0 there), at the clamps and
// past them, with a tail that is not a whole vector; NaN stays NaN.
TEST(CpuOps, SiluMulMatchesDoublePrecisionInEveryVariant) {
  std::vector<float> g;
  for (float v = -90.0f; v <= 90.0f; v += 0.0137f) g.push_back(v);
  for (float v : {-1e-30f, 0.0f, 1e-30f, -87.3f, 88.0f, -88.5f, 89.0f, -200.0f, 200.0f}) g.push_back(v);
  g.push_back(0.5f);  // the length is then not a multiple of 16
  std::mt19937 rng(11);
  std::uniform_real_distribution<float> uniform(-2.0f, 2.0f);
  std::vector<float> up(g.size());
  for (float& u : up) u = uniform(rng);
  for (KernelVariant v : variants()) {
    const KernelSet& ks = kernel_set(v);
    std::vector<float> got = g;
    ks.silu_mul(got.data(), up.data(), static_cast<int64_t>(got.size()));
    double worst = 0;
    for (size_t i = 0; i < g.size(); ++i) {
      const double want = g[i] / (1.0 + std::exp(-static_cast<double>(g[i]))) * up[i];
      const double err = std::fabs(got[i] - want);
      if (g[i] < -87.0f) {  // silu(g) ~ g e^g < 1e-36: past e^-g's float range, both sides are ~0
        ASSERT_LE(err, 1e-35) << ks.name << " g=" << g[i];
        continue;
      }
      ASSERT_LE(err, 6e-7 * std::fabs(want)) << ks.name << " g=" << g[i];
      if (want != 0) worst = std::max(worst, err / std::fabs(want));
    }
    std::printf("[%s] silu_mul: worst relative error %.2e over %zu values\n", ks.name, worst, g.size());
    std::vector<float> nan = {std::nanf(""), 1.0f, std::nanf(""), -3.0f};
    nan.resize(40, 2.0f);
    nan[20] = std::nanf("");
    std::vector<float> ones(nan.size(), 1.0f);
    ks.silu_mul(nan.data(), ones.data(), static_cast<int64_t>(nan.size()));
    EXPECT_TRUE(std::isnan(nan[0]) && std::isnan(nan[2]) && std::isnan(nan[20])) << ks.name;
    EXPECT_FLOAT_EQ(nan[1], static_cast<float>(1.0 / (1.0 + std::exp(-1.0)))) << ks.name;
  }
}

// exp_sum in every variant: each e^(x - shift) and their sum against double
// precision, for rows of 1 to 70 values (tails that are not a whole vector);
// values far below the shift give ~0, NaN stays NaN.
TEST(CpuOps, ExpSumMatchesDoublePrecisionInEveryVariant) {
  std::mt19937 rng(12);
  std::uniform_real_distribution<float> uniform(-30.0f, 0.0f);
  for (KernelVariant v : variants()) {
    const KernelSet& ks = kernel_set(v);
    for (int64_t n = 1; n <= 70; ++n) {
      std::vector<float> x(static_cast<size_t>(n));
      for (float& e : x) e = uniform(rng) + 5.0f;
      x[0] = 5.0f;  // the shift: the row's maximum
      if (n > 3) x[3] = -200.0f;
      std::vector<float> got = x;
      const float sum = ks.exp_sum(got.data(), 5.0f, n);
      double want_sum = 0;
      for (int64_t i = 0; i < n; ++i) {
        const double want = std::exp(static_cast<double>(x[i]) - 5.0);
        want_sum += want;
        ASSERT_LE(std::fabs(got[i] - want), 3e-7 * want + 1e-37) << ks.name << " n=" << n << " x=" << x[i];
      }
      ASSERT_NEAR(sum, want_sum, 1e-6 * want_sum) << ks.name << " n=" << n;
    }
    std::vector<float> nan(20, 1.0f);
    nan[17] = std::nanf("");
    EXPECT_TRUE(std::isnan(ks.exp_sum(nan.data(), 1.0f, 20))) << ks.name;
    EXPECT_TRUE(std::isnan(nan[17])) << ks.name;
    EXPECT_FLOAT_EQ(nan[0], 1.0f) << ks.name;
  }
}

// Attention's loops in every variant. dot_rows against double precision,
// and a row's sum the same bits whatever the rows around it (groups of 4 or
// a partial group); weighted_sum the bits of axpy applied row by row.
TEST(CpuOps, AttentionRowKernelsInEveryVariant) {
  std::mt19937 rng(13);
  std::normal_distribution<float> normal;
  for (const int64_t n : {int64_t{64}, int64_t{128}, int64_t{72}, int64_t{70}}) {
    std::vector<float> q(static_cast<size_t>(n)), data(static_cast<size_t>(9 * n)), w(9);
    for (float& v : q) v = normal(rng);
    for (float& v : data) v = normal(rng);
    for (float& v : w) v = normal(rng);
    std::vector<const float*> rows(9);
    for (size_t i = 0; i < rows.size(); ++i) rows[i] = data.data() + i * static_cast<size_t>(n);
    for (KernelVariant v : variants()) {
      const KernelSet& ks = kernel_set(v);
      std::vector<float> all(9);
      ks.dot_rows(q.data(), rows.data(), 9, n, all.data());
      for (size_t i = 0; i < rows.size(); ++i) {
        double want = 0;
        for (int64_t c = 0; c < n; ++c) want += static_cast<double>(q[static_cast<size_t>(c)]) * rows[i][c];
        ASSERT_NEAR(all[i], want, 1e-5 * (1 + std::fabs(want))) << ks.name << " n=" << n << " row " << i;
        for (int64_t count : {int64_t{1}, int64_t{3}}) {  // the same row at the head of another group
          float one[3];
          ks.dot_rows(q.data(), rows.data() + i, std::min<int64_t>(count, 9 - static_cast<int64_t>(i)), n, one);
          ASSERT_EQ(0, std::memcmp(&one[0], &all[i], 4)) << ks.name << " n=" << n << " row " << i;
        }
      }
      for (int64_t n_rows : {int64_t{1}, int64_t{5}, int64_t{9}}) {
        std::vector<float> got(static_cast<size_t>(n)), want(static_cast<size_t>(n), 0.0f);
        ks.weighted_sum(w.data(), rows.data(), n_rows, n, got.data());
        for (int64_t i = 0; i < n_rows; ++i) ks.axpy(w[static_cast<size_t>(i)], rows[static_cast<size_t>(i)], want.data(), n);
        ASSERT_EQ(0, std::memcmp(got.data(), want.data(), got.size() * 4)) << ks.name << " n=" << n << " rows " << n_rows;
      }
      // Query heads that share a KV head: each gets, from the group kernels,
      // the bits the single kernels give it.
      for (const int64_t g : {int64_t{1}, int64_t{2}, int64_t{3}, int64_t{4}}) {
        std::vector<float> qs(static_cast<size_t>(g * n)), ws(static_cast<size_t>(g * 9));
        for (float& v : qs) v = normal(rng);
        for (float& v : ws) v = normal(rng);
        for (int64_t n_rows : {int64_t{1}, int64_t{6}, int64_t{9}}) {
          std::vector<float> scores(static_cast<size_t>(g * n_rows)), out(static_cast<size_t>(g * n));
          ks.dot_rows_group(qs.data(), g, rows.data(), n_rows, n, scores.data());
          ks.weighted_sum_group(ws.data(), g, rows.data(), n_rows, n, out.data());
          for (int64_t j = 0; j < g; ++j) {
            std::vector<float> one_scores(static_cast<size_t>(n_rows)), one_out(static_cast<size_t>(n));
            ks.dot_rows(qs.data() + j * n, rows.data(), n_rows, n, one_scores.data());
            ks.weighted_sum(ws.data() + j * n_rows, rows.data(), n_rows, n, one_out.data());
            ASSERT_EQ(0, std::memcmp(one_scores.data(), scores.data() + j * n_rows, one_scores.size() * 4))
                << ks.name << " n=" << n << " g=" << g << " query " << j << " rows " << n_rows;
            ASSERT_EQ(0, std::memcmp(one_out.data(), out.data() + j * n, one_out.size() * 4))
                << ks.name << " n=" << n << " g=" << g << " query " << j << " rows " << n_rows;
          }
        }
      }
    }
  }
}

// A group of matrices of one input (matmul_group: the rows of all of them
// dealt out in one pass of the pool, a Q8_0 input quantized once) gives each
// matrix the bits that its own matmul gives, in every variant, on every
// path, whatever the thread count; mixed formats and layouts included.
TEST(CpuMatmul, GroupGivesEachMatrixItsOwnResult) {
  std::mt19937 rng(777);
  ThreadPool pools[] = {ThreadPool(1), ThreadPool(2), ThreadPool(3)};
  const int64_t cols = 96;
  for (KernelVariant v : variants()) {
    const KernelSet& ks = kernel_set(v);
    const TestMatrix f16 = make_matrix(DType::F16, 45, cols, rng);
    const TestMatrix q8 = make_matrix(DType::Q8_0, 600, cols, rng);  // work for 3 threads at 1 token
    const TestMatrix q8_rows = make_matrix(DType::Q8_0, 24, cols, rng);
    const TestMatrix bf16 = make_matrix(DType::BF16, 5, cols, rng);
    PackedWeights storage;
    const WeightMatrix q8_packed = ks.q8_0_rows8 ? repack_q8_0_rows8(q8.view(), storage) : q8.view();
    const std::vector<WeightMatrix> matrices = {f16.view(), q8_packed, q8_rows.view(), bf16.view()};
    for (int64_t nt : {1, 3, 7}) {
      const std::vector<float> x = make_x(nt, cols, rng);
      for (MatmulPath path : {MatmulPath::Gemv, MatmulPath::Gemm, MatmulPath::Auto}) {
        std::vector<std::vector<float>> want(matrices.size());
        for (size_t i = 0; i < matrices.size(); ++i) {
          want[i].assign(static_cast<size_t>(nt * matrices[i].rows), 0.0f);
          matmul(ks, matrices[i], x.data(), nt, want[i].data(), pools[0], path);
        }
        for (ThreadPool& pool : pools) {
          std::vector<std::vector<float>> got(matrices.size());
          std::vector<MatmulProduct> group;
          for (size_t i = 0; i < matrices.size(); ++i) {
            got[i].assign(want[i].size(), std::nanf(""));
            group.push_back({&matrices[i], got[i].data()});
          }
          matmul_group(ks, group, x.data(), nt, pool, path);
          for (size_t i = 0; i < matrices.size(); ++i)
            ASSERT_EQ(0, std::memcmp(want[i].data(), got[i].data(), want[i].size() * 4))
                << ks.name << " matrix " << i << " tokens " << nt << " path " << static_cast<int>(path) << " threads "
                << pool.size();
        }
      }
    }
  }
  // Matrices of different input sizes cannot share an input.
  ThreadPool pool(2);
  const TestMatrix a = make_matrix(DType::F32, 4, 32, rng), b = make_matrix(DType::F32, 4, 64, rng);
  const WeightMatrix wa = a.view(), wb = b.view();
  std::vector<float> x(64), ya(4), yb(4);
  const std::vector<MatmulProduct> mixed = {{&wa, ya.data()}, {&wb, yb.data()}};
  EXPECT_THROW(matmul_group(mixed, x.data(), 1, pool), Error);
}

TEST(CpuMatmul, EmptyShapesAreNoOps) {
  ThreadPool pool(2);
  std::vector<float> y(4, 7.0f);
  const float x[32] = {};
  matmul(WeightMatrix{DType::F32, 0, 32, nullptr}, x, 1, y.data(), pool);
  matmul(WeightMatrix{DType::F32, 4, 32, x}, x, 0, y.data(), pool);
  EXPECT_EQ(y[0], 7.0f);
  // cols == 0: an empty sum is zero.
  const float dummy = 0.0f;
  matmul(WeightMatrix{DType::F16, 4, 0, &dummy}, &dummy, 1, y.data(), pool);
  EXPECT_EQ(y[3], 0.0f);
}

TEST(CpuMatmul, BadInputThrowsError) {
  ThreadPool pool(1);
  std::vector<float> x(64), y(64);
  std::vector<uint8_t> w(4096);
  EXPECT_THROW(matmul(WeightMatrix{DType::Q4_0, 2, 64, w.data()}, x.data(), 1, y.data(), pool), Error);
  EXPECT_THROW(matmul(WeightMatrix{DType::Q8_0, 2, 40, w.data()}, x.data(), 1, y.data(), pool), Error);
  EXPECT_THROW(matmul(WeightMatrix{DType::F16, 2, 32, nullptr}, x.data(), 1, y.data(), pool), Error);
  EXPECT_THROW(matmul(WeightMatrix{DType::F16, -1, 32, w.data()}, x.data(), 1, y.data(), pool), Error);
  EXPECT_THROW(matmul_ref(WeightMatrix{DType::Q4_K, 2, 256, w.data()}, x.data(), 1, y.data()), Error);
}

TEST(CpuFeatures, AgreeWithProcCpuinfo) {
  const CpuFeatures f = detect_cpu_features();
  EXPECT_FALSE(f.describe().empty());
  EXPECT_TRUE(!f.avx512 || f.avx2);
  EXPECT_TRUE(!(f.avx512_vnni || f.avx512_bf16) || f.avx512);
  const auto vs = variants();
  ASSERT_FALSE(vs.empty());
  EXPECT_EQ(vs.front(), KernelVariant::Generic);
  EXPECT_EQ(&best_kernel_set(), &kernel_set(vs.back()));
  FILE* file = std::fopen("/proc/cpuinfo", "r");
  if (file == nullptr) GTEST_SKIP() << "no /proc/cpuinfo";
  std::string flags;
  char line[8192];
  while (std::fgets(line, sizeof line, file)) {
    if (std::strncmp(line, "flags", 5) == 0) {
      flags = std::string(" ") + (std::strchr(line, ':') + 1);
      break;
    }
  }
  std::fclose(file);
  if (flags.empty()) GTEST_SKIP() << "no flags line in /proc/cpuinfo";
  for (char& c : flags)
    if (c == '\n') c = ' ';
  auto has = [&](const char* name) { return flags.find(std::string(" ") + name + " ") != std::string::npos; };
  // The kernel lists a flag only when the OS enables its state, as cpuid+xgetbv do.
  EXPECT_EQ(f.avx2, has("avx2") && has("fma") && has("f16c")) << flags;
  EXPECT_EQ(f.avx512, has("avx512f") && has("avx512bw") && has("avx512vl") && has("avx512dq") && f.avx2);
  EXPECT_EQ(f.avx512_vnni, f.avx512 && has("avx512_vnni"));
  EXPECT_EQ(f.avx512_bf16, f.avx512 && has("avx512_bf16"));
}

}  // namespace
}  // namespace tandem::cpu
