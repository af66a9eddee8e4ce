// Each CUDA kernel against its CPU twin (label gpu: runs on the GPU machine).
#include <cuda_fp8.h>
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <set>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "backends/cpu/cpu_kernels.h"
#include "backends/cpu/cpu_ops.h"
#include "backends/cuda/cuda_check.h"
#include "backends/cuda/device_buffer.h"
#include "backends/cuda/gemm.h"
#include "backends/cuda/kernels.h"
#include "common/half.h"
#include "engine/row_sampling.h"
#include "engine/sampler.h"

namespace tandem::cuda {
namespace {

std::vector<float> random_vector(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

// f16 bits of random_vector(n, seed): a KV cache's contents.
std::vector<uint16_t> random_f16(size_t n, uint32_t seed) {
  const std::vector<float> f = random_vector(n, seed);
  std::vector<uint16_t> h(n);
  for (size_t i = 0; i < n; ++i) h[i] = f32_to_f16(f[i]);
  return h;
}

template <typename T>
DeviceBuffer to_device(const std::vector<T>& v) {
  DeviceBuffer b(v.size() * sizeof(T));
  TANDEM_CUDA_CHECK(cudaMemcpy(b.get(), v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice));
  return b;
}

template <typename T>
std::vector<T> to_host(const DeviceBuffer& b, size_t n) {
  std::vector<T> v(n);
  TANDEM_CUDA_CHECK(cudaDeviceSynchronize());
  TANDEM_CUDA_CHECK(cudaMemcpy(v.data(), b.get(), n * sizeof(T), cudaMemcpyDeviceToHost));
  return v;
}

// A weight matrix in `dtype`, on the host (file layout) and on the device (engine layout).
struct TestMatrix {
  cpu::WeightMatrix host;
  std::vector<uint8_t> host_bytes;
  DeviceBuffer data, scales;
  DeviceMatrix device;
};

TestMatrix make_matrix(DType dtype, int64_t rows, int64_t cols, uint32_t seed) {
  TestMatrix m;
  const std::vector<float> f = random_vector(static_cast<size_t>(rows * cols), seed, 0.05f);
  if (dtype == DType::Q8_0) {
    std::vector<BlockQ8_0> blocks(static_cast<size_t>(rows * cols / 32));
    cpu::quantize_row_q8_0(f.data(), blocks.data(), rows * cols);
    m.host_bytes.resize(blocks.size() * sizeof(BlockQ8_0));
    std::memcpy(m.host_bytes.data(), blocks.data(), m.host_bytes.size());
    std::vector<int8_t> q(static_cast<size_t>(rows * cols));
    std::vector<uint16_t> d(blocks.size());
    for (size_t b = 0; b < blocks.size(); ++b) {
      d[b] = blocks[b].d;
      std::memcpy(q.data() + b * 32, blocks[b].qs, 32);
    }
    m.data = to_device(q);
    m.scales = to_device(d);
  } else {
    const size_t es = dtype == DType::F32 ? 4 : 2;
    m.host_bytes.resize(f.size() * es);
    for (size_t i = 0; i < f.size(); ++i) {
      if (dtype == DType::F32) {
        std::memcpy(m.host_bytes.data() + 4 * i, &f[i], 4);
      } else {
        const uint16_t h = dtype == DType::F16 ? f32_to_f16(f[i]) : f32_to_bf16(f[i]);
        std::memcpy(m.host_bytes.data() + 2 * i, &h, 2);
      }
    }
    m.data = to_device(m.host_bytes);
  }
  m.host = cpu::WeightMatrix{dtype, rows, cols, m.host_bytes.data()};
  m.device = DeviceMatrix{weight_format_of(dtype), rows, cols, m.data.get(), m.scales.get()};
  return m;
}

// A BF16 matrix quantized to int8 rows on the GPU (quantize_rows, as
// --quantize int8 loads it); the host copy holds those rows dequantized, f32.
TestMatrix make_int8_rows(int64_t rows, int64_t cols, uint32_t seed) {
  const TestMatrix bf = make_matrix(DType::BF16, rows, cols, seed);
  TestMatrix m;
  m.data = DeviceBuffer(static_cast<size_t>(rows * cols));
  m.scales = DeviceBuffer(static_cast<size_t>(rows) * 4);
  m.device = DeviceMatrix{WeightFormat::I8Row, rows, cols, m.data.get(), m.scales.get()};
  quantize_rows(bf.device, m.device, nullptr);
  const std::vector<int8_t> q = to_host<int8_t>(m.data, static_cast<size_t>(rows * cols));
  const std::vector<float> sc = to_host<float>(m.scales, static_cast<size_t>(rows));
  m.host_bytes.resize(q.size() * 4);
  for (size_t i = 0; i < q.size(); ++i) {
    const float v = static_cast<float>(q[i]) * sc[i / static_cast<size_t>(cols)];
    std::memcpy(m.host_bytes.data() + 4 * i, &v, 4);
  }
  m.host = cpu::WeightMatrix{DType::F32, rows, cols, m.host_bytes.data()};
  return m;
}

// x quantized on the GPU as the 8-bit GEMV takes it (q, d), and those
// values dequantized on the host (for cpu::matmul_ref).
struct QuantizedInput {
  DeviceBuffer q, d;
  std::vector<float> dequantized;
};
QuantizedInput quantize_on_gpu(const std::vector<float>& x, int64_t n_tokens, int64_t cols) {
  QuantizedInput in{DeviceBuffer(x.size()), DeviceBuffer(x.size() / 32 * 4), std::vector<float>(x.size())};
  DeviceBuffer dx = to_device(x);
  quantize_activations(dx.get<float>(), n_tokens, cols, in.q.get<int8_t>(), in.d.get<float>(), nullptr);
  const std::vector<int8_t> hq = to_host<int8_t>(in.q, x.size());
  const std::vector<float> hd = to_host<float>(in.d, x.size() / 32);
  for (size_t i = 0; i < x.size(); ++i) in.dequantized[i] = static_cast<float>(hq[i]) * hd[i / 32];
  return in;
}

class GemvTest : public ::testing::TestWithParam<DType> {};

TEST_P(GemvTest, MatchesCpuReferenceForEveryTokenCount) {
  // 203 rows: the last block of 4 rows is partial. 4608 columns: several
  // rounds of loads per thread plus a tail, in every format.
  const int64_t rows = 203, cols = 4608;
  TestMatrix w = make_matrix(GetParam(), rows, cols, 1);
  for (int64_t n : {1, 3, 8, 11}) {
    const std::vector<float> x = random_vector(static_cast<size_t>(n * cols), 2);
    std::vector<float> want(static_cast<size_t>(n * rows));
    cpu::matmul_ref(w.host, x.data(), n, want.data());
    DeviceBuffer dx = to_device(x), dy(want.size() * 4);
    gemv(w.device, dx.get<float>(), n, dy.get<float>(), rows, false, nullptr);
    const std::vector<float> got = to_host<float>(dy, want.size());
    for (size_t i = 0; i < want.size(); ++i) ASSERT_NEAR(got[i], want[i], 1e-4 + 1e-4 * std::fabs(want[i])) << i;
  }
}

TEST_P(GemvTest, IsBatchInvariantAndAccumulates) {
  const int64_t rows = 96, cols = 512;
  TestMatrix w = make_matrix(GetParam(), rows, cols, 3);
  const int64_t n = 13;
  const std::vector<float> x = random_vector(static_cast<size_t>(n * cols), 4);
  DeviceBuffer dx = to_device(x), dy(static_cast<size_t>(n * rows) * 4), d1(static_cast<size_t>(rows) * 4);
  gemv(w.device, dx.get<float>(), n, dy.get<float>(), rows, false, nullptr);
  const std::vector<float> all = to_host<float>(dy, static_cast<size_t>(n * rows));
  for (int64_t t = 0; t < n; ++t) {
    gemv(w.device, dx.get<float>() + t * cols, 1, d1.get<float>(), rows, false, nullptr);
    const std::vector<float> one = to_host<float>(d1, static_cast<size_t>(rows));
    ASSERT_EQ(0, std::memcmp(one.data(), all.data() + t * rows, static_cast<size_t>(rows) * 4)) << "token " << t;
  }
  // Into a column slice of a wider buffer (ldy > rows): same bits.
  const int64_t ldy = rows + 40;
  DeviceBuffer wide(static_cast<size_t>(n * ldy) * 4);
  gemv(w.device, dx.get<float>(), n, wide.get<float>() + 17, ldy, false, nullptr);
  const std::vector<float> w_all = to_host<float>(wide, static_cast<size_t>(n * ldy));
  for (int64_t t = 0; t < n; ++t)
    ASSERT_EQ(0, std::memcmp(w_all.data() + t * ldy + 17, all.data() + t * rows, static_cast<size_t>(rows) * 4));
  // accumulate: y += W x
  gemv(w.device, dx.get<float>(), n, dy.get<float>(), rows, true, nullptr);
  const std::vector<float> twice = to_host<float>(dy, static_cast<size_t>(n * rows));
  for (size_t i = 0; i < twice.size(); ++i) ASSERT_FLOAT_EQ(twice[i], 2 * all[i]);
}

TEST_P(GemvTest, FusedSiluMulEqualsSiluMulThenGemv) {
  const int64_t rows = 72, cols = 768;
  TestMatrix w = make_matrix(GetParam(), rows, cols, 7);
  for (int64_t n : {1, 5, 8, 10}) {
    const std::vector<float> gu = random_vector(static_cast<size_t>(n * 2 * cols), 8);
    DeviceBuffer dgu = to_device(gu), dact(static_cast<size_t>(n * cols) * 4);
    DeviceBuffer fused(static_cast<size_t>(n * rows) * 4), apart(static_cast<size_t>(n * rows) * 4);
    silu_mul(dgu.get<float>(), n, cols, dact.get<float>(), nullptr);
    gemv(w.device, dact.get<float>(), n, apart.get<float>(), rows, false, nullptr);
    gemv_silu_mul(w.device, dgu.get<float>(), n, fused.get<float>(), rows, false, nullptr);
    const std::vector<float> a = to_host<float>(apart, static_cast<size_t>(n * rows));
    const std::vector<float> f = to_host<float>(fused, static_cast<size_t>(n * rows));
    ASSERT_EQ(0, std::memcmp(a.data(), f.data(), a.size() * 4)) << n << " tokens";
    // Against the CPU: silu(gate) * up, then W x.
    std::vector<float> act(static_cast<size_t>(n * cols)), want(static_cast<size_t>(n * rows));
    for (int64_t t = 0; t < n; ++t) {
      std::copy_n(gu.data() + t * 2 * cols, cols, act.data() + t * cols);
      cpu::silu_mul(act.data() + t * cols, gu.data() + t * 2 * cols + cols, cols);
    }
    cpu::matmul_ref(w.host, act.data(), n, want.data());
    for (size_t i = 0; i < want.size(); ++i) ASSERT_NEAR(f[i], want[i], 2e-4 + 2e-4 * std::fabs(want[i])) << i;
    // Accumulating into y.
    gemv_silu_mul(w.device, dgu.get<float>(), n, fused.get<float>(), rows, true, nullptr);
    const std::vector<float> twice = to_host<float>(fused, static_cast<size_t>(n * rows));
    for (size_t i = 0; i < twice.size(); ++i) ASSERT_FLOAT_EQ(twice[i], 2 * f[i]);
  }
}

TEST_P(GemvTest, GemmMatchesCpuReference) {
  const int64_t rows = 256, cols = 512, n = 37;
  TestMatrix w = make_matrix(GetParam(), rows, cols, 5);
  const std::vector<float> x = random_vector(static_cast<size_t>(n * cols), 6);
  std::vector<float> want(static_cast<size_t>(n * rows));
  cpu::matmul_ref(w.host, x.data(), n, want.data());
  cudaStream_t stream;
  TANDEM_CUDA_CHECK(cudaStreamCreate(&stream));
  {
    Gemm gemm(stream);
    DeviceBuffer dx = to_device(x), dy(want.size() * 4);
    gemm.run(w.device, dx.get<float>(), n, dy.get<float>(), rows, false);
    const std::vector<float> got = to_host<float>(dy, want.size());
    // x is rounded to the weights' 16-bit type before the tensor-core GEMM.
    const double tol = GetParam() == DType::F32 ? 1e-4 : GetParam() == DType::BF16 ? 3e-2 : 4e-3;
    double max_err = 0;
    for (size_t i = 0; i < want.size(); ++i) max_err = std::max(max_err, std::fabs(double(got[i]) - want[i]));
    EXPECT_LT(max_err, tol);
  }
  cudaStreamDestroy(stream);
}

// Tuned GEMMs (Gemm::tune, cuBLASLt's algorithms) against the CPU reference
// and against cuBLAS's default, at token counts inside and between the
// buckets, accumulating and into a wider y; a y the tuned algorithms may not
// take (misaligned) falls back to cuBLAS's default.
TEST_P(GemvTest, TunedGemmMatchesCpuReference) {
  if (GetParam() != DType::F16 && GetParam() != DType::BF16) GTEST_SKIP() << "tuning is for 16-bit weights";
  const int64_t rows = 384, cols = 512;
  std::vector<TestMatrix> layers;
  for (uint32_t i = 0; i < 3; ++i) layers.push_back(make_matrix(GetParam(), rows, cols, 20 + i));
  std::vector<const DeviceMatrix*> weights;
  for (const TestMatrix& m : layers) weights.push_back(&m.device);
  const int64_t most = 300, ldy = rows + 4;
  const std::vector<float> x = random_vector(static_cast<size_t>(most * cols), 7);
  const std::vector<float> y0 = random_vector(static_cast<size_t>(most * ldy), 8);
  cudaStream_t stream;
  TANDEM_CUDA_CHECK(cudaStreamCreate(&stream));
  {
    Gemm tuned(stream), plain(stream);
    const auto buckets = tuned.tune(weights, most, /*prefer_lt=*/true);
    ASSERT_FALSE(buckets.empty());
    EXPECT_GE(buckets.back().tokens, most);
    int lt_buckets = 0;
    for (const auto& b : buckets) {
      EXPECT_GT(b.default_us, 0.0);
      EXPECT_GT(b.best_us, 0.0);
      lt_buckets += b.algo >= 0;
    }
    EXPECT_GT(lt_buckets, 0) << "cuBLASLt offered no algorithm: the tuned path did not run";
    const double tol = GetParam() == DType::BF16 ? 3e-2 : 4e-3;
    DeviceBuffer dx = to_device(x);
    for (int64_t n : {1, 3, 5, 6, 7, 8, 13, 32, 33, 100, 257, 300}) {
      for (bool accumulate : {false, true}) {
        for (int64_t offset : {int64_t{0}, int64_t{1}}) {  // 1: y shifted by one float, misaligned
          const TestMatrix& w = layers[static_cast<size_t>(n % 3)];
          std::vector<float> want(static_cast<size_t>(n * rows));
          cpu::matmul_ref(w.host, x.data(), n, want.data());
          DeviceBuffer dy = to_device(y0), dy_plain = to_device(y0);
          tuned.run(w.device, dx.get<float>(), n, dy.get<float>() + offset, ldy, accumulate);
          plain.run(w.device, dx.get<float>(), n, dy_plain.get<float>() + offset, ldy, accumulate);
          const std::vector<float> got = to_host<float>(dy, y0.size()), ref = to_host<float>(dy_plain, y0.size());
          double max_err = 0, max_vs_default = 0;
          for (int64_t t = 0; t < n; ++t) {
            for (int64_t r = 0; r < ldy; ++r) {
              const size_t i = static_cast<size_t>(t * ldy + r + offset);
              if (i >= got.size()) continue;
              if (r >= rows) {  // past the matrix's rows: untouched
                ASSERT_EQ(got[i], y0[i]) << "n " << n << " row " << r;
                continue;
              }
              const double expect = want[static_cast<size_t>(t * rows + r)] + (accumulate ? y0[i] : 0.0f);
              max_err = std::max(max_err, std::fabs(double(got[i]) - expect));
              max_vs_default = std::max(max_vs_default, std::fabs(double(got[i]) - double(ref[i])));
            }
          }
          EXPECT_LT(max_err, tol) << "n " << n << " accumulate " << accumulate << " offset " << offset;
          // Another algorithm sums in another order: rounding only.
          EXPECT_LT(max_vs_default, 1e-3) << "n " << n << " accumulate " << accumulate << " offset " << offset;
        }
      }
    }
    // Below Gemm::kTunedFrom tokens products take cuBLAS's default; forced
    // through the 8-token bucket's algorithm instead, they are right too.
    tuned.set_tuned_from(1);
    for (int64_t n : {1, 2, 3, 4}) {
      const TestMatrix& w = layers[0];
      std::vector<float> want(static_cast<size_t>(n * rows));
      cpu::matmul_ref(w.host, x.data(), n, want.data());
      DeviceBuffer dy = to_device(y0);
      tuned.run(w.device, dx.get<float>(), n, dy.get<float>(), rows, false);
      const std::vector<float> got = to_host<float>(dy, static_cast<size_t>(n * rows));
      double max_err = 0;
      int64_t non_finite = 0;
      for (size_t i = 0; i < got.size(); ++i) {
        non_finite += std::isfinite(got[i]) ? 0 : 1;
        max_err = std::max(max_err, std::fabs(double(got[i]) - want[i]));
      }
      EXPECT_EQ(non_finite, 0) << "forced 8-token algorithm at " << n << " tokens";
      EXPECT_LT(max_err, tol) << "forced 8-token algorithm at " << n << " tokens";
    }
  }
  cudaStreamDestroy(stream);
}

INSTANTIATE_TEST_SUITE_P(Dtypes, GemvTest, ::testing::Values(DType::F32, DType::F16, DType::BF16, DType::Q8_0),
                         [](const auto& info) { return std::string(dtype_name(info.param)); });

// E4M3 (bias 7, 3 mantissa bits, no infinities) to float.
float e4m3_to_float(uint8_t v) {
  const int sign = v >> 7, exp = (v >> 3) & 15, mant = v & 7;
  float x = exp == 0 ? std::ldexp(mant / 8.0f, -6) : std::ldexp(1.0f + mant / 8.0f, exp - 7);
  return sign ? -x : x;
}

class QuantizeTest : public ::testing::TestWithParam<WeightFormat> {};

// quantize_rows against a CPU rounding of the same rows, then the 8-bit GEMV
// and GEMM against matmul_ref on the dequantized weights.
TEST_P(QuantizeTest, RowsRoundAsTheCpuDoesAndMatmulsMatch) {
  const WeightFormat format = GetParam();
  const int64_t rows = 96, cols = 512, n = 5;
  TestMatrix src = make_matrix(DType::BF16, rows, cols, 21);
  DeviceBuffer q(static_cast<size_t>(rows * cols)), scales(static_cast<size_t>(rows) * 4);
  const DeviceMatrix dst{format, rows, cols, q.get(), scales.get()};
  quantize_rows(src.device, dst, nullptr);
  const std::vector<uint8_t> q_host = to_host<uint8_t>(q, static_cast<size_t>(rows * cols));
  const std::vector<float> s_host = to_host<float>(scales, static_cast<size_t>(rows));

  std::vector<float> w(static_cast<size_t>(rows * cols)), dq(w.size());
  cpu::dequantize_row(DType::BF16, src.host_bytes.data(), w.data(), rows * cols);
  int64_t off_by_one = 0;
  for (int64_t r = 0; r < rows; ++r) {
    float m = 0;
    for (int64_t c = 0; c < cols; ++c) m = std::max(m, std::fabs(w[static_cast<size_t>(r * cols + c)]));
    const float scale = m / (format == WeightFormat::I8Row ? 127.0f : 448.0f);
    ASSERT_NEAR(s_host[static_cast<size_t>(r)], scale, 1e-6f * scale);
    for (int64_t c = 0; c < cols; ++c) {
      const size_t i = static_cast<size_t>(r * cols + c);
      if (format == WeightFormat::I8Row) {
        const int want = static_cast<int>(std::nearbyint(w[i] / scale));
        const int got = static_cast<int8_t>(q_host[i]);
        ASSERT_LE(std::abs(got - want), 1) << r << "," << c;  // a fast reciprocal may tip an exact half
        off_by_one += got != want;
        dq[i] = static_cast<float>(got) * s_host[static_cast<size_t>(r)];
      } else {
        dq[i] = e4m3_to_float(q_host[i]) * s_host[static_cast<size_t>(r)];
        // E4M3 keeps 3 mantissa bits: half a step is 1/16 of the value (or 2^-10 of the scale near 0).
        ASSERT_LE(std::fabs(dq[i] - w[i]), std::fabs(w[i]) / 16 + scale * std::ldexp(1.0f, -10) + 1e-12f) << r << "," << c;
      }
    }
  }
  EXPECT_LE(off_by_one, rows * cols / 1000);

  const std::vector<float> x = random_vector(static_cast<size_t>(n * cols), 22);
  std::vector<float> want(static_cast<size_t>(n * rows));
  const cpu::WeightMatrix ref{DType::F32, rows, cols, dq.data()};
  cpu::matmul_ref(ref, x.data(), n, want.data());
  DeviceBuffer dx = to_device(x), dy(want.size() * 4);
  gemv(dst, dx.get<float>(), n, dy.get<float>(), rows, false, nullptr);
  std::vector<float> got = to_host<float>(dy, want.size());
  for (size_t i = 0; i < want.size(); ++i) ASSERT_NEAR(got[i], want[i], 1e-4 + 1e-4 * std::fabs(want[i])) << i;
  cudaStream_t stream;
  TANDEM_CUDA_CHECK(cudaStreamCreate(&stream));
  {
    // The dequantizing path (FP8 tensor cores off: they round x to E4M3 too,
    // checked in Fp8GemmMatchesCpuOnQuantizedActivations).
    Gemm gemm(stream, false);
    gemm.run(dst, dx.get<float>(), n, dy.get<float>(), rows, false);
    got = to_host<float>(dy, want.size());
    double max_err = 0;
    for (size_t i = 0; i < want.size(); ++i) max_err = std::max(max_err, std::fabs(double(got[i]) - want[i]));
    EXPECT_LT(max_err, 4e-3);  // f16 dequantized weights and activations
  }
  cudaStreamDestroy(stream);
}

// The 8-bit GEMV on quantized activations. The quants and scales are the
// CPU's rounding (cpu::quantize_row_q8_0 keeps d as f16; here it is f32);
// the products against matmul_ref on the dequantized x; batch invariance;
// the fused silu(gate) * up input; Q8_0 and int8-row weights.
// Widths: 4608 columns (288 vectors of 16 bytes: the two-slot kernel at
// every token count), 4096 and 3200 (256 and 200 vectors: one token takes
// the one-slot kernel, and the token-by-token check below holds it to the
// bits of the two-slot kernel's batches).
void check_gemv_8bit(int64_t cols) {
  const int64_t rows = 203;
  TestMatrix q8 = make_matrix(DType::Q8_0, rows, cols, 31);
  TestMatrix i8 = make_int8_rows(rows, cols, 32);

  for (int64_t n : {1, 3, 8, 11}) {
    const std::vector<float> x = random_vector(static_cast<size_t>(n * cols), 33);
    // CPU quantization of x, 32 values at a time.
    std::vector<int8_t> want_q(x.size());
    std::vector<float> want_d(x.size() / 32), xdq(x.size());
    for (size_t b = 0; b < want_d.size(); ++b) {
      float amax = 0;
      for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(x[b * 32 + j]));
      const float d = amax / 127.0f, id = d != 0 ? 1.0f / d : 0.0f;
      want_d[b] = d;
      for (int j = 0; j < 32; ++j) {
        want_q[b * 32 + j] = static_cast<int8_t>(std::lround(x[b * 32 + j] * id));
        xdq[b * 32 + j] = static_cast<float>(want_q[b * 32 + j]) * d;
      }
    }
    DeviceBuffer dx = to_device(x), dq(x.size()), dd(want_d.size() * 4);
    quantize_activations(dx.get<float>(), n, cols, dq.get<int8_t>(), dd.get<float>(), nullptr);
    const std::vector<int8_t> got_q = to_host<int8_t>(dq, x.size());
    const std::vector<float> got_d = to_host<float>(dd, want_d.size());
    ASSERT_EQ(got_q, want_q) << n << " tokens";
    ASSERT_EQ(got_d, want_d) << n << " tokens";

    for (const auto& [w, ref] : {std::pair<const DeviceMatrix*, const cpu::WeightMatrix*>{&q8.device, &q8.host},
                                 std::pair<const DeviceMatrix*, const cpu::WeightMatrix*>{&i8.device, &i8.host}}) {
      std::vector<float> want(static_cast<size_t>(n * rows));
      cpu::matmul_ref(*ref, xdq.data(), n, want.data());
      DeviceBuffer dy(want.size() * 4), d1(static_cast<size_t>(rows) * 4);
      gemv_q8(*w, dq.get<int8_t>(), dd.get<float>(), n, dy.get<float>(), rows, false, nullptr);
      const std::vector<float> got = to_host<float>(dy, want.size());
      for (size_t i = 0; i < want.size(); ++i)
        ASSERT_NEAR(got[i], want[i], 1e-4 + 1e-4 * std::fabs(want[i])) << weight_format_name(w->format) << " " << i;
      // Token by token: the same bits.
      for (int64_t t = 0; t < n; ++t) {
        gemv_q8(*w, dq.get<int8_t>() + t * cols, dd.get<float>() + t * (cols / 32), 1, d1.get<float>(), rows, false,
                nullptr);
        const std::vector<float> one = to_host<float>(d1, static_cast<size_t>(rows));
        ASSERT_EQ(0, std::memcmp(one.data(), got.data() + t * rows, static_cast<size_t>(rows) * 4)) << "token " << t;
      }
      // Accumulating.
      gemv_q8(*w, dq.get<int8_t>(), dd.get<float>(), n, dy.get<float>(), rows, true, nullptr);
      const std::vector<float> twice = to_host<float>(dy, want.size());
      for (size_t i = 0; i < twice.size(); ++i) ASSERT_FLOAT_EQ(twice[i], 2 * got[i]);
    }

    // silu(gate) * up quantized directly: the bits of silu_mul then quantize.
    const std::vector<float> gu = random_vector(static_cast<size_t>(n * 2 * cols), 34);
    DeviceBuffer dgu = to_device(gu), act(static_cast<size_t>(n * cols) * 4), q1(x.size()), d1(want_d.size() * 4),
        q2(x.size()), d2(want_d.size() * 4);
    silu_mul(dgu.get<float>(), n, cols, act.get<float>(), nullptr);
    quantize_activations(act.get<float>(), n, cols, q1.get<int8_t>(), d1.get<float>(), nullptr);
    quantize_silu_mul(dgu.get<float>(), n, cols, q2.get<int8_t>(), d2.get<float>(), nullptr);
    ASSERT_EQ(to_host<int8_t>(q1, x.size()), to_host<int8_t>(q2, x.size()));
    ASSERT_EQ(to_host<float>(d1, want_d.size()), to_host<float>(d2, want_d.size()));
  }
}

TEST(CudaKernels, Gemv8BitOnQuantizedActivationsMatchesCpu) {
  for (const int64_t cols : {int64_t{4608}, int64_t{4096}, int64_t{3200}}) {
    SCOPED_TRACE(std::to_string(cols) + " columns");
    check_gemv_8bit(cols);
    if (::testing::Test::HasFatalFailure()) return;
  }
}

// At one token, rows of at most 4096 columns take one vector a thread (at
// 256 columns most threads hold none) over more blocks than the GPU holds at
// once: a token's sums have the same bits alone as in a group of three
// tokens (the other kernel) and match the CPU, accumulation included.
TEST(CudaKernels, Gemv8BitOneTokenOverManyBlocksMatchesCpu) {
  int device = 0, sms = 0;
  ASSERT_EQ(cudaGetDevice(&device), cudaSuccess);
  ASSERT_EQ(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device), cudaSuccess);
  const int64_t n = 3;
  // Rows for three waves of int8's 8-row blocks at three blocks an SM (about
  // six of Q8_0's 4-row blocks), the last block partial.
  const int64_t rows_many = 8 * 3 * int64_t{sms} * 3 - 5;
  // And 1.3 waves of 8-row blocks, which int8 takes in 16-row blocks at two
  // blocks an SM (one wave), the last block partial.
  const int64_t rows_short = 8 * 3 * int64_t{sms} * 13 / 10 - 3;
  for (const auto& [rows, cols] : {std::pair<int64_t, int64_t>{rows_many, 256},
                                   std::pair<int64_t, int64_t>{rows_many, 4096},
                                   std::pair<int64_t, int64_t>{rows_short, 4096}}) {
    SCOPED_TRACE(std::to_string(rows) + " x " + std::to_string(cols));
    TestMatrix q8 = make_matrix(DType::Q8_0, rows, cols, 61);
    TestMatrix i8 = make_int8_rows(rows, cols, 62);
    const QuantizedInput in = quantize_on_gpu(random_vector(static_cast<size_t>(n * cols), 63), n, cols);
    const std::vector<float>& xdq = in.dequantized;
    const DeviceBuffer &dq = in.q, &dd = in.d;
    for (const auto& [w, ref] : {std::pair<const DeviceMatrix*, const cpu::WeightMatrix*>{&q8.device, &q8.host},
                                 std::pair<const DeviceMatrix*, const cpu::WeightMatrix*>{&i8.device, &i8.host}}) {
      SCOPED_TRACE(weight_format_name(w->format));
      std::vector<float> want(static_cast<size_t>(n * rows));
      cpu::matmul_ref(*ref, xdq.data(), n, want.data());
      DeviceBuffer dy(want.size() * 4), d1(static_cast<size_t>(rows) * 4);
      gemv_q8(*w, dq.get<int8_t>(), dd.get<float>(), n, dy.get<float>(), rows, false, nullptr);
      const std::vector<float> group = to_host<float>(dy, want.size());
      for (int64_t t = 0; t < n; ++t) {
        gemv_q8(*w, dq.get<int8_t>() + t * cols, dd.get<float>() + t * (cols / 32), 1, d1.get<float>(), rows, false,
                nullptr);
        const std::vector<float> one = to_host<float>(d1, static_cast<size_t>(rows));
        for (int64_t r = 0; r < rows; ++r) {
          const float want_r = want[static_cast<size_t>(t * rows + r)];
          ASSERT_NEAR(one[static_cast<size_t>(r)], want_r, 1e-4 + 1e-4 * std::fabs(want_r)) << "token " << t << " row " << r;
        }
        ASSERT_EQ(0, std::memcmp(one.data(), group.data() + t * rows, static_cast<size_t>(rows) * 4)) << "token " << t;
        gemv_q8(*w, dq.get<int8_t>() + t * cols, dd.get<float>() + t * (cols / 32), 1, d1.get<float>(), rows, true,
                nullptr);
        const std::vector<float> twice = to_host<float>(d1, static_cast<size_t>(rows));
        for (int64_t r = 0; r < rows; ++r)
          ASSERT_FLOAT_EQ(twice[static_cast<size_t>(r)], 2 * one[static_cast<size_t>(r)]) << "token " << t << " row " << r;
      }
    }
  }
}

// Gemm::warm runs every token count a step may give a matrix (each up to
// 64, then every 16th, and the largest), with and without accumulation, and
// leaves the products as they were.
TEST(CudaKernels, GemmWarmRunsEveryStepCount) {
  std::vector<int64_t> want;
  for (int64_t n = 1; n <= 64; ++n) want.push_back(n);
  for (int64_t n : {80, 96, 100}) want.push_back(n);
  EXPECT_EQ(Gemm::warm_counts(100), want);
  EXPECT_EQ(Gemm::warm_counts(64).back(), 64);
  EXPECT_EQ(Gemm::warm_counts(80).size(), 65u);
  EXPECT_TRUE(Gemm::warm_counts(0).empty());

  const int64_t rows = 256, cols = 512, n = 37;
  TestMatrix w = make_matrix(DType::F16, rows, cols, 31);
  const std::vector<float> x = random_vector(static_cast<size_t>(n * cols), 32);
  cudaStream_t stream;
  TANDEM_CUDA_CHECK(cudaStreamCreate(&stream));
  {
    Gemm gemm(stream);
    DeviceBuffer dx = to_device(x), before(static_cast<size_t>(n * rows) * 4), after(before.bytes());
    gemm.run(w.device, dx.get<float>(), n, before.get<float>(), rows, false);
    EXPECT_EQ(gemm.warm(w.device, 100), 2 * static_cast<int64_t>(want.size()));
    gemm.run(w.device, dx.get<float>(), n, after.get<float>(), rows, false);
    const std::vector<float> a = to_host<float>(before, static_cast<size_t>(n * rows));
    const std::vector<float> b = to_host<float>(after, static_cast<size_t>(n * rows));
    EXPECT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * 4));
  }
  cudaStreamDestroy(stream);
}

