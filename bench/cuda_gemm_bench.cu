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
// --fp8: the same shapes with E4M3 weights (a f32 scale per row) and x
// quantized per token, as `--quantize fp8` runs them: the engine's call
// (`Gemm::run`: x quantized, cuBLASLt's FP8 product into f32, then the
// scales applied in a kernel of our own) before and after `Gemm::tune`, and
// the quantization of x alone. Then cuBLASLt's product alone, every
// algorithm its heuristic offers: with unit scales (the engine's), and with
// the scales given to cuBLASLt as per-row and per-token vectors
// (CUBLASLT_MATMUL_MATRIX_SCALE_OUTER_VEC_32F) writing y in f32 or bf16
// directly.
//
// --search: for the f16 shapes, beyond the heuristic's offers, every
// configuration cuBLASLt accepts for the problem (algorithm id, tile,
// stages, split-K of 1-8 with each reduction scheme, CTA swizzling, custom
// options 0-1, thread-block cluster shape; cublasLtMatmulAlgoCheck filters),
// each timed over a few calls, the fastest ten again over --calls. Prints
// the fastest configuration found against the heuristic's best.
//
//   build/bin/cuda_gemm_bench [--tokens 8,16,32,64,128,160,256,512] [--peak-gb-s 3350]
//                             [--calls 100] [--algos 16] [--fp8] [--search] [--shapes gate_up,down]
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
#include "backends/cuda/gemm.h"
#include "backends/cuda/kernels.h"

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

// Times `call(copy)` over `calls` calls on stream s, after a warm-up; µs a call.
template <typename Call>
double time_calls(cudaStream_t s, cudaEvent_t e0, cudaEvent_t e1, int calls, int64_t copies, Call&& call) {
  for (int i = 0; i < 3; ++i) call(i % copies);
  TANDEM_CUDA_CHECK(cudaEventRecord(e0, s));
  for (int i = 0; i < calls; ++i) call(i % copies);
  TANDEM_CUDA_CHECK(cudaEventRecord(e1, s));
  TANDEM_CUDA_CHECK(cudaEventSynchronize(e1));
  float ms = 0;
  TANDEM_CUDA_CHECK(cudaEventElapsedTime(&ms, e0, e1));
  return 1000.0 * ms / calls;
}

// One configuration found by --search, and its time.
struct Found {
  cublasLtMatmulAlgo_t algo;
  size_t workspace = 0;
  double us = 0;
};

// Reads an array capability of algo (tile or stages ids).
template <typename T>
std::vector<T> algo_cap_ids(const cublasLtMatmulAlgo_t& algo, cublasLtMatmulAlgoCapAttributes_t attr) {
  size_t bytes = 0;
  if (cublasLtMatmulAlgoCapGetAttribute(&algo, attr, nullptr, 0, &bytes) != CUBLAS_STATUS_SUCCESS || bytes == 0)
    return {T{}};
  std::vector<T> ids(bytes / sizeof(T));
  cublasLtMatmulAlgoCapGetAttribute(&algo, attr, ids.data(), bytes, &bytes);
  if (ids.empty()) ids.push_back(T{});
  return ids;
}

template <typename T>
T algo_cap(const cublasLtMatmulAlgo_t& algo, cublasLtMatmulAlgoCapAttributes_t attr) {
  T v{};
  size_t written = 0;
  cublasLtMatmulAlgoCapGetAttribute(&algo, attr, &v, sizeof v, &written);
  return v;
}

