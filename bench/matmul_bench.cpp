// Matmul speed on a random 0.66B Llama shape (28 layers, hidden 1024, FFN
// 3072, 16 query / 8 KV heads of 64, vocab 151936), with every layer's weights
// distinct so that decode streams them from DRAM as a real model does.
//   decode  (n_tokens 1 and 4): all 7 matmuls of 28 layers + lm_head; GB/s of
//           weights read, and % of the read-only bandwidth measured here.
//   prefill (n_tokens 64, 512): the 28 layers (no lm_head: prefill needs logits
//           of the last token only); GFLOP/s with 2 FLOP per multiply-add,
//           and % of the FMA peak measured here.
// Also prints the thread pool's per-call overhead, the time of SiLU·mul and
// of attention's exponentials (this variant against the generic one's libm
// exp) and the FMA peak: each
// thread runs 12 independent chains of vector FMAs (256-bit, or 512-bit for
// the avx512 variant), the most a core's FMA units can retire.
//
//   build/bin/matmul_bench [--threads 2] [--variant generic|avx2|avx512]
//                          [--dtypes f16,bf16,q8_0,q8_0_rows8] [--reps 5]
#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "backends/cpu/cpu_kernels.h"
#include "backends/cpu/kernel_set.h"
#include "backends/cpu/q8_0_rows8.h"
#include "common/half.h"

using namespace tandem;
using namespace tandem::cpu;

namespace {

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

struct Shape {
  const char* name;
  int64_t rows, cols;
};
constexpr int kLayers = 28;
const Shape kLayerShapes[] = {{"q", 1024, 1024}, {"k", 512, 1024},  {"v", 512, 1024},
                              {"o", 1024, 1024}, {"gate", 3072, 1024}, {"up", 3072, 1024},
                              {"down", 1024, 3072}};
const Shape kLmHead = {"lm_head", 151936, 1024};

// Random bytes that decode to sane values of `dtype` (f16/bf16 in [-1, 1),
// q8_0 with small scales): the speed does not depend on the values.
std::vector<uint8_t> random_weights(DType dtype, int64_t rows, int64_t cols, std::mt19937& rng) {
  const int64_t bytes = rows * dtype_row_bytes(dtype, cols);
  std::vector<uint8_t> w(static_cast<size_t>(bytes));
  std::uniform_int_distribution<uint32_t> u;
  uint32_t* p = reinterpret_cast<uint32_t*>(w.data());
  for (int64_t i = 0; i < bytes / 4; ++i) p[i] = u(rng);
  if (dtype == DType::F16 || dtype == DType::BF16) {
    uint16_t* h = reinterpret_cast<uint16_t*>(w.data());
    const uint16_t one = dtype == DType::F16 ? f32_to_f16(0.5f) : f32_to_bf16(0.5f);
    for (int64_t i = 0; i < bytes / 2; ++i) h[i] = static_cast<uint16_t>((h[i] & 0x80ff) | (one & 0x7f00));
  } else if (dtype == DType::Q8_0) {
    BlockQ8_0* b = reinterpret_cast<BlockQ8_0*>(w.data());
    for (int64_t i = 0; i < bytes / 34; ++i) b[i].d = f32_to_f16(0.01f);
  }
  return w;
}

// Read-only bandwidth with the same pool (the GEMV access pattern's ceiling).
double read_bandwidth(ThreadPool& pool) {
  const int64_t n = 256ll * 1024 * 1024;  // 1 GiB of f32
  std::vector<float> a(n, 1.0f);
  std::vector<float> w(1024 * 16, 0.0f), y(16);
  double best = 1e30;
  for (int rep = 0; rep < 5; ++rep) {
    // A GEMV over a [n/1024, 1024] f32 "matrix" is a read-only stream; use the
    // F32 kernel with 1 token so the loop is the kernels' own.
    std::vector<float> x(1024, 1.0f), out(n / 1024);
    const double t0 = now_s();
    matmul(WeightMatrix{DType::F32, n / 1024, 1024, a.data()}, x.data(), 1, out.data(), pool);
    best = std::min(best, now_s() - t0);
  }
  return n * 4.0 / best / 1e9;
}

#if defined(__x86_64__)
// 12 independent FMA chains of `iters` steps; returns a value that depends
// on them all, so that none is optimised away.
__attribute__((target("avx2,fma"))) float fma_chains_avx2(int64_t iters) {
  __m256 a[12];
  for (int i = 0; i < 12; ++i) a[i] = _mm256_set1_ps(0.001f * static_cast<float>(i));
  const __m256 b = _mm256_set1_ps(0.9999f), c = _mm256_set1_ps(1e-4f);
  for (int64_t it = 0; it < iters; ++it) {
#pragma GCC unroll 12
    for (int i = 0; i < 12; ++i) a[i] = _mm256_fmadd_ps(a[i], b, c);
  }
  float s = 0;
  for (int i = 0; i < 12; ++i) s += _mm256_cvtss_f32(a[i]);
  return s;
}
__attribute__((target("avx512f"))) float fma_chains_avx512(int64_t iters) {
  __m512 a[12];
  for (int i = 0; i < 12; ++i) a[i] = _mm512_set1_ps(0.001f * static_cast<float>(i));
  const __m512 b = _mm512_set1_ps(0.9999f), c = _mm512_set1_ps(1e-4f);
  for (int64_t it = 0; it < iters; ++it) {
#pragma GCC unroll 12
    for (int i = 0; i < 12; ++i) a[i] = _mm512_fmadd_ps(a[i], b, c);
  }
  float s = 0;
  for (int i = 0; i < 12; ++i) s += _mm512_cvtss_f32(a[i]);
  return s;
}
#endif

// FLOP/s of the pool's threads running FMA chains at once (best of 3), or 0
// where the variant has no vector FMA.
double fma_peak_gflops(ThreadPool& pool, const std::string& variant) {
#if defined(__x86_64__)
  const int lanes = variant == "avx512" ? 16 : variant == "avx2" ? 8 : 0;
  if (lanes == 0) return 0;
  const int64_t iters = 20'000'000;
  std::atomic<float> sink{0};
  double best = 1e30;
  for (int rep = 0; rep < 3; ++rep) {
    const double t0 = now_s();
    pool.run([&](int) { sink = sink + (lanes == 16 ? fma_chains_avx512(iters) : fma_chains_avx2(iters)); });
    best = std::min(best, now_s() - t0);
  }
  return pool.size() * 12.0 * iters * lanes * 2 / best / 1e9;
#else
  (void)pool;
  (void)variant;
  return 0;
#endif
}

}  // namespace