// The int8 tensor-core GEMM for decode batches: the GEMV's product on the
// same quantized x (against matmul_ref on the dequantized x and against
// gemv_q8), for rows and token counts that fill no tile evenly (odd token
// tiles on two sets of warps included), passes of 64 tokens, columns split
// among many blocks (filling this GPU's SMs), among two with many chunks
// each (filling one SM), or not at all, with many chunks or one, the last
// chunk partial (146 or 2 blocks of 32), an output stride wider than the
// rows, and accumulation. A token's result has the same bits whatever the
// batch around it.
TEST(CudaKernels, Gemm8BitOnTensorCoresMatchesCpu) {
  int device = 0;
  ASSERT_EQ(cudaGetDevice(&device), cudaSuccess);
  if (!gemm_q8_init(device)) GTEST_SKIP() << "int8 tensor cores need sm_80 or later";
  int device_sms = 0;
  ASSERT_EQ(cudaDeviceGetAttribute(&device_sms, cudaDevAttrMultiProcessorCount, device), cudaSuccess);
  struct Shape {
    int64_t rows, cols;
    int sm_count;  // SMs the split is planned for
    bool split;    // whether the columns split among blocks
  };
  const Shape shapes[] = {{203, 4672, device_sms, device_sms > 1},
                          {203, 4672, 1, true},
                          {300, 4672, 1, false},
                          {203, 64, device_sms, false}};
  for (const auto& [rows, cols, sm_count, split] : shapes) {
    const int splits = gemm_q8_splits(rows, cols, sm_count);
    EXPECT_EQ(splits > 1, split) << rows << " x " << cols << ", " << sm_count << " SMs: " << splits << " splits";
    DeviceBuffer ws(static_cast<size_t>(std::max<int64_t>(1, gemm_q8_workspace_floats(rows, cols, sm_count))) * 4);
    TestMatrix q8 = make_matrix(DType::Q8_0, rows, cols, 41);
    TestMatrix i8 = make_int8_rows(rows, cols, 42);

    const int64_t n_max = 70;
    const std::vector<float> x = random_vector(static_cast<size_t>(n_max * cols), 43);
    const QuantizedInput in = quantize_on_gpu(x, n_max, cols);
    const std::vector<float>& xdq = in.dequantized;
    const DeviceBuffer &dq = in.q, &dd = in.d;

    for (const auto& [w, ref] : {std::pair<const DeviceMatrix*, const cpu::WeightMatrix*>{&q8.device, &q8.host},
                                 std::pair<const DeviceMatrix*, const cpu::WeightMatrix*>{&i8.device, &i8.host}}) {
      std::vector<float> want(static_cast<size_t>(n_max * rows));
      cpu::matmul_ref(*ref, xdq.data(), n_max, want.data());
      DeviceBuffer dy(want.size() * 4), dg(want.size() * 4), d1(static_cast<size_t>(rows) * 4);
      const std::string what =
          std::string(weight_format_name(w->format)) + " cols " + std::to_string(cols) + " splits " + std::to_string(splits);
      gemv_q8(*w, dq.get<int8_t>(), dd.get<float>(), n_max, dg.get<float>(), rows, false, nullptr);
      const std::vector<float> by_gemv = to_host<float>(dg, want.size());
      gemm_q8(*w, dq.get<int8_t>(), dd.get<float>(), n_max, dy.get<float>(), rows, false, sm_count, ws.get<float>(),
              nullptr);
      const std::vector<float> all = to_host<float>(dy, want.size());
      for (size_t i = 0; i < want.size(); ++i) {
        ASSERT_NEAR(all[i], want[i], 1e-4 + 1e-4 * std::fabs(want[i])) << what << " " << i;
        ASSERT_NEAR(all[i], by_gemv[i], 1e-5 + 1e-5 * std::fabs(want[i])) << what << " " << i;
      }
      // Any batch around a token: the same bits.
      for (const int64_t n : {int64_t{5}, int64_t{13}, int64_t{21}, int64_t{45}, int64_t{64}}) {
        gemm_q8(*w, dq.get<int8_t>(), dd.get<float>(), n, dy.get<float>(), rows, false, sm_count, ws.get<float>(),
                nullptr);
        const std::vector<float> got = to_host<float>(dy, static_cast<size_t>(n * rows));
        ASSERT_EQ(0, std::memcmp(got.data(), all.data(), got.size() * 4)) << what << ", " << n << " tokens";
      }
      for (const int64_t t : {int64_t{0}, int64_t{37}, int64_t{69}}) {
        gemm_q8(*w, dq.get<int8_t>() + t * cols, dd.get<float>() + t * (cols / 32), 1, d1.get<float>(), rows, false,
                sm_count, ws.get<float>(), nullptr);
        const std::vector<float> one = to_host<float>(d1, static_cast<size_t>(rows));
        ASSERT_EQ(0, std::memcmp(one.data(), all.data() + t * rows, static_cast<size_t>(rows) * 4)) << what << " token " << t;
      }
      // Into rows of a wider output.
      {
        const int64_t ldy = rows + 5;
        DeviceBuffer wide(static_cast<size_t>(n_max * ldy) * 4);
        TANDEM_CUDA_CHECK(cudaMemset(wide.get(), 0xff, wide.bytes()));  // the columns past rows must keep these bits
        gemm_q8(*w, dq.get<int8_t>(), dd.get<float>(), n_max, wide.get<float>(), ldy, false, sm_count, ws.get<float>(),
                nullptr);
        const std::vector<uint32_t> got = to_host<uint32_t>(wide, static_cast<size_t>(n_max * ldy));
        for (int64_t t = 0; t < n_max; ++t) {
          ASSERT_EQ(0, std::memcmp(got.data() + t * ldy, all.data() + t * rows, static_cast<size_t>(rows) * 4))
              << what << " token " << t << " with a stride of " << ldy;
          for (int64_t c = rows; c < ldy; ++c)
            ASSERT_EQ(got[static_cast<size_t>(t * ldy + c)], 0xffffffffu) << what << " token " << t << ": past the rows";
        }
      }
      // Accumulating.
      ASSERT_EQ(cudaMemcpy(dy.get(), all.data(), all.size() * 4, cudaMemcpyHostToDevice), cudaSuccess);
      gemm_q8(*w, dq.get<int8_t>(), dd.get<float>(), n_max, dy.get<float>(), rows, true, sm_count, ws.get<float>(),
              nullptr);
      const std::vector<float> twice = to_host<float>(dy, want.size());
      for (size_t i = 0; i < twice.size(); ++i) ASSERT_FLOAT_EQ(twice[i], 2 * all[i]) << what << " " << i;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Formats, QuantizeTest, ::testing::Values(WeightFormat::I8Row, WeightFormat::F8Row),
                         [](const auto& info) { return std::string(weight_format_name(info.param)); });

TEST(CudaKernels, RmsnormSiluAndEmbedMatchCpu) {
  const int64_t rows = 5, n = 4096;
  const std::vector<float> x = random_vector(static_cast<size_t>(rows * n), 7);
  const std::vector<float> weight = random_vector(static_cast<size_t>(n), 8);
  std::vector<float> want(x.size());
  for (int64_t r = 0; r < rows; ++r) cpu::rmsnorm(x.data() + r * n, weight.data(), 1e-6f, want.data() + r * n, n);
  DeviceBuffer dx = to_device(x), dw = to_device(weight), dy(x.size() * 4);
  rmsnorm(dx.get<float>(), nullptr, dw.get<float>(), 1e-6f, rows, n, dy.get<float>(), nullptr);
  std::vector<float> got = to_host<float>(dy, x.size());
  for (size_t i = 0; i < x.size(); ++i) ASSERT_NEAR(got[i], want[i], 1e-4 * (1 + std::fabs(want[i])));
  // Gathered rows.
  const std::vector<int32_t> pick = {3, 0};
  DeviceBuffer dp = to_device(pick);
  rmsnorm(dx.get<float>(), dp.get<int32_t>(), dw.get<float>(), 1e-6f, 2, n, dy.get<float>(), nullptr);
  got = to_host<float>(dy, static_cast<size_t>(2 * n));
  for (int64_t i = 0; i < n; ++i) ASSERT_NEAR(got[i], want[3 * n + i], 1e-4 * (1 + std::fabs(want[3 * n + i])));
  // Other widths: whole and partial float4 pieces per thread (896, 1000,
  // 8192), and the scalar path (n not a multiple of 4; n past 8192).
  for (int64_t width : {896, 1000, 8192, 1002, 9000}) {
    const std::vector<float> xw = random_vector(static_cast<size_t>(2 * width), 10);
    const std::vector<float> ww = random_vector(static_cast<size_t>(width), 11);
    std::vector<float> ref(xw.size());
    for (int64_t r = 0; r < 2; ++r) cpu::rmsnorm(xw.data() + r * width, ww.data(), 1e-6f, ref.data() + r * width, width);
    DeviceBuffer dxw = to_device(xw), dww = to_device(ww), dyw(xw.size() * 4);
    rmsnorm(dxw.get<float>(), nullptr, dww.get<float>(), 1e-6f, 2, width, dyw.get<float>(), nullptr);
    const std::vector<float> gw = to_host<float>(dyw, xw.size());
    for (size_t i = 0; i < gw.size(); ++i) ASSERT_NEAR(gw[i], ref[i], 1e-4 * (1 + std::fabs(ref[i]))) << width;
  }

  // The norm that also quantizes its first rows for the 8-bit GEMV: the same
  // f32 rows, and the bits of quantize_activations on them, in the fused
  // kernel (widths 896, 4096, 8192, one with a NaN) and in the fallback
  // (9024: the scalar norm, then quantize_activations).
  for (int64_t width : {896, 4096, 8192, 9024}) {
    std::vector<float> xw = random_vector(static_cast<size_t>(3 * width), 12);
    if (width == 4096) xw[static_cast<size_t>(width + 70)] = std::nanf("");  // row 1, block 2
    const std::vector<float> ww = random_vector(static_cast<size_t>(width), 13);
    DeviceBuffer dxw = to_device(xw), dww = to_device(ww), plain(xw.size() * 4), fused(xw.size() * 4);
    DeviceBuffer q1(xw.size()), d1(xw.size() / 32 * 4), q2(xw.size()), d2(xw.size() / 32 * 4);
    rmsnorm(dxw.get<float>(), nullptr, dww.get<float>(), 1e-6f, 3, width, plain.get<float>(), nullptr);
    quantize_activations(plain.get<float>(), 2, width, q1.get<int8_t>(), d1.get<float>(), nullptr);
    rmsnorm(dxw.get<float>(), nullptr, dww.get<float>(), 1e-6f, 3, width, fused.get<float>(), nullptr,
            q2.get<int8_t>(), d2.get<float>(), 2);
    const std::vector<float> a = to_host<float>(plain, xw.size()), b = to_host<float>(fused, xw.size());
    ASSERT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * 4)) << width;
    const size_t nq = static_cast<size_t>(2 * width);
    ASSERT_EQ(to_host<int8_t>(q1, nq), to_host<int8_t>(q2, nq)) << width;
    const std::vector<float> s1 = to_host<float>(d1, nq / 32), s2 = to_host<float>(d2, nq / 32);
    ASSERT_EQ(0, std::memcmp(s1.data(), s2.data(), s1.size() * 4)) << width;
    if (width == 4096) {
      EXPECT_TRUE(std::isnan(s2[static_cast<size_t>(width / 32 + 2)]));  // the NaN's block
    }
  }

  // The norm that also rounds its last rows for the 16-bit GEMM (and
  // quantizes its first for the 8-bit GEMV): the same f32 rows, and the bits
  // of convert_f32 on those rows, F16 and BF16, in the fused kernel (896,
  // 4096, 8192) and in the fallback (9024: the scalar norm, then
  // convert_f32). Rows 0-1 quantized, rows 1-3 rounded.
  for (const DType low_type : {DType::F16, DType::BF16}) {
    for (int64_t width : {896, 4096, 8192, 9024}) {
      SCOPED_TRACE(std::string(low_type == DType::F16 ? "f16 " : "bf16 ") + std::to_string(width));
      const int64_t n_rows = 4, low_from = 1;
      const std::vector<float> xw = random_vector(static_cast<size_t>(n_rows * width), 14);
      const std::vector<float> ww = random_vector(static_cast<size_t>(width), 15);
      const size_t n_low = static_cast<size_t>((n_rows - low_from) * width);
      DeviceBuffer dxw = to_device(xw), dww = to_device(ww), plain(xw.size() * 4), fused(xw.size() * 4);
      DeviceBuffer low1(n_low * 2), low2(n_low * 2), q(xw.size()), d(xw.size() / 32 * 4);
      rmsnorm(dxw.get<float>(), nullptr, dww.get<float>(), 1e-6f, n_rows, width, plain.get<float>(), nullptr);
      convert_f32(plain.get<float>() + low_from * width, static_cast<int64_t>(n_low), low_type, low1.get(), nullptr);
      rmsnorm(dxw.get<float>(), nullptr, dww.get<float>(), 1e-6f, n_rows, width, fused.get<float>(), nullptr,
              q.get<int8_t>(), d.get<float>(), 2, low2.get(), low_type, low_from);
      const std::vector<float> a = to_host<float>(plain, xw.size()), b = to_host<float>(fused, xw.size());
      ASSERT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * 4));
      ASSERT_EQ(to_host<uint16_t>(low1, n_low), to_host<uint16_t>(low2, n_low));
    }
  }

  // silu_mul over [3 tokens, gate | up] rows of 500.
  const std::vector<float> gu = random_vector(3000, 9);
  std::vector<float> ref(1500);
  for (int t = 0; t < 3; ++t) {
    std::copy(gu.begin() + t * 1000, gu.begin() + t * 1000 + 500, ref.begin() + t * 500);
    cpu::silu_mul(ref.data() + t * 500, gu.data() + t * 1000 + 500, 500);
  }
  DeviceBuffer dgu = to_device(gu), dact(1500 * 4);
  silu_mul(dgu.get<float>(), 3, 500, dact.get<float>(), nullptr);
  got = to_host<float>(dact, 1500);
  for (size_t i = 0; i < 1500; ++i) ASSERT_NEAR(got[i], ref[i], 1e-5 * (1 + std::fabs(ref[i])));

  TestMatrix table = make_matrix(DType::Q8_0, 50, 64, 11);
  const std::vector<int32_t> ids = {7, 49, 0};
  DeviceBuffer di = to_device(ids), de(3 * 64 * 4);
  embed_rows(table.device, di.get<int32_t>(), 3, de.get<float>(), nullptr);
  got = to_host<float>(de, 3 * 64);
  std::vector<float> row(64);
  for (int i = 0; i < 3; ++i) {
    cpu::dequantize_row(DType::Q8_0, table.host_bytes.data() + ids[i] * 2 * sizeof(BlockQ8_0), row.data(), 64);
    for (int c = 0; c < 64; ++c) ASSERT_FLOAT_EQ(got[i * 64 + c], row[c]);
  }
}

