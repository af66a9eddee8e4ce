// STREAM-style memory bandwidth: copy, scale, add, triad and a read-only sum,
// with 1 and 2 threads (or --threads N), on arrays far larger than the LLC.
// Prints the best of --reps runs in GB/s (1 GB = 1e9 bytes). Bytes counted as
// STREAM does: reads + writes, no write-allocate traffic.
//
//   build/bin/stream_bench [--mib 512] [--reps 10] [--threads 2]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "common/thread_pool.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace {

// Read-only sum: the access pattern of a GEMV over its weights. Vectorised
// with AVX2 when the CPU has it, so the loads and not the adds are the limit.
#if defined(__x86_64__)
__attribute__((target("avx2"))) double sum_avx2(const float* a, int64_t n) {
  __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    s0 = _mm256_add_ps(s0, _mm256_loadu_ps(a + i));
    s1 = _mm256_add_ps(s1, _mm256_loadu_ps(a + i + 8));
    s2 = _mm256_add_ps(s2, _mm256_loadu_ps(a + i + 16));
    s3 = _mm256_add_ps(s3, _mm256_loadu_ps(a + i + 24));
  }
  float t[8];
  _mm256_storeu_ps(t, _mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
  double s = 0;
  for (float v : t) s += v;
  for (; i < n; ++i) s += a[i];
  return s;
}
#endif

double sum_scalar(const float* a, int64_t n) {
  float acc[8] = {};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; ++j) acc[j] += a[i + j];
  double s = 0;
  for (float v : acc) s += v;
  for (; i < n; ++i) s += a[i];
  return s;
}

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

}  // namespace

int main(int argc, char** argv) {
  int64_t mib = 512;  // per array
  int reps = 10;
  std::vector<int> thread_counts = {1, 2};
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i];
    if (k == "--mib") mib = std::atoll(argv[i + 1]);
    else if (k == "--reps") reps = std::atoi(argv[i + 1]);
    else if (k == "--threads") thread_counts = {std::atoi(argv[i + 1])};
    else {
      std::fprintf(stderr, "usage: stream_bench [--mib N] [--reps N] [--threads N]\n");
      return 2;
    }
  }
  const int64_t n = mib * 1024 * 1024 / 4;
  bool use_avx2 = false;
#if defined(__x86_64__)
  use_avx2 = __builtin_cpu_supports("avx2");
#endif
  std::printf("stream_bench: 3 arrays of %lld MiB, best of %d\n", static_cast<long long>(mib), reps);
  for (int nt : thread_counts) {
    tandem::ThreadPool pool(nt);
    std::vector<float> a(n), b(n), c(n);
    // First touch in parallel, so pages spread as the kernels will use them.
    pool.parallel_for(n, [&](int64_t s, int64_t e) {
      for (int64_t i = s; i < e; ++i) { a[i] = 1.0f; b[i] = 2.0f; c[i] = 0.0f; }
    });
    const float q = 3.0f;
    std::vector<double> partial(nt);
    struct Op { const char* name; double bytes_per_elem; };
    const Op ops[] = {{"copy", 8}, {"scale", 8}, {"add", 12}, {"triad", 12}, {"sum", 4}};
    double sink = 0;
    for (int op = 0; op < 5; ++op) {
      double best = 1e30;
      for (int rep = 0; rep < reps; ++rep) {
        const double t0 = now_s();
        pool.run([&](int t) {
          const int64_t s = n * t / nt, e = n * (t + 1) / nt;
          switch (op) {
            case 0: std::memcpy(c.data() + s, a.data() + s, (e - s) * 4); break;
            case 1: for (int64_t i = s; i < e; ++i) b[i] = q * c[i]; break;
            case 2: for (int64_t i = s; i < e; ++i) c[i] = a[i] + b[i]; break;
            case 3: for (int64_t i = s; i < e; ++i) a[i] = b[i] + q * c[i]; break;
            default:
#if defined(__x86_64__)
              partial[t] = use_avx2 ? sum_avx2(a.data() + s, e - s) : sum_scalar(a.data() + s, e - s);
#else
              partial[t] = sum_scalar(a.data() + s, e - s);
#endif
          }
        });
        best = std::min(best, now_s() - t0);
        for (double p : partial) sink += p;
      }
      std::printf("threads %d  %-6s %8.2f GB/s\n", nt, ops[op].name, ops[op].bytes_per_elem * n / best / 1e9);
    }
    if (sink == 42.0) std::printf(" ");  // keeps the sums alive
  }
  return 0;
}