// Every configuration cuBLASLt accepts for the problem (f16 A and B, f32
// compute and C/D), sorted by time; `time` times one configuration over
// `calls` calls (0: a screening pass of a few).
template <typename Time>
std::vector<Found> search_configs(cublasLtHandle_t lt, cublasLtMatmulDesc_t op, cublasLtMatrixLayout_t la,
                                  cublasLtMatrixLayout_t lb, cublasLtMatrixLayout_t lc, size_t workspace_bytes,
                                  Time&& time) {
  int ids[256], n_ids = 0;
  cublasLtMatmulAlgoGetIds(lt, CUBLAS_COMPUTE_32F, CUDA_R_32F, CUDA_R_16F, CUDA_R_16F, CUDA_R_32F, CUDA_R_32F, 256, ids,
                           &n_ids);
  std::vector<Found> found;
  const int32_t splits[] = {1, 2, 3, 4, 6, 8};
  const uint16_t clusters[] = {CUBLASLT_CLUSTER_SHAPE_AUTO, CUBLASLT_CLUSTER_SHAPE_1x1x1, CUBLASLT_CLUSTER_SHAPE_2x1x1,
                               CUBLASLT_CLUSTER_SHAPE_1x2x1};
  for (int i = 0; i < n_ids; ++i) {
    cublasLtMatmulAlgo_t base;
    if (cublasLtMatmulAlgoInit(lt, CUBLAS_COMPUTE_32F, CUDA_R_32F, CUDA_R_16F, CUDA_R_16F, CUDA_R_32F, CUDA_R_32F,
                               ids[i], &base) != CUBLAS_STATUS_SUCCESS)
      continue;
    const auto tiles = algo_cap_ids<uint32_t>(base, CUBLASLT_ALGO_CAP_TILE_IDS);
    const auto stages = algo_cap_ids<uint32_t>(base, CUBLASLT_ALGO_CAP_STAGES_IDS);
    const int32_t splitk = algo_cap<int32_t>(base, CUBLASLT_ALGO_CAP_SPLITK_SUPPORT);
    const uint32_t schemes = algo_cap<uint32_t>(base, CUBLASLT_ALGO_CAP_REDUCTION_SCHEME_MASK);
    const uint32_t swizzle = algo_cap<uint32_t>(base, CUBLASLT_ALGO_CAP_CTA_SWIZZLING_SUPPORT);
    const int32_t custom_max = std::min(algo_cap<int32_t>(base, CUBLASLT_ALGO_CAP_CUSTOM_OPTION_MAX), 1);
    for (uint32_t tile : tiles)
    for (uint32_t stage : stages)
    for (int32_t split : splits) {
      if (split > 1 && !splitk) continue;
      for (uint32_t scheme = 0; scheme <= 4; scheme = scheme == 0 ? 1 : scheme * 2) {
        if ((split == 1) != (scheme == 0)) continue;
        if (scheme != 0 && !(schemes & scheme)) continue;
        for (uint32_t swz = 0; swz <= (swizzle ? 1u : 0u); ++swz)
        for (int32_t custom = 0; custom <= custom_max; ++custom)
        for (uint16_t cluster : clusters) {
          cublasLtMatmulAlgo_t a = base;
          cublasLtMatmulAlgoConfigSetAttribute(&a, CUBLASLT_ALGO_CONFIG_TILE_ID, &tile, sizeof tile);
          cublasLtMatmulAlgoConfigSetAttribute(&a, CUBLASLT_ALGO_CONFIG_STAGES_ID, &stage, sizeof stage);
          cublasLtMatmulAlgoConfigSetAttribute(&a, CUBLASLT_ALGO_CONFIG_SPLITK_NUM, &split, sizeof split);
          cublasLtMatmulAlgoConfigSetAttribute(&a, CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME, &scheme, sizeof scheme);
          cublasLtMatmulAlgoConfigSetAttribute(&a, CUBLASLT_ALGO_CONFIG_CTA_SWIZZLING, &swz, sizeof swz);
          const uint32_t custom_u = static_cast<uint32_t>(custom);
          cublasLtMatmulAlgoConfigSetAttribute(&a, CUBLASLT_ALGO_CONFIG_CUSTOM_OPTION, &custom_u, sizeof custom_u);
          if (cublasLtMatmulAlgoConfigSetAttribute(&a, CUBLASLT_ALGO_CONFIG_CLUSTER_SHAPE_ID, &cluster,
                                                   sizeof cluster) != CUBLAS_STATUS_SUCCESS &&
              cluster != CUBLASLT_CLUSTER_SHAPE_AUTO)
            continue;
          cublasLtMatmulHeuristicResult_t check{};
          if (cublasLtMatmulAlgoCheck(lt, op, la, lb, lc, lc, &a, &check) != CUBLAS_STATUS_SUCCESS) continue;
          if (check.workspaceSize > workspace_bytes) continue;
          found.push_back({a, check.workspaceSize, 0});
        }
      }
    }
  }
  // Screen the configurations over a few calls (an even sample of 3000
  // where there are more), then time the fastest ten.
  std::printf("  search: %zu configurations accepted\n", found.size());
  if (found.size() > 3000) {
    std::vector<Found> sample;
    for (size_t i = 0; i < 3000; ++i) sample.push_back(found[i * found.size() / 3000]);
    found.swap(sample);
  }
  for (Found& f : found) f.us = time(f.algo, 0);
  std::sort(found.begin(), found.end(), [](const Found& a, const Found& b) { return a.us < b.us; });
  if (found.size() > 10) found.resize(10);
  for (Found& f : found) f.us = time(f.algo, 1);
  std::sort(found.begin(), found.end(), [](const Found& a, const Found& b) { return a.us < b.us; });
  return found;
}