// RoPE tables as the engine builds them: [max_pos, head_dim / 2] cosines
// and sines of p * 10000^(-2i / head_dim).
struct RopeTables {
  std::vector<float> cos, sin;
};
RopeTables rope_tables(int max_pos, int head_dim) {
  const int half = head_dim / 2;
  const size_t n = static_cast<size_t>(max_pos * half);
  RopeTables t{std::vector<float>(n), std::vector<float>(n)};
  for (int p = 0; p < max_pos; ++p)
    for (int i = 0; i < half; ++i) {
      const double a = p * std::pow(10000.0, -2.0 * i / head_dim);
      t.cos[static_cast<size_t>(p * half + i)] = static_cast<float>(std::cos(a));
      t.sin[static_cast<size_t>(p * half + i)] = static_cast<float>(std::sin(a));
    }
  return t;
}

// CPU reference of qkv_finish + paged_attention for one sequence whose
// positions [0, n) are all new: q/k per-head norm, RoPE (HalfSplit), causal
// softmax attention. K and V are rounded to f16 as the cache stores them.
TEST(CudaKernels, QkvFinishAndPagedAttentionMatchCpu) {
  AttentionShape s;
  s.n_heads = 8;
  s.n_kv_heads = 2;
  s.head_dim = 48;
  s.block_size = 4;
  const int n = 19, hd = s.head_dim, half = hd / 2;
  const int q_dim = s.n_heads * hd, kv_dim = s.n_kv_heads * hd;
  std::vector<float> q = random_vector(static_cast<size_t>(n * q_dim), 12);
  std::vector<float> k = random_vector(static_cast<size_t>(n * kv_dim), 13);
  const std::vector<float> v = random_vector(static_cast<size_t>(n * kv_dim), 14);
  const std::vector<float> q_norm = random_vector(static_cast<size_t>(hd), 15);
  const std::vector<float> k_norm = random_vector(static_cast<size_t>(hd), 16);
  const int max_ctx = 32;
  const RopeTables rope = rope_tables(max_ctx, hd);
  const std::vector<float>&cosv = rope.cos, &sinv = rope.sin;
  // Blocks out of order, to exercise the table.
  const std::vector<int32_t> table = {5, 2, 7, 0, 3};
  std::vector<int32_t> positions(n), slots(n), offsets(n, 0);
  for (int t = 0; t < n; ++t) {
    positions[static_cast<size_t>(t)] = t;
    slots[static_cast<size_t>(t)] = table[static_cast<size_t>(t / 4)] * 4 + t % 4;
  }

  // CPU reference.
  auto finish = [&](float* head, const std::vector<float>& norm, int pos) {
    cpu::rmsnorm(head, norm.data(), 1e-6f, head, hd);
    for (int i = 0; i < half; ++i) {
      const float c = cosv[static_cast<size_t>(pos * half + i)], sn = sinv[static_cast<size_t>(pos * half + i)];
      const float x0 = head[i], x1 = head[i + half];
      head[i] = x0 * c - x1 * sn;
      head[i + half] = x0 * sn + x1 * c;
    }
  };
  std::vector<float> q_ref = q, k_ref = k, v_ref = v;
  for (int t = 0; t < n; ++t) {
    for (int h = 0; h < s.n_heads; ++h) finish(q_ref.data() + t * q_dim + h * hd, q_norm, t);
    for (int h = 0; h < s.n_kv_heads; ++h) finish(k_ref.data() + t * kv_dim + h * hd, k_norm, t);
  }
  for (float& x : k_ref) x = f16_to_f32(f32_to_f16(x));
  for (float& x : v_ref) x = f16_to_f32(f32_to_f16(x));
  std::vector<float> out_ref(static_cast<size_t>(n * q_dim), 0.0f);
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  for (int t = 0; t < n; ++t)
    for (int h = 0; h < s.n_heads; ++h) {
      const int kvh = h / (s.n_heads / s.n_kv_heads);
      std::vector<double> sc(static_cast<size_t>(t + 1));
      double mx = -1e30, sum = 0;
      for (int j = 0; j <= t; ++j) {
        double d = 0;
        for (int e = 0; e < hd; ++e)
          d += double(q_ref[static_cast<size_t>(t * q_dim + h * hd + e)]) * k_ref[static_cast<size_t>(j * kv_dim + kvh * hd + e)];
        sc[static_cast<size_t>(j)] = d * scale;
        mx = std::max(mx, sc[static_cast<size_t>(j)]);
      }
      for (double& x : sc) sum += (x = std::exp(x - mx));
      for (int e = 0; e < hd; ++e) {
        double o = 0;
        for (int j = 0; j <= t; ++j) o += sc[static_cast<size_t>(j)] * v_ref[static_cast<size_t>(j * kv_dim + kvh * hd + e)];
        out_ref[static_cast<size_t>(t * q_dim + h * hd + e)] = static_cast<float>(o / sum);
      }
    }

  // GPU.
  // q, k and v as column slices of one [n, q_dim + 2 kv_dim] buffer, as the engine keeps them.
  const int qkv_dim = q_dim + 2 * kv_dim;
  std::vector<float> qkv(static_cast<size_t>(n * qkv_dim));
  for (int t = 0; t < n; ++t) {
    std::copy(q.begin() + t * q_dim, q.begin() + (t + 1) * q_dim, qkv.begin() + t * qkv_dim);
    std::copy(k.begin() + t * kv_dim, k.begin() + (t + 1) * kv_dim, qkv.begin() + t * qkv_dim + q_dim);
    std::copy(v.begin() + t * kv_dim, v.begin() + (t + 1) * kv_dim, qkv.begin() + t * qkv_dim + q_dim + kv_dim);
  }
  DeviceBuffer dqkv = to_device(qkv), dqn = to_device(q_norm),
               dkn = to_device(k_norm), dcos = to_device(cosv), dsin = to_device(sinv), dpos = to_device(positions),
               dslots = to_device(slots), doff = to_device(offsets), dtable = to_device(table);
  const size_t cache_elems = static_cast<size_t>(8 * 4 * kv_dim);
  DeviceBuffer kc(cache_elems * 2), vc(cache_elems * 2), dout(static_cast<size_t>(n * q_dim) * 4);
  QkvFinishArgs qa;
  qa.q = dqkv.get<float>();
  qa.k = dqkv.get<float>() + q_dim;
  qa.v = dqkv.get<float>() + q_dim + kv_dim;
  qa.stride = qkv_dim;
  qa.q_norm = dqn.get<float>();
  qa.k_norm = dkn.get<float>();
  qa.norm_eps = 1e-6f;
  qa.rope_cos = dcos.get<float>();
  qa.rope_sin = dsin.get<float>();
  qa.positions = dpos.get<int32_t>();
  qa.slots = dslots.get<int32_t>();
  qa.k_cache = kc.get<__half>();
  qa.v_cache = vc.get<__half>();
  qkv_finish(qa, s, n, nullptr);
  const std::vector<float> qkv_got = to_host<float>(dqkv, qkv.size());
  for (int t = 0; t < n; ++t)
    for (int i = 0; i < q_dim; ++i) {
      const float want = q_ref[static_cast<size_t>(t * q_dim + i)];
      ASSERT_NEAR(qkv_got[static_cast<size_t>(t * qkv_dim + i)], want, 1e-4 * (1 + std::fabs(want))) << t << " " << i;
    }
  // An FP8 product before its scales, with biases: qkv_finish applying the
  // scales gives the bits of scale_product and then qkv_finish.
  {
    std::vector<float> row_scale = random_vector(static_cast<size_t>(qkv_dim), 150);
    for (float& r : row_scale) r = 0.5f + std::fabs(r);
    std::vector<float> token_scale(static_cast<size_t>(n));
    for (int t = 0; t < n; ++t) token_scale[static_cast<size_t>(t)] = 0.25f + 0.1f * static_cast<float>(t);
    const std::vector<float> qb = random_vector(static_cast<size_t>(q_dim), 151),
                             kb = random_vector(static_cast<size_t>(kv_dim), 152),
                             vb = random_vector(static_cast<size_t>(kv_dim), 153);
    DeviceBuffer drs = to_device(row_scale), dts = to_device(token_scale), dqb = to_device(qb), dkb = to_device(kb),
                 dvb = to_device(vb);
    DeviceBuffer raw = to_device(qkv), scaled(qkv.size() * 4);
    scale_product(raw.get<float>(), n, qkv_dim, drs.get<float>(), dts.get<float>(), scaled.get<float>(), qkv_dim,
                  false, nullptr);
    DeviceBuffer kc2(cache_elems * 2), vc2(cache_elems * 2), kc3(cache_elems * 2), vc3(cache_elems * 2);
    for (DeviceBuffer* b : {&kc2, &vc2, &kc3, &vc3}) TANDEM_CUDA_CHECK(cudaMemset(b->get(), 0, b->bytes()));
    QkvFinishArgs two = qa;
    two.q_bias = dqb.get<float>();
    two.k_bias = dkb.get<float>();
    two.v_bias = dvb.get<float>();
    two.q = scaled.get<float>();
    two.k = scaled.get<float>() + q_dim;
    two.v = scaled.get<float>() + q_dim + kv_dim;
    two.k_cache = kc2.get<__half>();
    two.v_cache = vc2.get<__half>();
    qkv_finish(two, s, n, nullptr);
    QkvFinishArgs one = two;
    one.q = raw.get<float>();
    one.k = raw.get<float>() + q_dim;
    one.v = raw.get<float>() + q_dim + kv_dim;
    one.k_cache = kc3.get<__half>();
    one.v_cache = vc3.get<__half>();
    one.row_scale = drs.get<float>();
    one.token_scale = dts.get<float>();
    qkv_finish(one, s, n, nullptr);
    const auto want = to_host<float>(scaled, qkv.size()), got = to_host<float>(raw, qkv.size());
    for (int t = 0; t < n; ++t)
      for (int i = 0; i < q_dim + kv_dim; ++i)  // q and k are written back; v goes to the cache only
        ASSERT_EQ(want[static_cast<size_t>(t * qkv_dim + i)], got[static_cast<size_t>(t * qkv_dim + i)])
            << "scaled in qkv_finish: token " << t << ", column " << i;
    for (auto [a, b] : {std::pair{&kc2, &kc3}, std::pair{&vc2, &vc3}}) {
      const auto ca = to_host<uint16_t>(*a, cache_elems), cb = to_host<uint16_t>(*b, cache_elems);
      ASSERT_EQ(0, std::memcmp(ca.data(), cb.data(), cache_elems * 2)) << "scaled in qkv_finish: the cache";
    }
  }
  AttentionArgs aa;
  aa.q = dqkv.get<float>();
  aa.q_stride = qkv_dim;
  aa.k_cache = kc.get<__half>();
  aa.v_cache = vc.get<__half>();
  aa.positions = dpos.get<int32_t>();
  aa.table_offsets = doff.get<int32_t>();
  aa.block_tables = dtable.get<int32_t>();
  aa.scale = scale;
  aa.out = dout.get<float>();
  DeviceBuffer partials(static_cast<size_t>(kAttentionSplitSlots) * 258 * 4),
      counters(static_cast<size_t>(kAttentionSplitSlots) * 4);
  TANDEM_CUDA_CHECK(cudaMemset(counters.get(), 0, counters.bytes()));
  aa.split_partials = partials.get<float>();
  aa.split_counters = counters.get<int32_t>();
  DeviceBuffer dgrouped(static_cast<size_t>(n * q_dim) * 4);
  for (int splits : {1, 2, 5, 13}) {
    paged_attention(aa, s, n, splits, nullptr);
    const std::vector<float> got = to_host<float>(dout, out_ref.size());
    for (size_t i = 0; i < got.size(); ++i) ASSERT_NEAR(got[i], out_ref[i], 2e-3) << i << ", " << splits << " splits";
    // head_dim 48: the strided value path, with the 4 heads of a KV head in one block.
    AttentionArgs grouped = aa;
    grouped.out = dgrouped.get<float>();
    paged_attention(grouped, s, n, splits, nullptr, 4);
    const std::vector<float> g = to_host<float>(dgrouped, out_ref.size());
    ASSERT_EQ(0, std::memcmp(g.data(), got.data(), got.size() * 4)) << splits << " splits, grouped";
  }
}

