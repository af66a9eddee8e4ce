// Decode GEMV speed on the Llama-3-8B shapes (hidden 4096, FFN 14336, 32/8
// heads of 128, vocab 128256), as the CUDA engine runs them at 1..8 tokens.
// Each matrix has enough distinct copies (>= 512 MB in all) that every call
// reads its weights from HBM, as a decode step does. Prints µs per call, the
// weight bytes read per second and their share of --peak-gb-s.
//
// 8-bit formats (q8_0, int8) quantize x first and run the dp4a GEMV, timed
// together, as the engine runs them; past 4 tokens they run the int8
// tensor-core GEMM (gemm_q8) on the same quantized x, as the engine does
// for decode batches (--q8 gemv keeps the GEMV at every count, --q8 mma
// takes gemm_q8 at every count). Other formats past 8 tokens run the
// tensor-core GEMM (cuBLAS, x converted to 16-bit first), as the engine does
// for larger decode batches.
//
//   build/bin/cuda_gemv_bench [--formats f16,bf16,q8_0,int8] [--tokens 1,2,4,8,16,32,64]
//                             [--peak-gb-s 3350] [--calls 300] [--q8 engine|gemv|mma]
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
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
  bool silu_input;  // down: reads silu(gate) * up; down_x: reads x as it is
};
const Shape kShapes[] = {{"qkv", 6144, 4096, false},      {"o", 4096, 4096, false},
                         {"gate_up", 28672, 4096, false}, {"down", 4096, 14336, true},
                         {"down_x", 4096, 14336, false},
                         {"lm_head", 128256, 4096, false}};

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> out;
  size_t p = 0;
  while (p <= s.size()) {
    const size_t q = s.find(',', p);
    out.push_back(s.substr(p, q == std::string::npos ? std::string::npos : q - p));
    if (q == std::string::npos) break;
    p = q + 1;
  }
  return out;
}

WeightFormat parse_format(const std::string& s) {
  if (s == "f16") return WeightFormat::F16;
  if (s == "bf16") return WeightFormat::BF16;
  if (s == "q8_0") return WeightFormat::Q8_0;
  if (s == "int8") return WeightFormat::I8Row;
  if (s == "fp8") return WeightFormat::F8Row;
  if (s == "f32") return WeightFormat::F32;
  std::fprintf(stderr, "unknown format %s\n", s.c_str());
  std::exit(2);
}

// Bytes a GEMV reads for `w`: weights and scales.
int64_t matrix_bytes(WeightFormat f, int64_t rows, int64_t cols) {
  int64_t b = rows * cols * weight_format_bytes(f);
  if (f == WeightFormat::Q8_0) b += rows * (cols / 32) * 2;
  if (f == WeightFormat::I8Row || f == WeightFormat::F8Row) b += rows * 4;
  return b;
}

}  // namespace