int main(int argc, char** argv) {
  int threads = 2;
  int reps = 5;
  std::string variant_name;
  std::string dtypes = "f16,bf16,q8_0";
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i];
    if (k == "--threads") threads = std::atoi(argv[i + 1]);
    else if (k == "--reps") reps = std::atoi(argv[i + 1]);
    else if (k == "--variant") variant_name = argv[i + 1];
    else if (k == "--dtypes") dtypes = argv[i + 1];
    else {
      std::fprintf(stderr, "usage: matmul_bench [--threads N] [--variant NAME] [--dtypes a,b] [--reps N]\n");
      return 2;
    }
  }
  const CpuFeatures features = detect_cpu_features();
  const KernelSet* ks = &best_kernel_set();
  for (KernelVariant v : supported_kernel_variants(features)) {
    if (variant_name == kernel_set(v).name) ks = &kernel_set(v);
  }
  if (!variant_name.empty() && variant_name != ks->name) {
    std::fprintf(stderr, "variant %s is not supported here (cpu: %s)\n", variant_name.c_str(),
                 features.describe().c_str());
    return 2;
  }
  ThreadPool pool(threads);
  std::printf("matmul_bench: cpu features [%s], variant %s, %d threads\n", features.describe().c_str(),
              ks->name, pool.size());

  {  // thread pool overhead: an empty run()
    const int n = 20000;
    double best = 1e30;
    for (int rep = 0; rep < 5; ++rep) {
      const double t0 = now_s();
      for (int i = 0; i < n; ++i) pool.run([](int) {});
      best = std::min(best, (now_s() - t0) / n);
    }
    std::printf("thread pool: %.2f us per empty run()\n", best * 1e6);
  }
  const double read_bw = read_bandwidth(pool);
  std::printf("read-only stream bandwidth (f32 GEMV kernel over 1 GiB): %.2f GB/s\n", read_bw);
  const double fma_peak = fma_peak_gflops(pool, ks->name);
  if (fma_peak > 0) std::printf("FMA peak (12 chains a thread): %.1f GFLOP/s\n", fma_peak);

  {  // silu(gate) * up over a 64-token prompt's FFN activations (one layer), one thread
    const int64_t n = 64 * 3072;
    std::vector<float> g0(n), g(n), u(n, 1.0f);
    for (int64_t i = 0; i < n; ++i) g0[i] = static_cast<float>(i % 2001) / 200.0f - 5.0f;
    for (const KernelSet* k : {ks, &kernel_set(KernelVariant::Generic)}) {
      double best = 1e30;
      for (int rep = 0; rep < 20; ++rep) {
        g = g0;
        const double t0 = now_s();
        k->silu_mul(g.data(), u.data(), n);
        best = std::min(best, now_s() - t0);
      }
      std::printf("silu_mul (%s) 64 x 3072: %.1f us, %.2f ns a value\n", k->name, best * 1e6, best * 1e9 / n);
    }
    // exp_sum: attention's softmax numerators over 2048 cached positions.
    const int64_t m = 2048;
    for (const KernelSet* k : {ks, &kernel_set(KernelVariant::Generic)}) {
      double best = 1e30;
      float sink = 0;
      for (int rep = 0; rep < 200; ++rep) {
        std::copy(g0.begin(), g0.begin() + m, g.begin());
        const double t0 = now_s();
        sink += k->exp_sum(g.data(), 5.0f, m);
        best = std::min(best, now_s() - t0);
      }
      std::printf("exp_sum (%s) 2048 values: %.2f us, %.2f ns a value (sum %g)\n", k->name, best * 1e6,
                  best * 1e9 / m, sink / 200);
    }
  }

  std::mt19937 rng(1);
  size_t pos = 0;
  while (pos < dtypes.size()) {
    size_t end = dtypes.find(',', pos);
    if (end == std::string::npos) end = dtypes.size();
    // q8_0_rows8: Q8_0 regrouped by 8 rows, as the engine loads it for kernels that support it.
    const std::string dtype_arg = dtypes.substr(pos, end - pos);
    const bool rows8 = dtype_arg == "q8_0_rows8";
    const DType dtype = rows8 ? DType::Q8_0 : parse_dtype(dtype_arg);
    const std::string label = rows8 ? "q8_0r8" : std::string(dtype_name(dtype));
    pos = end + 1;
    if (rows8 && !ks->q8_0_rows8) {
      std::printf("%s: the %s kernels have no rows8 path\n", dtype_arg.c_str(), ks->name);
      continue;
    }
    std::vector<PackedWeights> packed;
    auto prepare = [&](WeightMatrix w) {
      if (!rows8) return w;
      packed.emplace_back();
      return repack_q8_0_rows8(w, packed.back());
    };

    std::vector<std::vector<uint8_t>> store;
    std::vector<WeightMatrix> layers;  // 28 x 7, in execution order
    double layer_bytes = 0, layer_flops_per_token = 0;
    for (int l = 0; l < kLayers; ++l) {
      for (const Shape& s : kLayerShapes) {
        store.push_back(random_weights(dtype, s.rows, s.cols, rng));
        layers.push_back(prepare(WeightMatrix{dtype, s.rows, s.cols, store.back().data()}));
        layer_bytes += static_cast<double>(store.back().size());
        layer_flops_per_token += 2.0 * s.rows * s.cols;
      }
    }
    store.push_back(random_weights(dtype, kLmHead.rows, kLmHead.cols, rng));
    const WeightMatrix lm_head = prepare(WeightMatrix{dtype, kLmHead.rows, kLmHead.cols, store.back().data()});
    const double lm_bytes = static_cast<double>(store.back().size());

    std::vector<float> x(512 * 3072), y(512 * 3072 + 151936 * 4);
    for (auto& v : x) v = std::uniform_real_distribution<float>(-1, 1)(rng);

    for (int64_t nt : {1, 4}) {
      double best = 1e30;
      for (int rep = 0; rep < reps; ++rep) {
        const double t0 = now_s();
        for (const WeightMatrix& w : layers) matmul(*ks, w, x.data(), nt, y.data(), pool);
        matmul(*ks, lm_head, x.data(), nt, y.data(), pool);
        best = std::min(best, now_s() - t0);
      }
      const double gbs = (layer_bytes + lm_bytes) / best / 1e9;
      std::printf("%-5s decode  n_tokens %3lld: %7.2f ms/step  %6.1f steps/s  %6.2f GB/s  %5.1f%% of read bw\n",
                  label.c_str(), static_cast<long long>(nt), best * 1e3, 1.0 / best,
                  gbs, 100.0 * gbs / read_bw);
    }
    for (int64_t nt : {64, 512}) {
      double best = 1e30;
      const int r = nt > 64 ? std::max(1, reps / 2) : reps;
      for (int rep = 0; rep < r; ++rep) {
        const double t0 = now_s();
        for (const WeightMatrix& w : layers) matmul(*ks, w, x.data(), nt, y.data(), pool);
        best = std::min(best, now_s() - t0);
      }
      const double gflops = layer_flops_per_token * nt / best / 1e9;
      std::printf("%-5s prefill n_tokens %3lld: %7.2f ms  %7.1f tok/s (layers only)  %6.1f GFLOP/s", label.c_str(),
                  static_cast<long long>(nt), best * 1e3, nt / best, gflops);
      if (fma_peak > 0) std::printf("  %5.1f%% of FMA peak", 100.0 * gflops / fma_peak);
      std::printf("\n");
    }
  }
  return 0;
}