// The one-token q·k·v GEMV that finishes q, k and v itself gives the bits
// of the GEMV followed by qkv_finish: q and k rotated, v raw, and the
// cache's k and v rows (biased), for 16-bit and 8-bit weights, both RoPE
// layouts, with and without biases, and with no cache slot; over 512
// columns (most threads without a vector), 4096 (one vector each) and, for
// 16-bit weights, 5120 (full rounds of loads and a tail; 8-bit rows that
// wide are refused). Where a step needs a whole head (a q/k norm), FP8
// scales, or heads that do not hold whole blocks, gemv_finishes_qkv
// refuses it.
TEST(CudaKernels, GemvFinishingQkvMatchesGemvThenQkvFinish) {
  AttentionShape s;
  s.n_heads = 4;
  s.n_kv_heads = 2;
  s.head_dim = 64;
  s.block_size = 4;
  const int hd = s.head_dim, q_dim = s.n_heads * hd, kv_dim = s.n_kv_heads * hd;
  const int64_t rows = q_dim + 2 * kv_dim;
  const int max_pos = 16, pos = 11;
  const RopeTables rope = rope_tables(max_pos, hd);
  const std::vector<float> qb = random_vector(static_cast<size_t>(q_dim), 171),
                           kb = random_vector(static_cast<size_t>(kv_dim), 172),
                           vb = random_vector(static_cast<size_t>(kv_dim), 173);
  DeviceBuffer dcos = to_device(rope.cos), dsin = to_device(rope.sin), dqb = to_device(qb), dkb = to_device(kb),
               dvb = to_device(vb), dpos = to_device(std::vector<int32_t>{pos});
  const size_t cache_elems = static_cast<size_t>(4 * s.block_size * kv_dim);

  for (const int64_t cols : {int64_t{512}, int64_t{4096}, int64_t{5120}}) {
    const std::vector<float> x = random_vector(static_cast<size_t>(cols), 170);
    DeviceBuffer dx = to_device(x);
    const QuantizedInput xq = quantize_on_gpu(x, 1, cols);
    TestMatrix f16 = make_matrix(DType::F16, rows, cols, 174), bf16 = make_matrix(DType::BF16, rows, cols, 175),
               q8 = make_matrix(DType::Q8_0, rows, cols, 176), i8 = make_int8_rows(rows, cols, 177);
    for (const TestMatrix* m : {&f16, &bf16, &q8, &i8}) {
      const DeviceMatrix& w = m->device;
      const bool eight_bit = gemv_takes_quantized_input(w.format);
      for (const RopeLayout layout : {RopeLayout::HalfSplit, RopeLayout::Interleaved})
        for (const bool biases : {false, true})
          for (const int32_t slot : {6, -1})
          for (const KvCacheType cache : {KvCacheType::F16, KvCacheType::Fp8E4M3}) {
            const bool fp8_cache = cache == KvCacheType::Fp8E4M3;
            if (fp8_cache && (layout == RopeLayout::Interleaved || slot < 0)) continue;  // the rounding, once a format
            SCOPED_TRACE(std::string(weight_format_name(w.format)) + ", " + std::to_string(cols) + " columns" +
                         (layout == RopeLayout::HalfSplit ? ", half-split" : ", interleaved") +
                         (biases ? ", biases" : "") + ", slot " + std::to_string(slot) +
                         (fp8_cache ? ", E4M3 cache" : ""));
            DeviceBuffer dslot = to_device(std::vector<int32_t>{slot});
            // Both outputs start as the same NaN pattern: a value either path
            // leaves unwritten compares equal only if both leave it.
            const size_t cache_bytes = cache_elems * static_cast<size_t>(kv_cache_element_bytes(cache));
            struct Out {
              DeviceBuffer y, kc, vc;
            } ref{DeviceBuffer(static_cast<size_t>(rows) * 4), DeviceBuffer(cache_bytes), DeviceBuffer(cache_bytes)},
                fused{DeviceBuffer(static_cast<size_t>(rows) * 4), DeviceBuffer(cache_bytes),
                      DeviceBuffer(cache_bytes)};
            for (Out* o : {&ref, &fused})
              for (DeviceBuffer* b : {&o->y, &o->kc, &o->vc}) TANDEM_CUDA_CHECK(cudaMemset(b->get(), 0xff, b->bytes()));
            auto args_for = [&](Out& o) {
              QkvFinishArgs a;
              a.q = o.y.get<float>();
              a.k = o.y.get<float>() + q_dim;
              a.v = o.y.get<float>() + q_dim + kv_dim;
              a.stride = rows;
              if (biases) {
                a.q_bias = dqb.get<float>();
                a.k_bias = dkb.get<float>();
                a.v_bias = dvb.get<float>();
              }
              a.rope_cos = dcos.get<float>();
              a.rope_sin = dsin.get<float>();
              a.rope_layout = layout;
              a.positions = dpos.get<int32_t>();
              a.slots = dslot.get<int32_t>();
              a.k_cache = o.kc.get();
              a.v_cache = o.vc.get();
              a.cache_type = cache;
              return a;
            };
            const QkvFinishArgs ra = args_for(ref), fa = args_for(fused);
            if (eight_bit && cols > 4096) {
              ASSERT_FALSE(gemv_finishes_qkv(w, fused.y.get<float>(), fa, s)) << "8-bit rows over 4096 columns";
              continue;
            }
            if (eight_bit) gemv_q8(w, xq.q.get<int8_t>(), xq.d.get<float>(), 1, ref.y.get<float>(), rows, false, nullptr);
            else gemv(w, dx.get<float>(), 1, ref.y.get<float>(), rows, false, nullptr);
            qkv_finish(ra, s, 1, nullptr);
            ASSERT_TRUE(gemv_finishes_qkv(w, fused.y.get<float>(), fa, s));
            if (eight_bit) gemv_q8_qkv(w, xq.q.get<int8_t>(), xq.d.get<float>(), fused.y.get<float>(), fa, s, nullptr);
            else gemv_qkv(w, dx.get<float>(), fused.y.get<float>(), fa, s, nullptr);
            const std::vector<float> want = to_host<float>(ref.y, static_cast<size_t>(rows)),
                                     got = to_host<float>(fused.y, static_cast<size_t>(rows));
            for (int64_t r = 0; r < rows; ++r) {
              ASSERT_FALSE(std::isnan(want[static_cast<size_t>(r)])) << "row " << r << " unwritten";
              uint32_t a = 0, b = 0;
              std::memcpy(&a, &want[static_cast<size_t>(r)], 4);
              std::memcpy(&b, &got[static_cast<size_t>(r)], 4);
              ASSERT_EQ(a, b) << "row " << r << ": " << want[static_cast<size_t>(r)] << " against "
                              << got[static_cast<size_t>(r)];
            }
            for (auto [a, b, name] : {std::tuple{&ref.kc, &fused.kc, "k"}, std::tuple{&ref.vc, &fused.vc, "v"}}) {
              const auto ca = to_host<uint8_t>(*a, cache_bytes), cb = to_host<uint8_t>(*b, cache_bytes);
              ASSERT_EQ(0, std::memcmp(ca.data(), cb.data(), cache_bytes)) << "the " << name << " cache";
              if (slot >= 0) {  // the slot's whole row was written (none of the 0xff.. fill left)
                const size_t eb = static_cast<size_t>(kv_cache_element_bytes(cache));
                const uint8_t* row = ca.data() + static_cast<size_t>(slot) * kv_dim * eb;
                for (int i = 0; i < kv_dim; ++i) {
                  bool all_ones = true;
                  for (size_t k = 0; k < eb; ++k) all_ones = all_ones && row[static_cast<size_t>(i) * eb + k] == 0xffu;
                  EXPECT_FALSE(all_ones) << name << " column " << i;
                }
              }
            }
          }
    }
  }

  // What it refuses.
  TestMatrix f16 = make_matrix(DType::F16, rows, 512, 180), q8 = make_matrix(DType::Q8_0, rows, 512, 181),
             i8 = make_int8_rows(rows, 512, 182), f32 = make_matrix(DType::F32, rows, 512, 183);
  DeviceBuffer y(static_cast<size_t>(rows) * 4);
  QkvFinishArgs a;
  a.q = y.get<float>();
  a.k = y.get<float>() + q_dim;
  a.v = y.get<float>() + q_dim + kv_dim;
  EXPECT_TRUE(gemv_finishes_qkv(f16.device, y.get<float>(), a, s));
  EXPECT_FALSE(gemv_finishes_qkv(f32.device, y.get<float>(), a, s)) << "f32 weights";
  DeviceMatrix fp8 = i8.device;
  fp8.format = WeightFormat::F8Row;
  EXPECT_FALSE(gemv_finishes_qkv(fp8, y.get<float>(), a, s)) << "FP8 rows";
  QkvFinishArgs normed = a;
  normed.k_norm = dqb.get<float>();
  EXPECT_FALSE(gemv_finishes_qkv(f16.device, y.get<float>(), normed, s)) << "q/k norm";
  QkvFinishArgs scaled = a;
  scaled.row_scale = dqb.get<float>();
  EXPECT_FALSE(gemv_finishes_qkv(i8.device, y.get<float>(), scaled, s)) << "FP8 scales";
  QkvFinishArgs apart = a;
  apart.v = nullptr;
  EXPECT_FALSE(gemv_finishes_qkv(q8.device, y.get<float>(), apart, s)) << "v not in y";
  AttentionShape fewer = s;
  fewer.n_kv_heads = 1;  // q_dim + 2 kv_dim = 384 rows, not the matrix's 512
  QkvFinishArgs fewer_args = a;
  fewer_args.v = y.get<float>() + q_dim + hd;
  EXPECT_FALSE(gemv_finishes_qkv(f16.device, y.get<float>(), fewer_args, fewer)) << "rows of another shape";
  // Heads of 4 rows (the same 512 rows): Q8_0's blocks of 4 rows take
  // them, the 16-bit GEMV's blocks of 8 do not.
  AttentionShape small = s;
  small.head_dim = 4;
  small.n_heads = 64;
  small.n_kv_heads = 32;
  QkvFinishArgs small_args = a;
  small_args.k = y.get<float>() + 256;
  small_args.v = y.get<float>() + 384;
  EXPECT_TRUE(gemv_finishes_qkv(q8.device, y.get<float>(), small_args, small));
  EXPECT_FALSE(gemv_finishes_qkv(f16.device, y.get<float>(), small_args, small)) << "head_dim 4";
}

// Causal attention in double over a paged f16 cache: token t (at
// positions[t]) attends to positions [0, positions[t]] of its sequence,
// whose blocks are tables[offsets[t] + p / block_size].
//   q: [n, n_heads * head_dim]; kh, vh: f16 bits [blocks * block_size, kv_dim].
std::vector<float> reference_paged_attention(const AttentionShape& s, const std::vector<float>& q,
                                             const std::vector<uint16_t>& kh, const std::vector<uint16_t>& vh,
                                             const std::vector<int32_t>& tables, const std::vector<int32_t>& offsets,
                                             const std::vector<int32_t>& positions, float scale) {
  const int hd = s.head_dim, q_dim = s.n_heads * hd, kv_dim = s.n_kv_heads * hd;
  const int n = static_cast<int>(positions.size());
  std::vector<float> want(static_cast<size_t>(n * q_dim));
  for (int t = 0; t < n; ++t)
    for (int h = 0; h < s.n_heads; ++h) {
      const int kvh = h / (s.n_heads / s.n_kv_heads), pos = positions[static_cast<size_t>(t)];
      auto slot = [&](int j) {
        return static_cast<size_t>(tables[static_cast<size_t>(offsets[static_cast<size_t>(t)] + j / s.block_size)]) *
                   s.block_size + j % s.block_size;
      };
      std::vector<double> sc(static_cast<size_t>(pos + 1));
      double mx = -1e30, sum = 0;
      for (int j = 0; j <= pos; ++j) {
        double d = 0;
        for (int e = 0; e < hd; ++e)
          d += double(q[static_cast<size_t>(t * q_dim + h * hd + e)]) * f16_to_f32(kh[slot(j) * kv_dim + kvh * hd + e]);
        sc[static_cast<size_t>(j)] = d * scale;
        mx = std::max(mx, sc[static_cast<size_t>(j)]);
      }
      for (double& x : sc) sum += (x = std::exp(x - mx));
      for (int e = 0; e < hd; ++e) {
        double o = 0;
        for (int j = 0; j <= pos; ++j) o += sc[static_cast<size_t>(j)] * f16_to_f32(vh[slot(j) * kv_dim + kvh * hd + e]);
        want[static_cast<size_t>(t * q_dim + h * hd + e)] = static_cast<float>(o / sum);
      }
    }
  return want;
}

