// Tensor-core GEMM speed on the Llama-3-8B shapes (hidden 4096, FFN 14336,
// 32/8 heads of 128, vocab 128256) at the token counts of decode batches and
// mixed steps: cuBLAS's default choice, as `Gemm::run_converted` makes it,
// against every algorithm cuBLASLt's heuristic offers for the same problem
// (f16 weights and inputs, f32 accumulation and output). Each matrix has
// enough distinct copies (>= 512 MB in all) that every call reads its weights
// from HBM. Prints µs per call, the share of --peak-gb-s that the weight
// bytes alone would need, and TFLOP/s; then the fastest cuBLASLt algorithm
// (tile, stages, split-K) and how much it saves.
//
//   build/bin/cuda_gemm_bench [--tokens 8,16,32,64,128,160,256,512] [--peak-gb-s 3350]
//                             [--calls 100] [--algos 16]
#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "backends/cuda/cuda_check.h"
#include "backends/cuda/device_buffer.h"

using namespace tandem;
using namespace tandem::cuda;

namespace {

struct Shape {
  const char* name;
  int64_t rows, cols;
};
const Shape kShapes[] = {{"qkv", 6144, 4096},
                         {"o", 4096, 4096},
                         {"gate_up", 28672, 4096},
                         {"down", 4096, 14336},
                         {"lm_head", 128256, 4096}};

std::vector<int> parse_ints(const std::string& s) {
  std::vector<int> out;
  size_t p = 0;
  while (p < s.size()) {
    size_t q = s.find(',', p);
    if (q == std::string::npos) q = s.size();
    out.push_back(std::atoi(s.substr(p, q - p).c_str()));
    p = q + 1;
  }
  return out;
}

template <typename T>
T algo_attr(const cublasLtMatmulAlgo_t& algo, cublasLtMatmulAlgoConfigAttributes_t attr) {
  T v{};
  size_t written = 0;
  cublasLtMatmulAlgoConfigGetAttribute(&algo, attr, &v, sizeof v, &written);
  return v;
}

}  // namespace