std::string describe(const cublasLtMatmulAlgo_t& al) {
  char text[160];
  std::snprintf(text, sizeof text, "id %d tile %u stages %u splitK %d red %u swz %u custom %u cluster %u",
                algo_attr<int32_t>(al, CUBLASLT_ALGO_CONFIG_ID), algo_attr<uint32_t>(al, CUBLASLT_ALGO_CONFIG_TILE_ID),
                algo_attr<uint32_t>(al, CUBLASLT_ALGO_CONFIG_STAGES_ID),
                algo_attr<int32_t>(al, CUBLASLT_ALGO_CONFIG_SPLITK_NUM),
                algo_attr<uint32_t>(al, CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME),
                algo_attr<uint32_t>(al, CUBLASLT_ALGO_CONFIG_CTA_SWIZZLING),
                algo_attr<uint32_t>(al, CUBLASLT_ALGO_CONFIG_CUSTOM_OPTION),
                static_cast<unsigned>(algo_attr<uint16_t>(al, CUBLASLT_ALGO_CONFIG_CLUSTER_SHAPE_ID)));
  return text;
}

// --fp8 (see the top of the file).
int run_fp8(const std::vector<int>& counts, double peak, int calls, int n_algos) {
  const int max_tokens = *std::max_element(counts.begin(), counts.end());
  cudaStream_t s;
  TANDEM_CUDA_CHECK(cudaStreamCreate(&s));
  cublasLtHandle_t lt;
  TANDEM_CUBLAS_CHECK(cublasLtCreate(&lt));
  const size_t workspace_bytes = size_t{32} << 20;
  DeviceBuffer workspace(workspace_bytes);
  cudaEvent_t e0, e1;
  TANDEM_CUDA_CHECK(cudaEventCreate(&e0));
  TANDEM_CUDA_CHECK(cudaEventCreate(&e1));
  Gemm gemm(s);
  if (!gemm.fp8_tensor_cores()) {
    std::printf("this GPU has no FP8 tensor cores\n");
    return 0;
  }
  // x: f32 in [-1, 1); x8: E4M3 bytes of moderate magnitude, either sign.
  DeviceBuffer x(static_cast<size_t>(max_tokens) * 14336 * 4), x8(static_cast<size_t>(max_tokens) * 14336);
  DeviceBuffer x8_scale(static_cast<size_t>(max_tokens) * 4), y(static_cast<size_t>(max_tokens) * 128256 * 4);
  {
    std::vector<float> hx(static_cast<size_t>(max_tokens) * 14336);
    std::vector<uint8_t> hx8(hx.size());
    for (size_t i = 0; i < hx.size(); ++i) {
      const uint32_t h = static_cast<uint32_t>(i) * 2654435761u;
      hx[i] = static_cast<float>(h % 2001) / 1000.0f - 1.0f;
      hx8[i] = static_cast<uint8_t>(0x20 + (h >> 8) % 0x30) | static_cast<uint8_t>((h >> 20) & 0x80);
    }
    TANDEM_CUDA_CHECK(cudaMemcpy(x.get(), hx.data(), hx.size() * 4, cudaMemcpyHostToDevice));
    TANDEM_CUDA_CHECK(cudaMemcpy(x8.get(), hx8.data(), hx8.size(), cudaMemcpyHostToDevice));
    const std::vector<float> ones(static_cast<size_t>(max_tokens), 1.0f);
    TANDEM_CUDA_CHECK(cudaMemcpy(x8_scale.get(), ones.data(), ones.size() * 4, cudaMemcpyHostToDevice));
  }
  std::printf("%-8s %4s | %9s %6s | %9s %6s | %8s | cuBLASLt's product alone, µs: the first algorithm and the best\n",
              "matrix", "n", "engine us", "%bw", "tuned us", "%bw", "quant us");
  for (const Shape& sh : kShapes) {
    const int64_t wbytes = sh.rows * sh.cols;
    const int64_t copies = std::max<int64_t>(2, (512ll << 20) / wbytes + 1);
    std::vector<DeviceBuffer> w, w_scale;
    {
      const std::vector<float> scales(static_cast<size_t>(sh.rows), 1.0f / 64);
      for (int64_t c = 0; c < copies; ++c) {
        w.emplace_back(static_cast<size_t>(wbytes));
        TANDEM_CUDA_CHECK(cudaMemset(w.back().get(), 0x38, static_cast<size_t>(wbytes)));  // E4M3 1.0
        w_scale.emplace_back(scales.size() * 4);
        TANDEM_CUDA_CHECK(cudaMemcpy(w_scale.back().get(), scales.data(), scales.size() * 4, cudaMemcpyHostToDevice));
      }
    }
    const uint64_t m = static_cast<uint64_t>(sh.rows), k = static_cast<uint64_t>(sh.cols);
    for (int n : counts) {
      auto matrix = [&](int64_t c) {
        return DeviceMatrix{WeightFormat::F8Row, sh.rows, sh.cols, w[static_cast<size_t>(c)].get(),
                            w_scale[static_cast<size_t>(c)].get()};
      };
      const double engine_us = time_calls(s, e0, e1, calls, copies, [&](int64_t c) {
        gemm.run(matrix(c), x.get<float>(), n, y.get<float>(), sh.rows, false);
      });
      // The engine's call again after Gemm::tune over the copies.
      std::vector<DeviceMatrix> all;
      for (int64_t c = 0; c < copies; ++c) all.push_back(matrix(c));
      std::vector<const DeviceMatrix*> ptrs;
      for (const DeviceMatrix& a : all) ptrs.push_back(&a);
      gemm.tune(ptrs, n);
      const double tuned_us = time_calls(s, e0, e1, calls, copies, [&](int64_t c) {
        gemm.run(matrix(c), x.get<float>(), n, y.get<float>(), sh.rows, false);
      });
      DeviceBuffer q(static_cast<size_t>(n) * k), q_scale(static_cast<size_t>(n) * 4);
      const double quant_us = time_calls(s, e0, e1, calls, copies, [&](int64_t) {
        quantize_tokens_fp8(x.get<float>(), n, sh.cols, q.get<uint8_t>(), q_scale.get<float>(), s);
      });
      const double flop = 2.0 * static_cast<double>(m) * static_cast<double>(k) * n;
      auto bw = [&](double us) { return 100.0 * static_cast<double>(wbytes) / (us * 1e-6) / (peak * 1e9); };
      std::printf("%-8s %4d | %9.1f %5.1f%% | %9.1f %5.1f%% | %8.1f", sh.name, n, engine_us, bw(engine_us), tuned_us,
                  bw(tuned_us), quant_us);
      // The product alone through cuBLASLt, every algorithm the heuristic
      // offers: the engine's scalar scales into f32 (then scaled by a kernel
      // of our own), and the scales as per-row and per-token vectors, y in f32
      // or bf16 directly.
      struct Variant {
        const char* name;
        bool outer;
        cudaDataType_t out;
      };
      for (const Variant v : {Variant{"scalar", false, CUDA_R_32F}, Variant{"outer f32", true, CUDA_R_32F},
                              Variant{"outer bf16", true, CUDA_R_16BF}}) {
        cublasLtMatmulDesc_t op;
        TANDEM_CUBLAS_CHECK(cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
        const cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
        TANDEM_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta));
        TANDEM_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb));
        if (v.outer) {
          const int32_t vec = CUBLASLT_MATMUL_MATRIX_SCALE_OUTER_VEC_32F;
          TANDEM_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_A_SCALE_MODE, &vec, sizeof vec));
          TANDEM_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_B_SCALE_MODE, &vec, sizeof vec));
          // The heuristic wants the scale pointers set.
          const void* a_scale = w_scale[0].get();
          const void* b_scale = x8_scale.get();
          TANDEM_CUBLAS_CHECK(
              cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &a_scale, sizeof a_scale));
          TANDEM_CUBLAS_CHECK(
              cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &b_scale, sizeof b_scale));
        }
        cublasLtMatrixLayout_t la, lb, lc;
        TANDEM_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&la, CUDA_R_8F_E4M3, k, m, static_cast<int64_t>(k)));
        TANDEM_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&lb, CUDA_R_8F_E4M3, k, static_cast<uint64_t>(n),
                                                       static_cast<int64_t>(k)));
        TANDEM_CUBLAS_CHECK(
            cublasLtMatrixLayoutCreate(&lc, v.out, m, static_cast<uint64_t>(n), static_cast<int64_t>(m)));
        cublasLtMatmulPreference_t pref;
        TANDEM_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
        TANDEM_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                                 &workspace_bytes, sizeof workspace_bytes));
        std::vector<cublasLtMatmulHeuristicResult_t> found(static_cast<size_t>(n_algos));
        int n_found = 0;
        const cublasStatus_t heuristic =
            cublasLtMatmulAlgoGetHeuristic(lt, op, la, lb, lc, lc, pref, n_algos, found.data(), &n_found);
        if (heuristic != CUBLAS_STATUS_SUCCESS) n_found = 0;
        double best_us = 1e30, first_us = 0;
        int best = -1, usable = 0;
        const float alpha = 1.0f, beta = 0.0f;
        for (int a = 0; a < n_found; ++a) {
          if (found[static_cast<size_t>(a)].state != CUBLAS_STATUS_SUCCESS) continue;
          bool ok = true;
          const double us = time_calls(s, e0, e1, calls, copies, [&](int64_t c) {
            if (v.outer) {
              const void* a_scale = w_scale[static_cast<size_t>(c)].get();
              cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &a_scale, sizeof a_scale);
            }
            ok = ok && cublasLtMatmul(lt, op, &alpha, w[static_cast<size_t>(c)].get(), la, x8.get(), lb, &beta,
                                      y.get(), lc, y.get(), lc, &found[static_cast<size_t>(a)].algo, workspace.get(),
                                      workspace_bytes, s) == CUBLAS_STATUS_SUCCESS;
          });
          if (!ok) continue;
          if (usable++ == 0) first_us = us;
          if (us < best_us) best_us = us, best = a;
        }
        if (best >= 0) {
          const cublasLtMatmulAlgo_t& al = found[static_cast<size_t>(best)].algo;
          std::printf(" | %s: first %.1f, best %.1f (%.1f%%, %.0f TFLOP/s; #%d of %d/%d, tile %u stages %u splitK %d)",
                      v.name, first_us, best_us, bw(best_us), flop / (best_us * 1e-6) / 1e12, best, usable, n_found,
                      algo_attr<uint32_t>(al, CUBLASLT_ALGO_CONFIG_TILE_ID),
                      algo_attr<uint32_t>(al, CUBLASLT_ALGO_CONFIG_STAGES_ID),
                      algo_attr<int32_t>(al, CUBLASLT_ALGO_CONFIG_SPLITK_NUM));
        } else {
          std::printf(" | %s: none (heuristic status %d, %d offered)", v.name, static_cast<int>(heuristic), n_found);
        }
        cublasLtMatmulPreferenceDestroy(pref);
        cublasLtMatrixLayoutDestroy(lc);
        cublasLtMatrixLayoutDestroy(lb);
        cublasLtMatrixLayoutDestroy(la);
        cublasLtMatmulDescDestroy(op);
      }
      std::printf("\n");
      std::fflush(stdout);
    }
  }
  cublasLtDestroy(lt);
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  cudaStreamDestroy(s);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::string tokens = "8,16,32,64,128,160,256,512";
  double peak = 3350;
  int calls = 100, n_algos = 16;
  bool fp8 = false, search = false;
  std::string shapes;
  for (int i = 1; i < argc; i += 2) {
    const std::string a = argv[i];
    if (a == "--fp8" || a == "--search") {
      (a == "--fp8" ? fp8 : search) = true;
      --i;
      continue;
    }
    if (i + 1 >= argc) { std::fprintf(stderr, "%s takes a value\n", a.c_str()); return 2; }
    if (a == "--tokens") tokens = argv[i + 1];
    else if (a == "--peak-gb-s") peak = std::atof(argv[i + 1]);
    else if (a == "--calls") calls = std::atoi(argv[i + 1]);
    else if (a == "--algos") n_algos = std::atoi(argv[i + 1]);
    else if (a == "--shapes") shapes = "," + std::string(argv[i + 1]) + ",";
    else { std::fprintf(stderr, "unknown option %s\n", a.c_str()); return 2; }
  }
  const std::vector<int> counts = parse_ints(tokens);
  const int max_tokens = *std::max_element(counts.begin(), counts.end());
  cudaDeviceProp prop{};
  TANDEM_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  std::printf("%s, %d SMs, L2 %d MB; peak %.0f GB/s\n", prop.name, prop.multiProcessorCount, prop.l2CacheSize >> 20,
              peak);
  if (fp8) return run_fp8(counts, peak, calls, n_algos);
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
    if (!shapes.empty() && shapes.find("," + std::string(sh.name) + ",") == std::string::npos) continue;
    const int64_t wbytes = sh.rows * sh.cols * 2;
    const int64_t copies = std::max<int64_t>(2, (512ll << 20) / wbytes + 1);
    std::vector<DeviceBuffer> w;
    for (int64_t c = 0; c < copies; ++c) {
      w.emplace_back(static_cast<size_t>(wbytes));
      TANDEM_CUDA_CHECK(cudaMemset(w.back().get(), 0x38, static_cast<size_t>(wbytes)));  // f16 0.53
    }
    const int m = static_cast<int>(sh.rows), k = static_cast<int>(sh.cols);
    for (int n : counts) {
      auto time = [&](auto&& call) { return time_calls(s, e0, e1, calls, copies, call); };
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
      if (search && best >= 0) {
        int screened = 0;
        auto time_config = [&](const cublasLtMatmulAlgo_t& al, int full) {
          ++screened;
          bool ok = true;
          const double us = time_calls(s, e0, e1, full ? calls : 5, copies, [&](int64_t c) {
            ok = ok && cublasLtMatmul(lt, op, &alpha, w[c].get(), la, x.get(), lb, &beta, y.get(), lc, y.get(), lc,
                                      &al, workspace.get(), workspace_bytes, s) == CUBLAS_STATUS_SUCCESS;
          });
          return ok ? us : 1e30;
        };
        const std::vector<Found> top = search_configs(lt, op, la, lb, lc, workspace_bytes, time_config);
        const double heuristic_us = time([&](int64_t c) {  // the heuristic's best again, beside the search's
          TANDEM_CUBLAS_CHECK(cublasLtMatmul(lt, op, &alpha, w[c].get(), la, x.get(), lb, &beta, y.get(), lc, y.get(),
                                             lc, &found[static_cast<size_t>(best)].algo, workspace.get(),
                                             workspace_bytes, s));
        });
        std::printf("  search (%d timed): heuristic best %.1f us (%.1f%%) [%s]\n", screened - 10, heuristic_us,
                    bw(heuristic_us), describe(found[static_cast<size_t>(best)].algo).c_str());
        for (size_t i = 0; i < top.size() && i < 5; ++i)
          std::printf("    %.1f us (%.1f%%) %s\n", top[i].us, bw(top[i].us), describe(top[i].algo).c_str());
      }
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