// Decode-like attention: three tokens of three sequences at positions 700,
// 5 and 300 over a cache filled with random K and V, each sequence's blocks
// scattered. Every split count matches the CPU, a token's result does not
// depend on the batch for a given split count, and the split counters are
// left at zero (a second run gives the same bits).
TEST(CudaKernels, PagedAttentionSplitsMatchCpuOnLongContexts) {
  AttentionShape s;
  s.n_heads = 8;
  s.n_kv_heads = 2;
  s.head_dim = 128;
  s.block_size = 16;
  const int hd = s.head_dim, q_dim = s.n_heads * hd, kv_dim = s.n_kv_heads * hd;
  const std::vector<int32_t> positions = {700, 5, 300};
  const int n = static_cast<int>(positions.size());
  // Sequence i owns blocks i, i + 3, i + 6, ... (interleaved with the others).
  std::vector<int32_t> tables, offsets;
  for (int i = 0; i < n; ++i) {
    offsets.push_back(static_cast<int32_t>(tables.size()));
    for (int b = 0; b * s.block_size <= positions[static_cast<size_t>(i)]; ++b) tables.push_back(i + 3 * b);
  }
  const int n_blocks = *std::max_element(tables.begin(), tables.end()) + 1;
  const size_t cache_elems = static_cast<size_t>(n_blocks * s.block_size * kv_dim);
  const std::vector<uint16_t> kh = random_f16(cache_elems, 21), vh = random_f16(cache_elems, 22);
  const std::vector<float> q = random_vector(static_cast<size_t>(n * q_dim), 23);
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));

  const std::vector<float> want = reference_paged_attention(s, q, kh, vh, tables, offsets, positions, scale);

  DeviceBuffer dq = to_device(q), dk = to_device(kh), dv = to_device(vh), dpos = to_device(positions),
               doff = to_device(offsets), dtab = to_device(tables), dout(want.size() * 4), done(want.size() * 4);
  DeviceBuffer partials(static_cast<size_t>(kAttentionSplitSlots) * 258 * 4),
      counters(static_cast<size_t>(kAttentionSplitSlots) * 4);
  TANDEM_CUDA_CHECK(cudaMemset(counters.get(), 0, counters.bytes()));
  AttentionArgs aa;
  aa.q = dq.get<float>();
  aa.q_stride = q_dim;
  aa.k_cache = dk.get<__half>();
  aa.v_cache = dv.get<__half>();
  aa.positions = dpos.get<int32_t>();
  aa.table_offsets = doff.get<int32_t>();
  aa.block_tables = dtab.get<int32_t>();
  aa.scale = scale;
  aa.out = dout.get<float>();
  aa.split_partials = partials.get<float>();
  aa.split_counters = counters.get<int32_t>();
  EXPECT_GT(attention_splits(s, 1, 132), 1);
  EXPECT_EQ(attention_splits(s, 64, 132), 1);
  // A few tokens keep a block per head; many take the 4 heads of a KV head together.
  EXPECT_EQ(attention_heads_per_block(s, 3, 132), 1);
  EXPECT_EQ(attention_heads_per_block(s, 66, 132), 4);
  EXPECT_EQ(attention_splits(s, 66, 132, 4), 1);
  for (int splits : {1, 3, 8, 16}) {
    paged_attention(aa, s, n, splits, nullptr);
    const std::vector<float> got = to_host<float>(dout, want.size());
    for (size_t i = 0; i < got.size(); ++i) ASSERT_NEAR(got[i], want[i], 2e-3) << i << ", " << splits << " splits";
    // Query heads of a KV head in one block (8: half the block's heads are padding): the same bits.
    for (int heads_per_block : {2, 4, 8}) {
      AttentionArgs grouped = aa;
      grouped.out = done.get<float>();
      paged_attention(grouped, s, n, splits, nullptr, heads_per_block);
      const std::vector<float> g = to_host<float>(done, want.size());
      ASSERT_EQ(0, std::memcmp(g.data(), got.data(), got.size() * 4)) << splits << " splits, " << heads_per_block
                                                                     << " heads a block";
    }
    paged_attention(aa, s, n, splits, nullptr);
    const std::vector<float> again = to_host<float>(dout, want.size());
    ASSERT_EQ(0, std::memcmp(got.data(), again.data(), got.size() * 4)) << splits << " splits, second run";
    // Decode steps load their first tile before waiting for the kernel
    // before them (and reload the token's own position after): the same bits.
    AttentionArgs early = aa;
    early.decode_only = true;
    early.out = done.get<float>();
    paged_attention(early, s, n, splits, nullptr);
    const std::vector<float> e = to_host<float>(done, want.size());
    ASSERT_EQ(0, std::memcmp(e.data(), got.data(), got.size() * 4)) << splits << " splits, decode_only";
    // Quantizing its output for the 8-bit GEMV (one head a block and 4):
    // the bits of quantize_activations on that output.
    DeviceBuffer q1(want.size()), d1(want.size() / 32 * 4), q2(want.size()), d2(want.size() / 32 * 4);
    quantize_activations(dout.get<float>(), n, q_dim, q1.get<int8_t>(), d1.get<float>(), nullptr);
    const std::vector<int8_t> want_q = to_host<int8_t>(q1, want.size());
    const std::vector<float> want_d = to_host<float>(d1, want.size() / 32);
    for (int heads_per_block : {1, 4}) {
      AttentionArgs quantizing = early;
      quantizing.out_q = q2.get<int8_t>();
      quantizing.out_d = d2.get<float>();
      paged_attention(quantizing, s, n, splits, nullptr, heads_per_block);
      ASSERT_EQ(0, std::memcmp(to_host<float>(done, want.size()).data(), got.data(), got.size() * 4));
      ASSERT_EQ(to_host<int8_t>(q2, want.size()), want_q) << splits << " splits, " << heads_per_block;
      const std::vector<float> d = to_host<float>(d2, want.size() / 32);
      ASSERT_EQ(0, std::memcmp(d.data(), want_d.data(), d.size() * 4)) << splits << " splits, " << heads_per_block;
    }
    // Token 0 alone: the same bits as in the batch of three.
    AttentionArgs one = aa;
    one.out = done.get<float>();
    paged_attention(one, s, 1, splits, nullptr);
    const std::vector<float> alone = to_host<float>(done, static_cast<size_t>(q_dim));
    ASSERT_EQ(0, std::memcmp(alone.data(), got.data(), static_cast<size_t>(q_dim) * 4)) << splits << " splits, alone";
  }
  const std::vector<int32_t> left = to_host<int32_t>(counters, static_cast<size_t>(kAttentionSplitSlots));
  for (int32_t c : left) ASSERT_EQ(c, 0);
}


// Decode attention on tensor cores: tokens at positions on both sides of
// the 16-position warp slices and the 64-position tiles (0, 5, 15, 16, 63,
// 64, 300, 700), each sequence's blocks scattered, group sizes 4, 8 and 1
// and head sizes 128, 64, 96 and 32: every row near the CPU (q and the softmax
// weights rounded to f16), a token alone gives the bits it gives in the
// batch, a copy pipeline 3 stages deep gives the bits of 2, and the rows it
// quantizes for an 8-bit o projection are quantize_activations' of its
// output.
TEST(CudaKernels, GroupedDecodeAttentionMatchesCpu) {
  int device = 0;
  TANDEM_CUDA_CHECK(cudaGetDevice(&device));
  struct Case {
    int n_heads, n_kv_heads, head_dim;
  };
  for (const Case cs : {Case{8, 2, 128}, Case{16, 2, 64}, Case{4, 4, 96}, Case{32, 2, 128}, Case{4, 2, 32}}) {
    AttentionShape s;
    s.n_heads = cs.n_heads;
    s.n_kv_heads = cs.n_kv_heads;
    s.head_dim = cs.head_dim;
    s.block_size = 16;
    const int max_stages = grouped_decode_attention_init(s, device);
    ASSERT_GE(max_stages, 2) << cs.n_heads << "/" << cs.n_kv_heads;
    const int hd = s.head_dim, q_dim = s.n_heads * hd, kv_dim = s.n_kv_heads * hd;
    const std::vector<int32_t> positions = {700, 0, 5, 15, 16, 63, 64, 300};
    const int n = static_cast<int>(positions.size());
    std::vector<int32_t> tables, offsets;
    for (int i = 0; i < n; ++i) {
      offsets.push_back(static_cast<int32_t>(tables.size()));
      for (int b = 0; b * s.block_size <= positions[static_cast<size_t>(i)]; ++b) tables.push_back(i + n * b);
    }
    const int n_blocks = *std::max_element(tables.begin(), tables.end()) + 1;
    const size_t cache_elems = static_cast<size_t>(n_blocks * s.block_size * kv_dim);
    const std::vector<uint16_t> kh = random_f16(cache_elems, 71), vh = random_f16(cache_elems, 72);
    const std::vector<float> q = random_vector(static_cast<size_t>(n * q_dim), 73);
    const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
    const std::vector<float> want = reference_paged_attention(s, q, kh, vh, tables, offsets, positions, scale);

    DeviceBuffer dq = to_device(q), dk = to_device(kh), dv = to_device(vh), dpos = to_device(positions),
                 doff = to_device(offsets), dtab = to_device(tables), dout(want.size() * 4), done(want.size() * 4);
    TANDEM_CUDA_CHECK(cudaMemset(dout.get(), 0xff, dout.bytes()));  // NaN: every row must be written
    AttentionArgs aa;
    aa.q = dq.get<float>();
    aa.q_stride = q_dim;
    aa.k_cache = dk.get<__half>();
    aa.v_cache = dv.get<__half>();
    aa.positions = dpos.get<int32_t>();
    aa.table_offsets = doff.get<int32_t>();
    aa.block_tables = dtab.get<int32_t>();
    aa.scale = scale;
    aa.out = dout.get<float>();
    grouped_decode_attention(aa, s, n, 2, nullptr);
    const std::vector<float> got = to_host<float>(dout, want.size());
    double max_err = 0;
    for (size_t i = 0; i < got.size(); ++i) {
      ASSERT_NEAR(got[i], want[i], 3e-3) << cs.n_heads << "/" << cs.n_kv_heads << " heads of " << hd << ", token "
                                         << i / q_dim << " (position " << positions[i / q_dim] << "), column "
                                         << i % q_dim;
      max_err = std::max(max_err, std::fabs(double(got[i]) - want[i]));
    }
    std::printf("grouped decode attention, %d/%d heads of %d: max |diff| %.2e\n", cs.n_heads, cs.n_kv_heads, hd,
                max_err);
    // The last token alone (its own arrays' tail): the bits of the batch.
    AttentionArgs one = aa;
    one.positions = dpos.get<int32_t>() + (n - 1);
    one.table_offsets = doff.get<int32_t>() + (n - 1);
    one.q = dq.get<float>() + static_cast<size_t>(n - 1) * q_dim;
    one.out = done.get<float>();
    grouped_decode_attention(one, s, 1, 2, nullptr);
    const std::vector<float> alone = to_host<float>(done, static_cast<size_t>(q_dim));
    ASSERT_EQ(0, std::memcmp(alone.data(), got.data() + static_cast<size_t>(n - 1) * q_dim,
                             static_cast<size_t>(q_dim) * 4));
    // Three stages deep (where the device holds them): the same bits.
    for (int stages = 3; stages <= max_stages; ++stages) {
      AttentionArgs again = aa;
      again.out = done.get<float>();
      TANDEM_CUDA_CHECK(cudaMemset(done.get(), 0xff, done.bytes()));
      grouped_decode_attention(again, s, n, stages, nullptr);
      const std::vector<float> deeper = to_host<float>(done, want.size());
      ASSERT_EQ(0, std::memcmp(deeper.data(), got.data(), got.size() * 4)) << stages << " stages, head size " << hd;
    }
    // Quantizing for the 8-bit o projection: the same f32 rows, and q and d
    // with the bits of quantize_activations on them.
    {
      DeviceBuffer oq(want.size()), od(want.size() / 32 * 4), wq(want.size()), wd(want.size() / 32 * 4);
      TANDEM_CUDA_CHECK(cudaMemset(done.get(), 0xff, done.bytes()));
      TANDEM_CUDA_CHECK(cudaMemset(oq.get(), 0x55, oq.bytes()));
      AttentionArgs quantizing = aa;
      quantizing.out = done.get<float>();
      quantizing.out_q = oq.get<int8_t>();
      quantizing.out_d = od.get<float>();
      grouped_decode_attention(quantizing, s, n, grouped_decode_attention_stages(s, n, 132, max_stages), nullptr);
      ASSERT_EQ(0, std::memcmp(to_host<float>(done, want.size()).data(), got.data(), got.size() * 4)) << hd;
      quantize_activations(dout.get<float>(), n, q_dim, wq.get<int8_t>(), wd.get<float>(), nullptr);
      ASSERT_EQ(to_host<int8_t>(oq, want.size()), to_host<int8_t>(wq, want.size())) << "head size " << hd;
      const std::vector<float> d_got = to_host<float>(od, want.size() / 32), d_want = to_host<float>(wd, want.size() / 32);
      ASSERT_EQ(0, std::memcmp(d_got.data(), d_want.data(), d_got.size() * 4)) << "head size " << hd;
    }
  }
  AttentionShape llama;
  llama.n_heads = 32;
  llama.n_kv_heads = 8;
  llama.head_dim = 128;
  EXPECT_TRUE(grouped_decode_attention_takes(llama, 32, 132));  // 256 blocks
  EXPECT_TRUE(grouped_decode_attention_takes(llama, 8, 132));   // 64 blocks: a block for every third SM
  EXPECT_FALSE(grouped_decode_attention_takes(llama, 4, 132));  // 32 blocks: paged_attention splits instead
  EXPECT_EQ(grouped_decode_attention_stages(llama, 32, 132, 3), 3);   // 256 blocks: two an SM
  EXPECT_EQ(grouped_decode_attention_stages(llama, 64, 132, 3), 3);   // 512 blocks: at most four an SM
  EXPECT_EQ(grouped_decode_attention_stages(llama, 128, 132, 3), 2);  // 1024: alike either way, three blocks an SM
  EXPECT_EQ(grouped_decode_attention_stages(llama, 32, 132, 2), 2);   // a device that holds two
}

// Prompt attention on tensor cores: three sequences in one call, one with
// cached context from an earlier chunk (100 positions), one whole prompt and
// a single-token chunk, each sequence's blocks scattered, at every head size
// the kernel takes. Every row matches the CPU within the f16 rounding of q
// and of the softmax weights, the tiles are planned as documented, and a
// sequence's rows have the same bits whatever its tiling.
TEST(CudaKernels, PrefillAttentionMatchesCpu) {
  int device = 0;
  TANDEM_CUDA_CHECK(cudaGetDevice(&device));
  struct Case {
    int n_heads, n_kv_heads, head_dim;
  };
  for (const Case cs : {Case{8, 2, 128}, Case{6, 3, 48}, Case{4, 4, 64}, Case{4, 2, 96}, Case{2, 1, 32}}) {
    AttentionShape s;
    s.n_heads = cs.n_heads;
    s.n_kv_heads = cs.n_kv_heads;
    s.head_dim = cs.head_dim;
    s.block_size = 16;
    ASSERT_TRUE(prefill_attention_init(s, device));
    const int hd = s.head_dim, q_dim = s.n_heads * hd, kv_dim = s.n_kv_heads * hd;
    // (first position, tokens) of each sequence's chunk.
    const std::vector<std::pair<int, int>> chunks = {{100, 150}, {0, 70}, {5, 1}};
    const int n_seq = static_cast<int>(chunks.size());
    std::vector<int32_t> tables, offsets, positions, seq_of;
    for (int i = 0; i < n_seq; ++i) {
      offsets.push_back(static_cast<int32_t>(tables.size()));
      const int end = chunks[static_cast<size_t>(i)].first + chunks[static_cast<size_t>(i)].second;
      for (int b = 0; b * s.block_size < end; ++b) tables.push_back(i + n_seq * b);  // interleaved blocks
    }
    std::vector<int32_t> token_offsets;
    for (int i = 0; i < n_seq; ++i)
      for (int j = 0; j < chunks[static_cast<size_t>(i)].second; ++j) {
        positions.push_back(chunks[static_cast<size_t>(i)].first + j);
        token_offsets.push_back(offsets[static_cast<size_t>(i)]);
        seq_of.push_back(i);
      }
    const int n = static_cast<int>(positions.size());
    std::vector<int32_t> tiles(static_cast<size_t>(3 * n));
    const int64_t n_tiles = plan_prefill_tiles(positions.data(), token_offsets.data(), 0, n, tiles.data());
    // 150 = 64 + 64 + 22, 70 = 64 + 6, 1.
    const std::vector<int32_t> want_tiles = {0,   64, 164, 64,  64, 228, 128, 22, 250,
                                             150, 64, 64,  214, 6,  70,  220, 1,  6};
    ASSERT_EQ(n_tiles, 6);
    ASSERT_EQ(std::vector<int32_t>(tiles.begin(), tiles.begin() + 18), want_tiles);

    const int n_blocks = *std::max_element(tables.begin(), tables.end()) + 1;
    const size_t cache_elems = static_cast<size_t>(n_blocks * s.block_size * kv_dim);
    const std::vector<uint16_t> kh = random_f16(cache_elems, 41), vh = random_f16(cache_elems, 42);
    const std::vector<float> q = random_vector(static_cast<size_t>(n * q_dim), 43);
    const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
    const std::vector<float> want =
        reference_paged_attention(s, q, kh, vh, tables, token_offsets, positions, scale);

    DeviceBuffer dq = to_device(q), dk = to_device(kh), dv = to_device(vh), dpos = to_device(positions),
                 doff = to_device(token_offsets), dtab = to_device(tables), dtiles = to_device(tiles),
                 dout(want.size() * 4), dalone(want.size() * 4);
    TANDEM_CUDA_CHECK(cudaMemset(dout.get(), 0xff, dout.bytes()));  // NaN: every row must be written
    AttentionArgs aa;
    aa.q = dq.get<float>();
    aa.q_stride = q_dim;
    aa.k_cache = dk.get<__half>();
    aa.v_cache = dv.get<__half>();
    aa.positions = dpos.get<int32_t>();
    aa.table_offsets = doff.get<int32_t>();
    aa.block_tables = dtab.get<int32_t>();
    aa.scale = scale;
    aa.out = dout.get<float>();
    prefill_attention(aa, s, dtiles.get<int32_t>(), n_tiles, nullptr);
    const std::vector<float> got = to_host<float>(dout, want.size());
    double max_err = 0;
    for (size_t i = 0; i < got.size(); ++i) {
      ASSERT_NEAR(got[i], want[i], 3e-3) << "head_dim " << hd << ", token " << i / q_dim << ", column " << i % q_dim;
      max_err = std::max(max_err, std::fabs(double(got[i]) - want[i]));
    }
    std::printf("prefill attention, head_dim %d: max |diff| %.2e\n", hd, max_err);

    // The second sequence tiled differently (a tile per token): the same bits.
    std::vector<int32_t> single;
    for (int t = 150; t < 220; ++t) {
      single.push_back(t);
      single.push_back(1);
      single.push_back(positions[static_cast<size_t>(t)] + 1);
    }
    DeviceBuffer dsingle = to_device(single);
    TANDEM_CUDA_CHECK(cudaMemset(dalone.get(), 0xff, dalone.bytes()));  // rows outside the second sequence stay NaN
    aa.out = dalone.get<float>();
    prefill_attention(aa, s, dsingle.get<int32_t>(), 70, nullptr);
    const std::vector<float> alone = to_host<float>(dalone, want.size());
    ASSERT_EQ(0, std::memcmp(alone.data() + 150 * q_dim, got.data() + 150 * q_dim, static_cast<size_t>(70 * q_dim) * 4))
        << "head_dim " << hd;

    // Key ranges split over blocks: within the same bound of the CPU and
    // near the unsplit result, for every split count. 2-4 take all 221
    // tokens (the workspace holds 1024 rows of splits); 5 and 8 take the
    // last two tiles (7 tokens), whose one or two key tiles leave most
    // splits empty. The workspace starts as NaN, so a slot the merge reads
    // but no block wrote shows.
    DeviceBuffer partials(static_cast<size_t>(prefill_attention_workspace_floats(s)) * 4), dsplit(want.size() * 4);
    aa.split_partials = partials.get<float>();
    aa.out = dsplit.get<float>();
    for (const int n_splits : {2, 3, 4, 5, 8}) {
      const bool whole = n_splits <= 4;
      const int64_t first_tile = whole ? 0 : 4, split_tiles = n_tiles - first_tile;
      const int first_token = whole ? 0 : 214, split_tokens = n - first_token;
      TANDEM_CUDA_CHECK(cudaMemset(partials.get(), 0xff, partials.bytes()));
      TANDEM_CUDA_CHECK(cudaMemset(dsplit.get(), 0xff, dsplit.bytes()));
      const int32_t* split_tile_list = dtiles.get<int32_t>() + 3 * first_tile;
      prefill_attention(aa, s, split_tile_list, split_tiles, nullptr, n_splits, split_tokens);
      const std::vector<float> split = to_host<float>(dsplit, want.size());
      double split_err = 0, from_unsplit = 0;
      for (size_t i = static_cast<size_t>(first_token) * q_dim; i < split.size(); ++i) {
        ASSERT_NEAR(split[i], want[i], 3e-3)
            << "head_dim " << hd << ", " << n_splits << " splits, token " << i / q_dim << ", column " << i % q_dim;
        split_err = std::max(split_err, std::fabs(double(split[i]) - want[i]));
        from_unsplit = std::max(from_unsplit, std::fabs(double(split[i]) - got[i]));
      }
      EXPECT_LT(from_unsplit, 2e-3) << n_splits << " splits";
      std::printf("  %d splits: max |diff| %.2e from the CPU, %.2e from one split\n", n_splits, split_err,
                  from_unsplit);
      // Deterministic: the same call again gives the same bits (memcmp: the
      // rows before first_token are the NaN the buffer started as).
      prefill_attention(aa, s, split_tile_list, split_tiles, nullptr, n_splits, split_tokens);
      const std::vector<float> again = to_host<float>(dsplit, want.size());
      ASSERT_EQ(0, std::memcmp(again.data(), split.data(), split.size() * 4)) << n_splits << " splits";
    }
  }
}