int main(int argc, char** argv) {
  std::string formats = "f16,bf16,q8_0,int8", tokens = "1,2,4,8,16,32";
  double peak = 3350;
  int calls = 300;
  std::string q8_path = "engine";
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    if (a == "--formats") formats = argv[i + 1];
    else if (a == "--tokens") tokens = argv[i + 1];
    else if (a == "--peak-gb-s") peak = std::atof(argv[i + 1]);
    else if (a == "--calls") calls = std::atoi(argv[i + 1]);
    else if (a == "--q8") q8_path = argv[i + 1];
    else { std::fprintf(stderr, "unknown option %s\n", a.c_str()); return 2; }
  }
  if (q8_path != "engine" && q8_path != "gemv" && q8_path != "mma") {
    std::fprintf(stderr, "--q8 takes engine, gemv or mma, not %s\n", q8_path.c_str());
    return 2;
  }
  cudaDeviceProp prop{};
  TANDEM_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  std::printf("%s, L2 %d MB; peak %.0f GB/s\n", prop.name, prop.l2CacheSize >> 20, peak);
  std::printf("%-8s %-6s %3s %10s %10s %7s\n", "matrix", "format", "n", "us/call", "GB/s", "%peak");

  cudaStream_t s;
  TANDEM_CUDA_CHECK(cudaStreamCreate(&s));
  cudaEvent_t e0, e1;
  TANDEM_CUDA_CHECK(cudaEventCreate(&e0));
  TANDEM_CUDA_CHECK(cudaEventCreate(&e1));
  constexpr int kMaxTokens = 128;
  DeviceBuffer x(kMaxTokens * 2 * 14336 * sizeof(float)), y(kMaxTokens * 128256 * sizeof(float));
  Gemm gemm(s);
  DeviceBuffer xq(kMaxTokens * 14336), xd(kMaxTokens * 14336 / 32 * sizeof(float));
  const int sm_count = prop.multiProcessorCount;
  const bool int8_tensor_cores = gemm_q8_init(0);
  int64_t workspace_floats = 1;
  for (const Shape& sh : kShapes)
    workspace_floats = std::max(workspace_floats, gemm_q8_workspace_floats(sh.rows, sh.cols, sm_count));
  DeviceBuffer q8_workspace(static_cast<size_t>(workspace_floats) * sizeof(float));
  {
    // x values in [-1, 1]: the speed does not depend on them.
    std::vector<float> hx(kMaxTokens * 2 * 14336);
    for (size_t i = 0; i < hx.size(); ++i) hx[i] = static_cast<float>((i * 2654435761u) % 2001) / 1000.0f - 1.0f;
    TANDEM_CUDA_CHECK(cudaMemcpy(x.get(), hx.data(), hx.size() * 4, cudaMemcpyHostToDevice));
  }
  for (const std::string& fname : split(formats)) {
    const WeightFormat f = parse_format(fname);
    for (const Shape& sh : kShapes) {
      const int64_t bytes = matrix_bytes(f, sh.rows, sh.cols);
      const int64_t copies = std::max<int64_t>(2, (512ll << 20) / bytes + 1);
      const int64_t wbytes = sh.rows * sh.cols * weight_format_bytes(f);
      const int64_t sbytes = bytes - wbytes;
      std::vector<DeviceBuffer> data, scales;
      std::vector<DeviceMatrix> mats;
      for (int64_t c = 0; c < copies; ++c) {
        data.emplace_back(static_cast<size_t>(wbytes));
        // 0x38 bytes: f16 0.53, bf16 4.4e-5, int8 56, e4m3 1.0: finite everywhere.
        TANDEM_CUDA_CHECK(cudaMemset(data.back().get(), 0x38, static_cast<size_t>(wbytes)));
        scales.emplace_back(static_cast<size_t>(std::max<int64_t>(sbytes, 4)));
        TANDEM_CUDA_CHECK(cudaMemset(scales.back().get(), 0x10, static_cast<size_t>(std::max<int64_t>(sbytes, 4))));
        mats.push_back(DeviceMatrix{f, sh.rows, sh.cols, data.back().get(), scales.back().get()});
      }
      for (const std::string& ts : split(tokens)) {
        const int n = std::atoi(ts.c_str());
        const bool q8 = gemv_takes_quantized_input(f);
        const bool use_mma = q8 && int8_tensor_cores && (q8_path == "mma" || (q8_path == "engine" && n > 4));
        const bool use_gemm = !q8 && n > 8;  // past the GEMV's 8 tokens: the tensor-core GEMM, as the engine runs it
        if (use_gemm && sh.silu_input) continue;
        auto call = [&](int i) {
          const DeviceMatrix& w = mats[static_cast<size_t>(i % copies)];
          if (use_gemm) {
            gemm.run(w, x.get<float>(), n, y.get<float>(), sh.rows, false);
          } else if (q8) {
            // As the engine runs 8-bit weights: x quantized, then the dp4a GEMV or the int8 GEMM.
            if (sh.silu_input) quantize_silu_mul(x.get<float>(), n, sh.cols, xq.get<int8_t>(), xd.get<float>(), s);
            else quantize_activations(x.get<float>(), n, sh.cols, xq.get<int8_t>(), xd.get<float>(), s);
            if (use_mma)
              gemm_q8(w, xq.get<int8_t>(), xd.get<float>(), n, y.get<float>(), sh.rows, sh.silu_input, sm_count,
                      q8_workspace.get<float>(), s);
            else gemv_q8(w, xq.get<int8_t>(), xd.get<float>(), n, y.get<float>(), sh.rows, sh.silu_input, s);
          } else if (sh.silu_input) {
            gemv_silu_mul(w, x.get<float>(), n, y.get<float>(), sh.rows, true, s);
          } else {
            gemv(w, x.get<float>(), n, y.get<float>(), sh.rows, false, s);
          }
        };
        for (int i = 0; i < static_cast<int>(copies); ++i) call(i);  // warm up
        TANDEM_CUDA_CHECK(cudaEventRecord(e0, s));
        for (int i = 0; i < calls; ++i) call(i);
        TANDEM_CUDA_CHECK(cudaEventRecord(e1, s));
        TANDEM_CUDA_CHECK(cudaEventSynchronize(e1));
        float ms = 0;
        TANDEM_CUDA_CHECK(cudaEventElapsedTime(&ms, e0, e1));
        const double us = 1000.0 * ms / calls;
        const double gbs = static_cast<double>(bytes) / (us * 1e3);
        std::printf("%-8s %-6s %3d %10.2f %10.1f %6.1f%%\n", sh.name, fname.c_str(), n, us, gbs, 100.0 * gbs / peak);
      }
    }
  }
  return 0;
}