int main(int argc, char** argv) {
  std::string tokens = "8,16,32,64,128,160,256,512";
  double peak = 3350;
  int calls = 100, n_algos = 16;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    if (a == "--tokens") tokens = argv[i + 1];
    else if (a == "--peak-gb-s") peak = std::atof(argv[i + 1]);
    else if (a == "--calls") calls = std::atoi(argv[i + 1]);
    else if (a == "--algos") n_algos = std::atoi(argv[i + 1]);
    else { std::fprintf(stderr, "unknown option %s\n", a.c_str()); return 2; }
  }
  const std::vector<int> counts = parse_ints(tokens);
  const int max_tokens = *std::max_element(counts.begin(), counts.end());
  cudaDeviceProp prop{};
  TANDEM_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  std::printf("%s, %d SMs, L2 %d MB; peak %.0f GB/s\n", prop.name, prop.multiProcessorCount, prop.l2CacheSize >> 20,
              peak);
  std::printf("%-8s %4s | %9s %6s %7s | %9s %6s %7s | %5s %-28s %s\n", "matrix", "n", "cublas us", "%bw", "TFLOP/s",
              "best us", "%bw", "TFLOP/s", "gain", "best algo (tile stages splitK)", "algos");

  cudaStream_t s;
  TANDEM_CUDA_CHECK(cudaStreamCreate(&s));
  cublasHandle_t handle;
  TANDEM_CUBLAS_CHECK(cublasCreate(&handle));
  TANDEM_CUBLAS_CHECK(cublasSetStream(handle, s));
  cublasLtHandle_t lt;
  TANDEM_CUBLAS_CHECK(cublasLtCreate(&lt));
  const size_t workspace_bytes = size_t{32} << 20;
  DeviceBuffer workspace(workspace_bytes);
  TANDEM_CUBLAS_CHECK(cublasSetWorkspace(handle, workspace.get(), workspace_bytes));
  cudaEvent_t e0, e1;
  TANDEM_CUDA_CHECK(cudaEventCreate(&e0));
  TANDEM_CUDA_CHECK(cudaEventCreate(&e1));

  DeviceBuffer x(static_cast<size_t>(max_tokens) * 14336 * 2), y(static_cast<size_t>(max_tokens) * 128256 * 4);
  {
    std::vector<__half> hx(static_cast<size_t>(max_tokens) * 14336);
    for (size_t i = 0; i < hx.size(); ++i) hx[i] = __float2half(static_cast<float>((i * 2654435761u) % 2001) / 1000.0f - 1.0f);
    TANDEM_CUDA_CHECK(cudaMemcpy(x.get(), hx.data(), hx.size() * 2, cudaMemcpyHostToDevice));
  }
  const float alpha = 1.0f, beta = 0.0f;
  for (const Shape& sh : kShapes) {
    const int64_t wbytes = sh.rows * sh.cols * 2;
    const int64_t copies = std::max<int64_t>(2, (512ll << 20) / wbytes + 1);
    std::vector<DeviceBuffer> w;
    for (int64_t c = 0; c < copies; ++c) {
      w.emplace_back(static_cast<size_t>(wbytes));
      TANDEM_CUDA_CHECK(cudaMemset(w.back().get(), 0x38, static_cast<size_t>(wbytes)));  // f16 0.53
    }
    const int m = static_cast<int>(sh.rows), k = static_cast<int>(sh.cols);
    for (int n : counts) {
      // Times `call(copy)` over `calls` calls, after a warm-up; µs a call.
      auto time = [&](auto&& call) {
        for (int i = 0; i < 3; ++i) call(i % copies);
        TANDEM_CUDA_CHECK(cudaEventRecord(e0, s));
        for (int i = 0; i < calls; ++i) call(i % copies);
        TANDEM_CUDA_CHECK(cudaEventRecord(e1, s));
        TANDEM_CUDA_CHECK(cudaEventSynchronize(e1));
        float ms = 0;
        TANDEM_CUDA_CHECK(cudaEventElapsedTime(&ms, e0, e1));
        return 1000.0 * ms / calls;
      };
      // The engine's call: W^T [k, m] (lda k) times x^T [k, n] into y^T [m, n].
      const double cublas_us = time([&](int64_t c) {
        TANDEM_CUBLAS_CHECK(cublasGemmEx(handle, CUBLAS_OP_T, CUBLAS_OP_N, m, n, k, &alpha, w[c].get(), CUDA_R_16F, k,
                                         x.get(), CUDA_R_16F, k, &beta, y.get(), CUDA_R_32F, m, CUBLAS_COMPUTE_32F,
                                         CUBLAS_GEMM_DEFAULT));
      });
      // The same problem through cuBLASLt, every algorithm the heuristic offers.
      cublasLtMatmulDesc_t op;
      TANDEM_CUBLAS_CHECK(cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
      const cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
      TANDEM_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta));
      TANDEM_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb));
      cublasLtMatrixLayout_t la, lb, lc;
      TANDEM_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&la, CUDA_R_16F, k, m, k));
      TANDEM_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&lb, CUDA_R_16F, k, n, k));
      TANDEM_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&lc, CUDA_R_32F, m, n, m));
      cublasLtMatmulPreference_t pref;
      TANDEM_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
      TANDEM_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                               &workspace_bytes, sizeof workspace_bytes));
      std::vector<cublasLtMatmulHeuristicResult_t> found(static_cast<size_t>(n_algos));
      int n_found = 0;
      cublasLtMatmulAlgoGetHeuristic(lt, op, la, lb, lc, lc, pref, n_algos, found.data(), &n_found);
      double best_us = 1e30;
      int best = -1;
      for (int a = 0; a < n_found; ++a) {
        if (found[static_cast<size_t>(a)].state != CUBLAS_STATUS_SUCCESS) continue;
        const double us = time([&](int64_t c) {
          TANDEM_CUBLAS_CHECK(cublasLtMatmul(lt, op, &alpha, w[c].get(), la, x.get(), lb, &beta, y.get(), lc, y.get(),
                                             lc, &found[static_cast<size_t>(a)].algo, workspace.get(),
                                             workspace_bytes, s));
        });
        if (us < best_us) best_us = us, best = a;
      }
      char algo_text[64] = "-";
      if (best >= 0) {
        const cublasLtMatmulAlgo_t& al = found[static_cast<size_t>(best)].algo;
        std::snprintf(algo_text, sizeof algo_text, "#%d tile %u stages %u splitK %d", best,
                      algo_attr<uint32_t>(al, CUBLASLT_ALGO_CONFIG_TILE_ID),
                      algo_attr<uint32_t>(al, CUBLASLT_ALGO_CONFIG_STAGES_ID),
                      algo_attr<int32_t>(al, CUBLASLT_ALGO_CONFIG_SPLITK_NUM));
      }
      const double flop = 2.0 * static_cast<double>(m) * k * n;
      auto bw = [&](double us) { return 100.0 * static_cast<double>(wbytes) / (us * 1e-6) / (peak * 1e9); };
      std::printf("%-8s %4d | %9.1f %5.1f%% %7.0f | %9.1f %5.1f%% %7.0f | %4.0f%% %-28s %d\n", sh.name, n, cublas_us,
                  bw(cublas_us), flop / (cublas_us * 1e-6) / 1e12, best_us, bw(best_us),
                  flop / (best_us * 1e-6) / 1e12, 100.0 * (cublas_us - best_us) / cublas_us, algo_text, n_found);
      std::fflush(stdout);
      cublasLtMatmulPreferenceDestroy(pref);
      cublasLtMatrixLayoutDestroy(lc);
      cublasLtMatrixLayoutDestroy(lb);
      cublasLtMatrixLayoutDestroy(la);
      cublasLtMatmulDescDestroy(op);
    }
  }
  cublasLtDestroy(lt);
  cublasDestroy(handle);
  return 0;
}