// The split count a step takes: about a block an SM where the tiles leave
// SMs idle, four key tiles a split at least, within the workspace.
TEST(CudaKernels, PrefillAttentionSplitsFillTheGpu) {
  AttentionShape s;
  s.n_heads = 32;
  s.n_kv_heads = 8;
  s.head_dim = 128;
  s.block_size = 16;
  // 128 tokens at the end of 512 positions: 2 tiles x 32 heads = 64 blocks
  // on 132 SMs, 8 key tiles -> 2 splits of 4.
  EXPECT_EQ(prefill_attention_splits(s, 2, 128, 512, 132), 2);
  EXPECT_EQ(prefill_attention_splits(s, 2, 128, 2048, 132), 2);  // a block an SM bounds it
  EXPECT_EQ(prefill_attention_splits(s, 2, 128, 448, 132), 1);   // 7 key tiles: one split
  EXPECT_EQ(prefill_attention_splits(s, 4, 220, 640, 132), 2);   // 128 blocks: still two
  EXPECT_EQ(prefill_attention_splits(s, 8, 512, 512, 132), 1);   // 256 blocks fill the GPU
  EXPECT_EQ(prefill_attention_splits(s, 1, 64, 2048, 132), 4);   // 32 blocks
  EXPECT_EQ(prefill_attention_splits(s, 1, 1, 8192, 528), kMaxPrefillSplits);
  EXPECT_EQ(prefill_attention_splits(s, 1, 600, 8192, 1000), 1);  // the workspace: 2 x 600 > 1024 rows
}

// An E4M3 KV cache (KvCacheType::Fp8E4M3): every attention kernel gives the
// bits it gives on an f16 cache holding the same values (E4M3 widens to
// f16 exactly), and qkv_finish writes each k and v value rounded to E4M3
// (saturating) where the f16 cache would hold it rounded to f16.
TEST(CudaKernels, Fp8KvCacheGivesTheBitsOfItsValuesInF16) {
  int device = 0;
  TANDEM_CUDA_CHECK(cudaGetDevice(&device));
  auto e4m3 = [](float x) { return static_cast<uint8_t>(__nv_cvt_float_to_fp8(x, __NV_SATFINITE, __NV_E4M3)); };
  auto widened = [](uint8_t b) { return static_cast<uint16_t>(__half_raw(__nv_cvt_fp8_to_halfraw(b, __NV_E4M3)).x); };
  struct Case {
    int n_heads, n_kv_heads, head_dim;
  };
  for (const Case cs : {Case{8, 2, 128}, Case{6, 3, 48}, Case{4, 2, 64}, Case{4, 4, 96}, Case{4, 2, 32}}) {
    AttentionShape s;
    s.n_heads = cs.n_heads;
    s.n_kv_heads = cs.n_kv_heads;
    s.head_dim = cs.head_dim;
    s.block_size = 16;
    const bool grouped_shape = cs.head_dim != 48;  // the tensor-core decode kernel's head sizes
    // Both caches' kernels; the stages both run (an E4M3 cache's are smaller).
    const int max_stages = grouped_shape ? std::min(grouped_decode_attention_init(s, device, KvCacheType::Fp8E4M3),
                                                    grouped_decode_attention_init(s, device, KvCacheType::F16))
                                         : 0;
    ASSERT_TRUE(prefill_attention_init(s, device));
    const int hd = s.head_dim, q_dim = s.n_heads * hd, kv_dim = s.n_kv_heads * hd;
    // Decode tokens at these positions (a sequence each), then one prompt
    // chunk of 90 tokens at positions 40.. of another sequence.
    const std::vector<int32_t> decode_positions = {700, 0, 5, 15, 16, 63, 64, 300};
    const int n_dec = static_cast<int>(decode_positions.size());
    std::vector<int32_t> tables, offsets, positions;
    for (int i = 0; i <= n_dec; ++i) {
      const int last = i < n_dec ? decode_positions[static_cast<size_t>(i)] : 129;
      const int32_t offset = static_cast<int32_t>(tables.size());
      for (int b = 0; b * s.block_size <= last; ++b) tables.push_back(i + (n_dec + 1) * b);
      if (i < n_dec) {
        offsets.push_back(offset);
        positions.push_back(decode_positions[static_cast<size_t>(i)]);
      } else {
        for (int p = 40; p < 130; ++p) {
          offsets.push_back(offset);
          positions.push_back(p);
        }
      }
    }
    const int n = static_cast<int>(positions.size());
    const int n_blocks = *std::max_element(tables.begin(), tables.end()) + 1;
    const size_t cache_elems = static_cast<size_t>(n_blocks * s.block_size * kv_dim);
    // Values past E4M3's range (saturated) and in its subnormals too.
    const std::vector<float> kf = random_vector(cache_elems, 81), vf = random_vector(cache_elems, 82);
    std::vector<uint8_t> k8(cache_elems), v8(cache_elems);
    std::vector<uint16_t> k16(cache_elems), v16(cache_elems);
    for (size_t i = 0; i < cache_elems; ++i) {
      const float spread = i % 97 == 0 ? 1000.0f : i % 13 == 0 ? 0.01f : 4.0f;
      k8[i] = e4m3(kf[i] * spread);
      v8[i] = e4m3(vf[i] * spread);
      k16[i] = widened(k8[i]);
      v16[i] = widened(v8[i]);
    }
    const std::vector<float> q = random_vector(static_cast<size_t>(n * q_dim), 83);
    DeviceBuffer dq = to_device(q), dk8 = to_device(k8), dv8 = to_device(v8), dk16 = to_device(k16),
                 dv16 = to_device(v16), dpos = to_device(positions), doff = to_device(offsets),
                 dtab = to_device(tables), dout8(static_cast<size_t>(n * q_dim) * 4),
                 dout16(static_cast<size_t>(n * q_dim) * 4), partials(kAttentionSplitSlots * 258 * 4),
                 counters(kAttentionSplitSlots * 4);
    TANDEM_CUDA_CHECK(cudaMemset(counters.get(), 0, counters.bytes()));
    AttentionArgs f16;
    f16.q = dq.get<float>();
    f16.q_stride = q_dim;
    f16.k_cache = dk16.get();
    f16.v_cache = dv16.get();
    f16.positions = dpos.get<int32_t>();
    f16.table_offsets = doff.get<int32_t>();
    f16.block_tables = dtab.get<int32_t>();
    f16.scale = 1.0f / std::sqrt(static_cast<float>(hd));
    f16.split_partials = partials.get<float>();
    f16.split_counters = counters.get<int32_t>();
    f16.out = dout16.get<float>();
    AttentionArgs fp8 = f16;
    fp8.k_cache = dk8.get();
    fp8.v_cache = dv8.get();
    fp8.cache_type = KvCacheType::Fp8E4M3;
    fp8.out = dout8.get<float>();
    // Runs `kernel` on both caches into NaN-filled outputs; the first
    // `rows` rows must match bit for bit (and be finite).
    auto same_bits = [&](const char* what, int rows, auto&& kernel) {
      TANDEM_CUDA_CHECK(cudaMemset(dout16.get(), 0xff, dout16.bytes()));
      TANDEM_CUDA_CHECK(cudaMemset(dout8.get(), 0xff, dout8.bytes()));
      kernel(f16);
      kernel(fp8);
      const std::vector<float> a = to_host<float>(dout16, static_cast<size_t>(rows * q_dim));
      const std::vector<float> b = to_host<float>(dout8, static_cast<size_t>(rows * q_dim));
      for (size_t i = 0; i < a.size(); ++i) ASSERT_TRUE(std::isfinite(a[i])) << what << ", head size " << hd << ", " << i;
      ASSERT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * 4)) << what << ", head size " << hd;
    };
    for (int splits : {1, 3})
      for (int heads : {1, 2})
        for (bool decode_only : {false, true})  // decode_only: the early loads before the wait, and the reload
          same_bits("paged_attention", n_dec, [&](const AttentionArgs& a) {
            AttentionArgs b = a;
            b.decode_only = decode_only;
            paged_attention(b, s, n_dec, splits, nullptr, heads);
          });
    for (int stages = 2; stages <= max_stages; ++stages)
      same_bits("grouped_decode_attention", n_dec,
                [&](const AttentionArgs& a) { grouped_decode_attention(a, s, n_dec, stages, nullptr); });
    // The prompt chunk: its tiles, after the decode tokens.
    std::vector<int32_t> tiles(static_cast<size_t>(3 * n));
    const int64_t n_tiles = plan_prefill_tiles(positions.data(), offsets.data(), n_dec, n - n_dec, tiles.data());
    DeviceBuffer dtiles = to_device(tiles);
    for (int splits : {1, 2})
      same_bits("prefill_attention", n, [&](const AttentionArgs& a) {
        AttentionArgs prompt = a;
        prompt.split_partials = nullptr;
        DeviceBuffer work(static_cast<size_t>(prefill_attention_workspace_floats(s)) * 4);
        if (splits > 1) prompt.split_partials = work.get<float>();
        // The decode rows too, so that all n rows are written.
        paged_attention(a, s, n_dec, 1, nullptr, 1);
        prefill_attention(prompt, s, dtiles.get<int32_t>(), n_tiles, nullptr, splits, n - n_dec);
      });

    // qkv_finish into an E4M3 cache: each value where the f16 cache has it,
    // rounded to E4M3 (k after RoPE: its final f32 row stays in the k buffer).
    const int n_tok = 5;
    const int qkv_dim = q_dim + 2 * kv_dim;
    std::vector<float> qkv = random_vector(static_cast<size_t>(n_tok * qkv_dim), 84);
    for (size_t i = 0; i < qkv.size(); i += 37) qkv[i] *= 500.0f;  // some past 448
    const RopeTables rope = rope_tables(64, hd);
    const std::vector<int32_t> tok_pos = {0, 1, 2, 9, 33}, tok_slots = {3, 17, 40, 0, 63};
    DeviceBuffer dqkv = to_device(qkv), dcos = to_device(rope.cos), dsin = to_device(rope.sin),
                 dtp = to_device(tok_pos), dts = to_device(tok_slots), kc(64 * kv_dim), vc(64 * kv_dim);
    TANDEM_CUDA_CHECK(cudaMemset(kc.get(), 0x7f, kc.bytes()));  // NaN in E4M3: every written slot changes
    TANDEM_CUDA_CHECK(cudaMemset(vc.get(), 0x7f, vc.bytes()));
    QkvFinishArgs qa;
    qa.q = dqkv.get<float>();
    qa.k = dqkv.get<float>() + q_dim;
    qa.v = dqkv.get<float>() + q_dim + kv_dim;
    qa.stride = qkv_dim;
    qa.rope_cos = dcos.get<float>();
    qa.rope_sin = dsin.get<float>();
    qa.positions = dtp.get<int32_t>();
    qa.slots = dts.get<int32_t>();
    qa.k_cache = kc.get();
    qa.v_cache = vc.get();
    qa.cache_type = KvCacheType::Fp8E4M3;
    qkv_finish(qa, s, n_tok, nullptr);
    const std::vector<float> finished = to_host<float>(dqkv, qkv.size());
    const std::vector<uint8_t> kgot = to_host<uint8_t>(kc, kc.bytes()), vgot = to_host<uint8_t>(vc, vc.bytes());
    for (int t = 0; t < n_tok; ++t)
      for (int i = 0; i < kv_dim; ++i) {
        const size_t at = static_cast<size_t>(tok_slots[static_cast<size_t>(t)] * kv_dim + i);
        const size_t row = static_cast<size_t>(t * qkv_dim);
        ASSERT_EQ(kgot[at], e4m3(finished[row + q_dim + i])) << "k, token " << t << ", column " << i;
        ASSERT_EQ(vgot[at], e4m3(qkv[row + q_dim + kv_dim + i])) << "v, token " << t << ", column " << i;
      }
  }
}

// 8-bit weights to f16 for the prefill GEMM: the bits of scale * q rounded,
// for a slice of rows starting past row 0.
TEST(CudaKernels, DequantizeToF16MatchesHostRounding) {
  const int64_t rows = 37, cols = 96, row0 = 5, n_rows = 29;
  for (const WeightFormat format : {WeightFormat::Q8_0, WeightFormat::I8Row, WeightFormat::F8Row}) {
    std::mt19937 rng(51);
    std::vector<uint8_t> q(static_cast<size_t>(rows * cols));
    for (uint8_t& v : q) {
      v = static_cast<uint8_t>(rng());
      if (format == WeightFormat::F8Row && (v & 0x7f) == 0x7f) v &= 0xfe;  // no E4M3 NaN
    }
    std::vector<float> want(static_cast<size_t>(n_rows * cols));
    DeviceBuffer dq = to_device(q), dscales, dout(want.size() * 2);
    if (format == WeightFormat::Q8_0) {
      std::vector<uint16_t> sc(static_cast<size_t>(rows * cols / 32));
      for (uint16_t& v : sc) v = f32_to_f16(std::ldexp(1.0f + static_cast<float>(rng() % 1000) / 1000.0f, -9));
      dscales = to_device(sc);
      for (int64_t r = 0; r < n_rows; ++r)
        for (int64_t c = 0; c < cols; ++c)
          want[static_cast<size_t>(r * cols + c)] =
              f16_to_f32(sc[static_cast<size_t>((row0 + r) * (cols / 32) + c / 32)]) *
              static_cast<float>(static_cast<int8_t>(q[static_cast<size_t>((row0 + r) * cols + c)]));
    } else {
      std::vector<float> sc(static_cast<size_t>(rows));
      for (float& v : sc) v = std::ldexp(1.0f + static_cast<float>(rng() % 1000) / 1000.0f, -9);
      dscales = to_device(sc);
      for (int64_t r = 0; r < n_rows; ++r)
        for (int64_t c = 0; c < cols; ++c) {
          const uint8_t b = q[static_cast<size_t>((row0 + r) * cols + c)];
          const float v = format == WeightFormat::I8Row ? static_cast<float>(static_cast<int8_t>(b)) : e4m3_to_float(b);
          want[static_cast<size_t>(r * cols + c)] = sc[static_cast<size_t>(row0 + r)] * v;
        }
    }
    const DeviceMatrix w{format, rows, cols, dq.get(), dscales.get()};
    dequantize_to_f16(w, row0, n_rows, dout.get<__half>(), nullptr);
    const std::vector<uint16_t> got = to_host<uint16_t>(dout, want.size());
    for (size_t i = 0; i < want.size(); ++i)
      ASSERT_EQ(got[i], f32_to_f16(want[i])) << weight_format_name(format) << " " << i;
  }
}


// The down projection's GEMM input: silu(gate) * up rounded to the GEMM's
// type in one kernel has the bits of silu_mul then convert_f32, and the GEMM
// on it the bits of Gemm::run on the f32 product.
TEST(CudaKernels, SiluMulConvertEqualsSiluMulThenConvert) {
  cudaStream_t stream;
  TANDEM_CUDA_CHECK(cudaStreamCreate(&stream));
  {
    Gemm gemm(stream);
    for (const DType dtype : {DType::F16, DType::BF16}) {
      for (const int64_t n : {int64_t{96}, int64_t{37}}) {
        const int64_t n_tokens = 7, rows = 24;
        const std::vector<float> gu = random_vector(static_cast<size_t>(n_tokens * 2 * n), 61, 2.0f);
        DeviceBuffer dgu = to_device(gu), act(static_cast<size_t>(n_tokens * n) * 4),
            want(static_cast<size_t>(n_tokens * n) * 2), got(static_cast<size_t>(n_tokens * n) * 2);
        silu_mul(dgu.get<float>(), n_tokens, n, act.get<float>(), stream);
        convert_f32(act.get<float>(), n_tokens * n, dtype, want.get(), stream);
        silu_mul_convert(dgu.get<float>(), n_tokens, n, dtype, got.get(), stream);
        ASSERT_EQ(to_host<uint16_t>(got, static_cast<size_t>(n_tokens * n)),
                  to_host<uint16_t>(want, static_cast<size_t>(n_tokens * n)))
            << dtype_name(dtype) << ", " << n << " columns";
        TestMatrix w = make_matrix(dtype, rows, n, 62);
        DeviceBuffer y1(static_cast<size_t>(n_tokens * rows) * 4), y2(static_cast<size_t>(n_tokens * rows) * 4);
        gemm.run(w.device, act.get<float>(), n_tokens, y1.get<float>(), rows, false);
        gemm.run_converted(w.device, got.get(), n_tokens, y2.get<float>(), rows, false);
        ASSERT_EQ(to_host<float>(y1, static_cast<size_t>(n_tokens * rows)),
                  to_host<float>(y2, static_cast<size_t>(n_tokens * rows)));
      }
    }
  }
  cudaStreamDestroy(stream);
}


// Greedy sampling on the GPU against the host's (Sampler with temperature 0):
// random rows, ties (the lowest id wins), NaN (never wins), +inf (the first
// wins), a row of NaN and -inf (-1, where the sampler throws), a row
// stride wider than the row.
TEST(CudaKernels, ArgmaxRowsFollowsTheSamplersGreedyRule) {
  const int64_t n_cols = 5000, ld = 5003;
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  std::vector<std::vector<float>> rows;
  for (uint32_t seed = 0; seed < 4; ++seed) rows.push_back(random_vector(static_cast<size_t>(n_cols), 70 + seed));
  rows[1][17] = rows[1][4000] = 9.0f;  // a tie: 17
  rows[2][3] = nan;
  rows[2][2500] = nan;
  rows[2][4999] = 7.5f;
  rows[3][100] = inf;
  rows[3][90] = nan;
  rows[3][200] = inf;  // the first +inf: 100
  rows.emplace_back(static_cast<size_t>(n_cols), -inf);
  rows.back()[7] = nan;
  // Rows meet across the GPU's blocks of 4096 columns: a tie across blocks
  // (100), the best only in the second block (4998, +inf).
  rows.push_back(random_vector(static_cast<size_t>(n_cols), 80));
  rows.back()[4500] = rows.back()[4096] = rows.back()[100] = 8.0f;
  rows.emplace_back(static_cast<size_t>(n_cols), -inf);
  rows.back()[4998] = inf;
  // The best is zero: -0 in the first block, +0 later in the second (100).
  rows.emplace_back(static_cast<size_t>(n_cols), -1.0f);
  rows.back()[100] = -0.0f;
  rows.back()[4500] = 0.0f;
  std::vector<float> host(rows.size() * static_cast<size_t>(ld), 1e30f);  // padding past n_cols never counts
  for (size_t r = 0; r < rows.size(); ++r) std::copy(rows[r].begin(), rows[r].end(), host.begin() + r * ld);
  DeviceBuffer d = to_device(host), out(rows.size() * 4);
  DeviceBuffer keys(rows.size() * 8), counters(rows.size() * 4);
  ASSERT_EQ(cudaMemset(keys.get(), 0, keys.bytes()), cudaSuccess);
  ASSERT_EQ(cudaMemset(counters.get(), 0, counters.bytes()), cudaSuccess);
  const ArgmaxWorkspace work{keys.get<unsigned long long>(), counters.get<int32_t>()};
  argmax_rows(d.get<float>(), static_cast<int64_t>(rows.size()), n_cols, ld, out.get<int32_t>(), work, nullptr);
  const std::vector<int32_t> got = to_host<int32_t>(out, rows.size());
  // Again with the same workspace: the same ids.
  ASSERT_EQ(cudaMemset(out.get(), 0xff, out.bytes()), cudaSuccess);
  argmax_rows(d.get<float>(), static_cast<int64_t>(rows.size()), n_cols, ld, out.get<int32_t>(), work, nullptr);
  EXPECT_EQ(to_host<int32_t>(out, rows.size()), got);
  // The workspace is left zero, ready for the next call.
  EXPECT_EQ(to_host<unsigned long long>(keys, rows.size()), std::vector<unsigned long long>(rows.size(), 0));
  EXPECT_EQ(to_host<int32_t>(counters, rows.size()), std::vector<int32_t>(rows.size(), 0));
  SamplingParams greedy;
  greedy.temperature = 0;
  for (size_t r = 0; r < rows.size(); ++r) {
    Sampler sampler(greedy);
    std::vector<float> row = rows[r];
    int32_t want = -1;
    try {
      want = sampler.sample(row, {}, {});
    } catch (const Error&) {
      want = -1;
    }
    EXPECT_EQ(got[r], want) << "row " << r;
  }
  EXPECT_EQ(got[1], 17);
  EXPECT_EQ(got[3], 100);
  EXPECT_EQ(got[4], -1);
  EXPECT_EQ(got[5], 100);
  EXPECT_EQ(got[6], 4998);
  EXPECT_EQ(got[7], 100);

  // A vocabulary-wide row (32 blocks): the same value at both ends and in
  // between goes to the first.
  const int64_t vocab = 128256;
  std::vector<float> wide = random_vector(static_cast<size_t>(vocab), 81);
  wide[128000] = wide[60000] = wide[5] = 9.0f;
  DeviceBuffer dw = to_device(wide), one(4);
  argmax_rows(dw.get<float>(), 1, vocab, vocab, one.get<int32_t>(), work, nullptr);
  EXPECT_EQ(to_host<int32_t>(one, 1)[0], 5);
}


// Sampling on the GPU against its CPU reference: the same token for every
// row, parameter set and draw (the rule is exact, so equality is the test).
// Rows of a real vocabulary and of a few tokens, logits with many ties,
// NaN, +inf, nothing above -inf, penalties; a row stride wider than the row,
// rows in one launch out of order.
TEST(CudaKernels, SampleRowsPicksTheReferencesToken) {
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  struct Params {
    bool greedy;
    float temperature;
    int top_k;
    float top_p;
    float min_p;
    float repetition;
    bool subtract;
  };
  const Params params[] = {
      {false, 1.0f, 0, 1.0f, 0.0f, 1.0f, false},   {false, 0.7f, 40, 1.0f, 0.0f, 1.0f, false},
      {false, 1.3f, 0, 0.9f, 0.0f, 1.0f, false},   {false, 0.9f, 50, 0.95f, 0.05f, 1.0f, false},
      {false, 1.0f, 0, 0.5f, 0.0f, 1.3f, true},    {false, 1.0f, 1, 1.0f, 0.0f, 1.0f, false},
      {false, 0.3f, 0, 1e-9f, 0.0f, 1.0f, false},  {false, 1.5f, 0, 1.0f, 0.2f, 1.0f, true},
      {true, 1.0f, 0, 1.0f, 0.0f, 1.2f, true},     {false, 1.0f, 1000000, 0.99f, 0.0f, 1.0f, false},
  };
  const uint64_t draws[] = {0, 1, 1ull << 52, (1ull << 53) - 1, 123456789012345ull, 0x0f0f0f0f0f0full};
  for (const int64_t n_cols : {int64_t{128256}, int64_t{1000}, int64_t{7}}) {
    const int64_t ld = n_cols + 5;
    std::vector<std::vector<float>> rows;
    rows.push_back(random_vector(static_cast<size_t>(n_cols), 500, 3.0f));
    std::vector<float> ties = random_vector(static_cast<size_t>(n_cols), 501, 2.0f);
    for (float& x : ties) x = std::round(x * 2.0f) / 2.0f;  // many equal logits
    rows.push_back(ties);
    std::vector<float> odd = random_vector(static_cast<size_t>(n_cols), 502, 1.0f);
    odd[0] = nan;
    odd[static_cast<size_t>(n_cols / 2)] = -inf;
    odd[static_cast<size_t>(n_cols - 1)] = nan;
    rows.push_back(odd);
    std::vector<float> infs = random_vector(static_cast<size_t>(n_cols), 503, 1.0f);
    infs[1] = inf;
    infs[static_cast<size_t>(n_cols - 2)] = inf;
    rows.push_back(infs);
    rows.emplace_back(static_cast<size_t>(n_cols), 0.0f);  // every token alike
    std::vector<float> none(static_cast<size_t>(n_cols), -inf);
    none[static_cast<size_t>(n_cols / 3)] = nan;
    rows.push_back(none);
    // Every (row, parameters, draw) is one logits row of the launch.
    struct Job {
      size_t row;
      RowSampling sampling;
    };
    std::vector<Job> jobs;
    for (size_t r = 0; r < rows.size(); ++r) {
      for (const Params& p : params) {
        for (const uint64_t draw : draws) {
          RowSampling rs;
          rs.greedy = p.greedy;
          rs.scale = 1.0f / p.temperature;
          rs.top_k = p.top_k;
          rs.top_p = p.top_p;
          rs.min_p = p.min_p;
          rs.repetition_penalty = p.repetition;
          rs.draw = draw;
          if (p.repetition != 1.0f || p.subtract) {
            for (int32_t id = 0; id < std::min<int64_t>(n_cols, 3000); id += 3) {
              rs.penalties.push_back({id, p.repetition != 1.0f ? 1 : 0, p.subtract && id % 2 ? 0.75f : 0.0f});
            }
          }
          jobs.push_back({r, rs});
          if (p.greedy) break;  // greedy rows take no draw
        }
      }
    }
    std::vector<float> host(jobs.size() * static_cast<size_t>(ld), 1e30f);  // padding past n_cols never counts
    std::vector<SampleRowArgs> args;
    std::vector<PenaltyEntry> entries;
    for (size_t j = 0; j < jobs.size(); ++j) {
      // Job j sits in logits row (j * 7) % jobs (distinct: 7 does not divide it).
      const size_t slot = (j * 7) % jobs.size();
      std::copy(rows[jobs[j].row].begin(), rows[jobs[j].row].end(), host.begin() + slot * ld);
      const RowSampling& rs = jobs[j].sampling;
      SampleRowArgs a;
      a.row = static_cast<int64_t>(slot);
      a.draw = rs.draw;
      a.scale = rs.scale;
      a.top_p = rs.top_p;
      a.min_p = rs.min_p;
      a.repetition_penalty = rs.repetition_penalty;
      a.top_k = rs.top_k;
      a.greedy = rs.greedy ? 1 : 0;
      a.penalty_begin = static_cast<int32_t>(entries.size());
      entries.insert(entries.end(), rs.penalties.begin(), rs.penalties.end());
      a.penalty_end = static_cast<int32_t>(entries.size());
      args.push_back(a);
    }
    ASSERT_NE(jobs.size() % 7, 0u) << "rows must be distinct";
    entries.push_back({});  // never empty
    DeviceBuffer d = to_device(host), d_args = to_device(args), d_entries = to_device(entries);
    DeviceBuffer out(jobs.size() * 4);
    sample_rows(d.get<float>(), n_cols, ld, d_args.get<SampleRowArgs>(), static_cast<int>(args.size()),
                d_entries.get<PenaltyEntry>(), out.get<int32_t>(), nullptr);
    const std::vector<int32_t> got = to_host<int32_t>(out, jobs.size());
    int mismatches = 0;
    std::set<int32_t> distinct;
    for (size_t j = 0; j < jobs.size(); ++j) {
      std::vector<float> row = rows[jobs[j].row];
      const int32_t want = sample_row_reference(row, jobs[j].sampling);
      const int32_t have = got[static_cast<size_t>(args[j].row)];
      distinct.insert(have);
      if (have != want && ++mismatches <= 10) {
        ADD_FAILURE() << "vocab " << n_cols << ", row kind " << jobs[j].row << ", job " << j << ": GPU " << have
                      << ", reference " << want;
      }
    }
    EXPECT_EQ(mismatches, 0) << "vocab " << n_cols;
    EXPECT_GT(distinct.size(), n_cols > 7 ? 20u : 4u) << "the draws should reach many tokens";
  }
}

// Nearest E4M3 value of x (ties to the even code), saturating at +-448.
float round_to_e4m3(float x) {
  float best = 0.0f, best_err = INFINITY;
  int best_code = 0;
  for (int code = 0; code < 256; ++code) {
    if ((code & 0x7f) == 0x7f) continue;  // NaN
    const float v = e4m3_to_float(static_cast<uint8_t>(code));
    const float err = std::fabs(v - std::fmin(448.0f, std::fmax(-448.0f, x)));
    if (err < best_err || (err == best_err && (code & 1) == 0 && (best_code & 1) == 1)) {
      best = v;
      best_err = err;
      best_code = code;
    }
  }
  return best;
}

// FP8 rows on FP8 tensor cores (cuBLASLt): x quantized per token to E4M3,
// the product scaled by row and token scales, accumulating into a wider y.
// Against matmul_ref on the dequantized weights and the host's rounding of x.
TEST(CudaKernels, Fp8GemmMatchesCpuOnQuantizedActivations) {
  cudaStream_t stream;
  TANDEM_CUDA_CHECK(cudaStreamCreate(&stream));
  {
    Gemm gemm(stream);
    if (!gemm.fp8_tensor_cores()) GTEST_SKIP() << "no FP8 tensor cores on this GPU";
    const int64_t rows = 96, cols = 512, ldy = 100;
    TestMatrix src = make_matrix(DType::BF16, rows, cols, 81);
    DeviceBuffer q(static_cast<size_t>(rows * cols)), scales(static_cast<size_t>(rows) * 4);
    const DeviceMatrix w{WeightFormat::F8Row, rows, cols, q.get(), scales.get()};
    quantize_rows(src.device, w, stream);
    const std::vector<uint8_t> q_host = to_host<uint8_t>(q, static_cast<size_t>(rows * cols));
    const std::vector<float> s_host = to_host<float>(scales, static_cast<size_t>(rows));
    std::vector<float> wdq(q_host.size());
    for (size_t i = 0; i < wdq.size(); ++i) wdq[i] = e4m3_to_float(q_host[i]) * s_host[i / static_cast<size_t>(cols)];
    // Untuned (the heuristic's first algorithm), then tuned, preferring
    // another algorithm where cuBLASLt offers one.
    for (const bool tuned : {false, true}) {
    if (tuned) {
      const std::vector<Gemm::TunedBucket> buckets = gemm.tune({&w}, 64, /*prefer_lt=*/true);
      ASSERT_FALSE(buckets.empty()) << "FP8 tuning timed no bucket";
      int other = 0;
      for (const auto& b : buckets) other += b.algo >= 0;
      // Buckets where cuBLASLt offered a second algorithm now take it.
      std::printf("fp8 tuning: %d of %zu buckets take another algorithm than the heuristic's first\n", other,
                  buckets.size());
    }
    for (const int64_t n : {int64_t{5}, int64_t{37}}) {
      std::vector<float> x = random_vector(static_cast<size_t>(n * cols), 82);
      std::vector<float> xq(x.size());
      for (int64_t t = 0; t < n; ++t) {
        float m = 0;
        for (int64_t c = 0; c < cols; ++c) m = std::max(m, std::fabs(x[static_cast<size_t>(t * cols + c)]));
        const float scale = m / 448.0f;
        for (int64_t c = 0; c < cols; ++c) {
          const size_t i = static_cast<size_t>(t * cols + c);
          xq[i] = round_to_e4m3(x[i] / scale) * scale;
        }
      }
      std::vector<float> want(static_cast<size_t>(n * rows));
      cpu::matmul_ref(cpu::WeightMatrix{DType::F32, rows, cols, wdq.data()}, xq.data(), n, want.data());
      std::vector<float> y0(static_cast<size_t>(n * ldy), 0.5f);
      DeviceBuffer dx = to_device(x), dy = to_device(y0);
      for (const bool accumulate : {false, true}) {
        TANDEM_CUDA_CHECK(cudaMemcpy(dy.get(), y0.data(), y0.size() * 4, cudaMemcpyHostToDevice));
        gemm.run(w, dx.get<float>(), n, dy.get<float>(), ldy, accumulate);
        const std::vector<float> got = to_host<float>(dy, y0.size());
        double max_err = 0;
        for (int64_t t = 0; t < n; ++t) {
          for (int64_t r = 0; r < rows; ++r) {
            const double expect = want[static_cast<size_t>(t * rows + r)] + (accumulate ? 0.5 : 0.0);
            max_err = std::max(max_err, std::fabs(got[static_cast<size_t>(t * ldy + r)] - expect));
          }
          for (int64_t r = rows; r < ldy; ++r) ASSERT_EQ(got[static_cast<size_t>(t * ldy + r)], 0.5f) << "past the rows";
        }
        std::printf("fp8 gemm%s, %lld tokens%s: max |diff| %.2e\n", tuned ? " (tuned)" : "", static_cast<long long>(n),
                    accumulate ? ", accumulating" : "", max_err);
        EXPECT_LT(max_err, 2e-2);
      }
    }
    }
  }
  cudaStreamDestroy(stream);
}

// The norm that quantizes for the FP8 GEMM gives the bits of rmsnorm then
// quantize_tokens_fp8, for its output and its quantized rows, at each of
// its widths, from gathered rows, and where it falls back (past 8192).
TEST(CudaKernels, RmsnormFp8MatchesRmsnormThenQuantize) {
  for (const int64_t n : {int64_t{512}, int64_t{2048}, int64_t{4096}, int64_t{5000}, int64_t{8192}, int64_t{10000}}) {
    const int64_t rows = 5;
    const std::vector<float> x = random_vector(static_cast<size_t>(rows * n), 140 + static_cast<uint32_t>(n), 3.0f);
    const std::vector<float> weight = random_vector(static_cast<size_t>(n), 141);
    const std::vector<int32_t> pick = {4, 0, 2};
    DeviceBuffer dx = to_device(x), dw = to_device(weight), dpick = to_device(pick);
    for (const bool gathered : {false, true}) {
      const int32_t* idx = gathered ? dpick.get<int32_t>() : nullptr;
      const int64_t n_out = gathered ? static_cast<int64_t>(pick.size()) : rows;
      DeviceBuffer want(static_cast<size_t>(n_out * n) * 4), got(static_cast<size_t>(n_out * n) * 4);
      DeviceBuffer q_want(static_cast<size_t>(n_out * n)), s_want(static_cast<size_t>(n_out) * 4);
      DeviceBuffer q_got(static_cast<size_t>(n_out * n)), s_got(static_cast<size_t>(n_out) * 4);
      rmsnorm(dx.get<float>(), idx, dw.get<float>(), 1e-5f, n_out, n, want.get<float>(), nullptr);
      quantize_tokens_fp8(want.get<float>(), n_out, n, q_want.get<uint8_t>(), s_want.get<float>(), nullptr);
      // Only the quantized rows wanted: the same bits, and where the fused
      // kernel takes the row (up to 8192 columns) out is left alone.
      DeviceBuffer q_only(static_cast<size_t>(n_out * n)), s_only(static_cast<size_t>(n_out) * 4);
      TANDEM_CUDA_CHECK(cudaMemset(got.get(), 0x7f, got.bytes()));
      rmsnorm_fp8(dx.get<float>(), idx, dw.get<float>(), 1e-5f, n_out, n, got.get<float>(), q_only.get<uint8_t>(),
                  s_only.get<float>(), nullptr, false);
      if (n <= 8192) {
        const auto untouched = to_host<uint8_t>(got, got.bytes());
        ASSERT_TRUE(std::all_of(untouched.begin(), untouched.end(), [](uint8_t b) { return b == 0x7f; }))
            << n << " columns: out written without write_out";
      }
      rmsnorm_fp8(dx.get<float>(), idx, dw.get<float>(), 1e-5f, n_out, n, got.get<float>(), q_got.get<uint8_t>(),
                  s_got.get<float>(), nullptr);
      const std::string what = std::to_string(n) + " columns" + (gathered ? ", gathered" : "");
      const auto ow = to_host<float>(want, static_cast<size_t>(n_out * n));
      const auto og = to_host<float>(got, ow.size());
      ASSERT_EQ(0, std::memcmp(ow.data(), og.data(), ow.size() * 4)) << what << ": the norm";
      const auto sw = to_host<float>(s_want, static_cast<size_t>(n_out));
      const auto sg = to_host<float>(s_got, sw.size());
      ASSERT_EQ(0, std::memcmp(sw.data(), sg.data(), sw.size() * 4)) << what << ": scales";
      const auto qw = to_host<uint8_t>(q_want, static_cast<size_t>(n_out * n));
      const auto qg = to_host<uint8_t>(q_got, qw.size());
      for (size_t i = 0; i < qw.size(); ++i) ASSERT_EQ(qw[i], qg[i]) << what << ", element " << i;
      const auto so = to_host<float>(s_only, sw.size());
      ASSERT_EQ(0, std::memcmp(sw.data(), so.data(), sw.size() * 4)) << what << ": scales without out";
      const auto qo = to_host<uint8_t>(q_only, qw.size());
      ASSERT_EQ(0, std::memcmp(qw.data(), qo.data(), qw.size())) << what << ": quantized rows without out";
    }
  }
}

// The norm after an FP8 residual update gives the bits of scale_product
// accumulating into x and then rmsnorm_fp8, x written back included; also
// with its output scales written over the update's token scales, and where
// it falls back (past 8192).
TEST(CudaKernels, AddRmsnormFp8MatchesScaleProductThenNorm) {
  for (const int64_t n : {int64_t{2048}, int64_t{4096}, int64_t{8192}, int64_t{10000}}) {
    const int64_t rows = 6;
    const std::vector<float> x = random_vector(static_cast<size_t>(rows * n), 160, 2.0f);
    const std::vector<float> update = random_vector(static_cast<size_t>(rows * n), 161, 50.0f);
    std::vector<float> row_scale = random_vector(static_cast<size_t>(n), 162);
    for (float& r : row_scale) r = 0.001f + 0.01f * std::fabs(r);
    const std::vector<float> token_scale = {0.5f, 1.0f, 0.01f, 2.0f, 0.3f, 1.5f};
    const std::vector<float> weight = random_vector(static_cast<size_t>(n), 163);
    DeviceBuffer du = to_device(update), drs = to_device(row_scale), dw = to_device(weight);
    // Two kernels.
    DeviceBuffer x_want = to_device(x), dts = to_device(token_scale);
    DeviceBuffer out_want(static_cast<size_t>(rows * n) * 4), q_want(static_cast<size_t>(rows * n)),
        s_want(static_cast<size_t>(rows) * 4);
    scale_product(du.get<float>(), rows, n, drs.get<float>(), dts.get<float>(), x_want.get<float>(), n, true, nullptr);
    rmsnorm_fp8(x_want.get<float>(), nullptr, dw.get<float>(), 1e-5f, rows, n, out_want.get<float>(),
                q_want.get<uint8_t>(), s_want.get<float>(), nullptr);
    // One, its scales over the update's.
    DeviceBuffer x_got = to_device(x), ts_got = to_device(token_scale);
    DeviceBuffer out_got(static_cast<size_t>(rows * n) * 4), q_got(static_cast<size_t>(rows * n));
    add_rmsnorm_fp8(x_got.get<float>(), du.get<float>(), drs.get<float>(), ts_got.get<float>(), dw.get<float>(), 1e-5f,
                    rows, n, out_got.get<float>(), q_got.get<uint8_t>(), ts_got.get<float>(), nullptr);
    const size_t elems = static_cast<size_t>(rows * n);
    const std::string what = std::to_string(n) + " columns";
    for (auto [a, b, name] : {std::tuple{&x_want, &x_got, "x"}, std::tuple{&out_want, &out_got, "the norm"}}) {
      const auto wa = to_host<float>(*a, elems), wb = to_host<float>(*b, elems);
      ASSERT_EQ(0, std::memcmp(wa.data(), wb.data(), elems * 4)) << what << ": " << name;
    }
    const auto sw = to_host<float>(s_want, static_cast<size_t>(rows)), sg = to_host<float>(ts_got, sw.size());
    ASSERT_EQ(0, std::memcmp(sw.data(), sg.data(), sw.size() * 4)) << what << ": scales";
    const auto qw = to_host<uint8_t>(q_want, elems), qg = to_host<uint8_t>(q_got, elems);
    ASSERT_EQ(0, std::memcmp(qw.data(), qg.data(), elems)) << what << ": quantized rows";
    // Only the quantized rows wanted: x and q the same, out left alone
    // where the fused kernel takes the row.
    DeviceBuffer x_only = to_device(x), ts_only = to_device(token_scale), q_only(elems);
    TANDEM_CUDA_CHECK(cudaMemset(out_got.get(), 0x7f, out_got.bytes()));
    add_rmsnorm_fp8(x_only.get<float>(), du.get<float>(), drs.get<float>(), ts_only.get<float>(), dw.get<float>(),
                    1e-5f, rows, n, out_got.get<float>(), q_only.get<uint8_t>(), ts_only.get<float>(), nullptr, false);
    const auto xw = to_host<float>(x_want, elems), xo = to_host<float>(x_only, elems);
    ASSERT_EQ(0, std::memcmp(xw.data(), xo.data(), elems * 4)) << what << ": x without out";
    const auto qo = to_host<uint8_t>(q_only, elems);
    ASSERT_EQ(0, std::memcmp(qw.data(), qo.data(), elems)) << what << ": quantized rows without out";
    const auto so = to_host<float>(ts_only, sw.size());
    ASSERT_EQ(0, std::memcmp(sw.data(), so.data(), sw.size() * 4)) << what << ": scales without out";
    if (n <= 8192) {
      const auto untouched = to_host<uint8_t>(out_got, out_got.bytes());
      ASSERT_TRUE(std::all_of(untouched.begin(), untouched.end(), [](uint8_t b) { return b == 0x7f; }))
          << what << ": out written without write_out";
    }
  }
}

// The FP8 FFN's fused middle gives the bits of the three kernels it
// replaces: scale_product, silu_mul, quantize_tokens_fp8; also with its
// output scales written over its input scales, and from the product in
// BF16 (the values here are BF16's, so both inputs hold the same numbers).
// On sm_90 and later 6 tokens take the rows split among clusters of 8
// blocks, 40 among 7, 131 among 2; 300 take a block a row.
TEST(CudaKernels, SiluMulFp8MatchesItsThreeKernels) {
  for (const int64_t tokens : {int64_t{6}, int64_t{40}, int64_t{131}, int64_t{300}})
  for (const int64_t n : {int64_t{1024}, int64_t{4100}, int64_t{14336}}) {
    SCOPED_TRACE(std::to_string(tokens) + " tokens");
    std::vector<float> d = random_vector(static_cast<size_t>(tokens * 2 * n), 120 + static_cast<uint32_t>(n), 40.0f);
    std::vector<uint16_t> d16(d.size());
    for (size_t i = 0; i < d.size(); ++i) {
      d16[i] = f32_to_bf16(d[i]);
      d[i] = bf16_to_f32(d16[i]);
    }
    std::vector<float> row_scale = random_vector(static_cast<size_t>(2 * n), 121);
    for (float& r : row_scale) r = 0.001f + std::fabs(r) * 0.01f;
    std::vector<float> token_scale = random_vector(static_cast<size_t>(tokens), 122);
    for (float& t : token_scale) t = 0.01f + std::fabs(t) * 3.0f;
    const std::vector<float> first = {0.01f, 0.5f, 1.0f, 0.0f, 3.0f, 0.02f};  // token 3: a row of zeros
    std::copy(first.begin(), first.end(), token_scale.begin());
    DeviceBuffer dd = to_device(d), dd16 = to_device(d16), drs = to_device(row_scale), dts = to_device(token_scale);
    // The three kernels.
    DeviceBuffer scaled(d.size() * 4), act(static_cast<size_t>(tokens * n) * 4);
    DeviceBuffer q_want(static_cast<size_t>(tokens * n)), s_want(static_cast<size_t>(tokens) * 4);
    scale_product(dd.get<float>(), tokens, 2 * n, drs.get<float>(), dts.get<float>(), scaled.get<float>(), 2 * n, false,
                  nullptr);
    silu_mul(scaled.get<float>(), tokens, n, act.get<float>(), nullptr);
    quantize_tokens_fp8(act.get<float>(), tokens, n, q_want.get<uint8_t>(), s_want.get<float>(), nullptr);
    // Fused, into separate scales, then over the input scales.
    DeviceBuffer q_got(static_cast<size_t>(tokens * n)), s_got(static_cast<size_t>(tokens) * 4);
    ASSERT_TRUE(silu_mul_fp8_supports(n));
    silu_mul_fp8(dd.get<float>(), drs.get<float>(), dts.get<float>(), tokens, n, q_got.get<uint8_t>(),
                 s_got.get<float>(), nullptr);
    const auto qw = to_host<uint8_t>(q_want, static_cast<size_t>(tokens * n));
    const auto sw = to_host<float>(s_want, static_cast<size_t>(tokens));
    auto expect_same = [&](const char* what, const DeviceBuffer& q, const DeviceBuffer& sc) {
      const auto qg = to_host<uint8_t>(q, qw.size());
      const auto sg = to_host<float>(sc, sw.size());
      ASSERT_EQ(0, std::memcmp(sw.data(), sg.data(), sw.size() * 4)) << what << ", width " << n << ": scales";
      for (size_t i = 0; i < qw.size(); ++i) ASSERT_EQ(qw[i], qg[i]) << what << ", width " << n << ", element " << i;
    };
    expect_same("separate scales", q_got, s_got);
    EXPECT_EQ(sw[3], 1.0f);
    TANDEM_CUDA_CHECK(cudaMemset(q_got.get(), 0x7f, q_got.bytes()));  // E4M3 NaN: what the call must overwrite
    silu_mul_fp8(dd16.get<__nv_bfloat16>(), drs.get<float>(), dts.get<float>(), tokens, n, q_got.get<uint8_t>(),
                 s_got.get<float>(), nullptr);
    expect_same("from BF16", q_got, s_got);
    TANDEM_CUDA_CHECK(cudaMemset(q_got.get(), 0x7f, q_got.bytes()));
    silu_mul_fp8(dd.get<float>(), drs.get<float>(), dts.get<float>(), tokens, n, q_got.get<uint8_t>(),
                 dts.get<float>(), nullptr);
    expect_same("scales in place", q_got, dts);
  }
  EXPECT_FALSE(silu_mul_fp8_supports(1001));
  EXPECT_FALSE(silu_mul_fp8_supports(20000));
}

// The FP8 product with BF16 output (prompt-sized gate·up) is the exact
// product of the E4M3 operands rounded to BF16, give or take the rounding
// of the tensor cores' sums (the f32 product's too); and silu_mul_fp8 on it
// gives the bits of the f32 version on the widened values.
TEST(CudaKernels, Fp8ProductInBf16IsTheProductRounded) {
  cudaStream_t stream;
  TANDEM_CUDA_CHECK(cudaStreamCreate(&stream));
  int with_kernel = 0;
  {
    Gemm gemm(stream);
    if (gemm.fp8_tensor_cores()) {
      const int64_t n = 1024, rows = 2 * n, cols = 512;  // a gate·up of 2n rows
      TestMatrix src = make_matrix(DType::BF16, rows, cols, 91);
      DeviceBuffer wq(static_cast<size_t>(rows * cols)), scales(static_cast<size_t>(rows) * 4);
      const DeviceMatrix w{WeightFormat::F8Row, rows, cols, wq.get(), scales.get()};
      quantize_rows(src.device, w, stream);
      std::vector<float> w_values(static_cast<size_t>(rows * cols));  // the E4M3 weights, unscaled
      {
        const std::vector<uint8_t> bytes = to_host<uint8_t>(wq, w_values.size());
        for (size_t i = 0; i < bytes.size(); ++i) w_values[i] = e4m3_to_float(bytes[i]);
      }
      for (const int64_t tokens : {int64_t{5}, Gemm::kBf16ProductFrom + 32}) {
        const std::vector<float> x = random_vector(static_cast<size_t>(tokens * cols), 92);
        DeviceBuffer dx = to_device(x);
        const Gemm::Fp8Input in = gemm.fp8_input(tokens, cols);
        quantize_tokens_fp8(dx.get<float>(), tokens, cols, in.q, in.scale, stream);
        ASSERT_TRUE(gemm.fp8_takes(w, tokens));
        if (!gemm.fp8_takes_bf16(w, tokens)) {
          std::printf("no BF16-output FP8 kernel for %lld tokens here: the runner keeps f32\n",
                      static_cast<long long>(tokens));
          continue;
        }
        ++with_kernel;
        const size_t elems = static_cast<size_t>(tokens * rows);
        DeviceBuffer p32(elems * 4), p16(elems * 2);
        gemm.fp8_product(w, tokens, p32.get<float>());
        gemm.fp8_product(w, tokens, p16.get<__nv_bfloat16>());
        TANDEM_CUDA_CHECK(cudaStreamSynchronize(stream));
        const std::vector<float> f = to_host<float>(p32, elems);
        const std::vector<uint16_t> b = to_host<uint16_t>(p16, elems);
        std::vector<uint8_t> x_bytes(static_cast<size_t>(tokens * cols));
        TANDEM_CUDA_CHECK(cudaMemcpy(x_bytes.data(), in.q, x_bytes.size(), cudaMemcpyDeviceToHost));
        std::vector<float> x_values(x_bytes.size());
        for (size_t i = 0; i < x_bytes.size(); ++i) x_values[i] = e4m3_to_float(x_bytes[i]);
        // Exact sums in double (products of E4M3 values are exact), and the
        // sum of the terms' magnitudes, which bounds the sums' rounding.
        double worst16 = 0, worst32 = 0;  // errors over what they may be
        for (int64_t t = 0; t < tokens; ++t) {
          for (int64_t r = 0; r < rows; ++r) {
            double exact = 0, magnitude = 0;
            for (int64_t c = 0; c < cols; ++c) {
              const double term = double(w_values[static_cast<size_t>(r * cols + c)]) *
                                   x_values[static_cast<size_t>(t * cols + c)];
              exact += term;
              magnitude += std::fabs(term);
            }
            const size_t i = static_cast<size_t>(t * rows + r);
            const double sums = std::ldexp(magnitude, -12);  // the tensor cores' rounding, with room to spare
            // Half a BF16 step where the rounded sum may lie.
            const double half_step = std::ldexp(1.0, std::ilogb(std::max(std::fabs(exact) + sums, 1e-30)) - 8);
            worst16 = std::max(worst16, std::fabs(bf16_to_f32(b[i]) - exact) / (half_step + sums));
            worst32 = std::max(worst32, std::fabs(f[i] - exact) / sums);
          }
        }
        std::printf("fp8 product, %lld tokens: bf16 error at most %.3f of its bound, f32 %.3f\n",
                    static_cast<long long>(tokens), worst16, worst32);
        EXPECT_LE(worst16, 1.0);
        EXPECT_LE(worst32, 1.0);

        // silu_mul_fp8 from bf16 against the f32 kernel on the widened product.
        std::vector<float> widened(elems);
        for (size_t i = 0; i < elems; ++i) widened[i] = bf16_to_f32(b[i]);
        std::vector<float> token_scale(static_cast<size_t>(tokens));
        for (size_t t = 0; t < token_scale.size(); ++t) token_scale[t] = 0.01f + 0.003f * static_cast<float>(t);
        DeviceBuffer dw = to_device(widened), dts = to_device(token_scale);
        DeviceBuffer q_want(elems / 2), s_want(static_cast<size_t>(tokens) * 4), q_got(elems / 2),
            s_got(static_cast<size_t>(tokens) * 4);
        const float* row_scale = static_cast<const float*>(w.scales);
        silu_mul_fp8(dw.get<float>(), row_scale, dts.get<float>(), tokens, n, q_want.get<uint8_t>(),
                     s_want.get<float>(), stream);
        silu_mul_fp8(p16.get<__nv_bfloat16>(), row_scale, dts.get<float>(), tokens, n, q_got.get<uint8_t>(),
                     s_got.get<float>(), stream);
        const auto qw = to_host<uint8_t>(q_want, elems / 2), qg = to_host<uint8_t>(q_got, elems / 2);
        const auto sw = to_host<float>(s_want, static_cast<size_t>(tokens)), sg = to_host<float>(s_got, sw.size());
        ASSERT_EQ(0, std::memcmp(sw.data(), sg.data(), sw.size() * 4)) << tokens << " tokens: scales";
        ASSERT_EQ(0, std::memcmp(qw.data(), qg.data(), qw.size())) << tokens << " tokens: quantized rows";
      }
    }
  }
  cudaStreamDestroy(stream);
  if (with_kernel == 0) GTEST_SKIP() << "no FP8 tensor cores or no BF16-output FP8 kernel on this GPU";
}

// The GEMM's own quantizer of x gives quantize_rows' bits: the vectorized
// kernel at each of its widths, and the fallback (cols not a multiple of 4,
// or wider than 16384).
TEST(CudaKernels, QuantizeTokensFp8MatchesQuantizeRows) {
  for (const int64_t cols : {int64_t{512}, int64_t{1000}, int64_t{2048}, int64_t{4096}, int64_t{6144},
                             int64_t{14336}, int64_t{1001}, int64_t{20000}}) {
    const int64_t n = 7;
    std::vector<float> x = random_vector(static_cast<size_t>(n * cols), 90 + static_cast<uint32_t>(cols));
    for (int64_t c = 0; c < cols; ++c) x[static_cast<size_t>(3 * cols + c)] = 0.0f;  // a row of zeros: scale 1
    x[static_cast<size_t>(cols + 5)] = 1e3f;                                          // an outlier sets its row's scale
    DeviceBuffer dx = to_device(x);
    DeviceBuffer q_want(static_cast<size_t>(n * cols)), s_want(static_cast<size_t>(n) * 4);
    DeviceBuffer q_got(static_cast<size_t>(n * cols)), s_got(static_cast<size_t>(n) * 4);
    quantize_rows(DeviceMatrix{WeightFormat::F32, n, cols, dx.get(), nullptr},
                  DeviceMatrix{WeightFormat::F8Row, n, cols, q_want.get(), s_want.get()}, nullptr);
    quantize_tokens_fp8(dx.get<float>(), n, cols, q_got.get<uint8_t>(), s_got.get<float>(), nullptr);
    const auto qw = to_host<uint8_t>(q_want, static_cast<size_t>(n * cols));
    const auto qg = to_host<uint8_t>(q_got, static_cast<size_t>(n * cols));
    const auto sw = to_host<float>(s_want, static_cast<size_t>(n));
    const auto sg = to_host<float>(s_got, static_cast<size_t>(n));
    ASSERT_EQ(0, std::memcmp(sw.data(), sg.data(), sw.size() * 4)) << cols << " columns: scales";
    EXPECT_EQ(sg[3], 1.0f);
    for (size_t i = 0; i < qw.size(); ++i) ASSERT_EQ(qw[i], qg[i]) << cols << " columns, element " << i;
  }
}

}  // namespace
}  // namespace tandem::cuda
