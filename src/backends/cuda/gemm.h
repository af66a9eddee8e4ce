// Prefill matmul through cuBLAS tensor cores: y = W x for many tokens.
#pragma once

#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <map>
#include <set>
#include <tuple>
#include <vector>

#include "backends/cuda/device_buffer.h"
#include "backends/cuda/kernels.h"

namespace tandem::cuda {

class Gemm {
 public:
  // fp8_tensor_cores false: FP8 rows are dequantized like other 8-bit weights
  // (tests use it to check that path on GPUs that have FP8 tensor cores).
  explicit Gemm(cudaStream_t stream, bool fp8_tensor_cores = true);
  ~Gemm();
  Gemm(const Gemm&) = delete;
  Gemm& operator=(const Gemm&) = delete;

  // y[t, r] = (accumulate ? y[t, r] : 0) + sum_c W[r, c] * x[t, c], t < n_tokens.
  //   x: [n_tokens, w.cols] f32; y: [n_tokens, ldy] f32, ldy >= w.rows.
  // F16/BF16 weights multiply x rounded to the same type, accumulating in
  // f32. FP8 rows (F8Row) on FP8 tensor cores (sm_89 and later, through
  // cuBLASLt): x quantized per token to E4M3 (scale max|x| / 448), the
  // product then scaled by the weight row's and the token's scales. Other
  // 8-bit weights (Q8_0, int8) are dequantized to f16 a slice of rows at a
  // time; F32
  // weights use f32 GEMM. CPU twin: cpu::matmul_ref.
  void run(const DeviceMatrix& w, const float* x, int64_t n_tokens, float* y, int64_t ldy, bool accumulate);

  // The type run() rounds x to for w: BF16 for BF16 weights, F16 for the
  // others (F32 weights take x as it is).
  static DType input_type(WeightFormat format);
  // Whether run() takes F8Row weights on FP8 tensor cores here.
  bool fp8_tensor_cores() const { return fp8_; }
  // Room for n_elements of x rounded to 16 bits. Returns true when the buffer
  // moved: a CUDA graph captured with it must be captured again.
  bool reserve_input(int64_t n_elements);
  // The same for the FP8 path's scratch: n_tokens of up to `cols` inputs and
  // `rows` outputs.
  bool reserve_fp8(int64_t n_tokens, int64_t cols, int64_t rows);
  // The FP8 path in parts, for a caller that quantizes x or applies the
  // scales in kernels of its own (the runner's FFN). run() on FP8 rows is
  // quantize_tokens_fp8 into fp8_input(), fp8_product, then scale_product.
  struct Fp8Input {
    uint8_t* q = nullptr;   // [n_tokens, cols] E4M3
    float* scale = nullptr;  // [n_tokens]
  };
  // Where run_fp8_input() reads x: room for n_tokens x cols (reserve_fp8
  // first where the buffers must not move).
  Fp8Input fp8_input(int64_t n_tokens, int64_t cols);
  // Whether products of F8Row w over n_tokens run on FP8 tensor cores
  // (fp8_tensor_cores() and a cuBLASLt kernel for the shape).
  bool fp8_takes(const DeviceMatrix& w, int64_t n_tokens);
  // product[t, r] = sum_c W8[r, c] q[t, c], q from fp8_input(), before the
  // scales (w.scales[r] and the token's). product: [n_tokens, w.rows] f32.
  // Needs fp8_takes(w, n_tokens).
  void fp8_product(const DeviceMatrix& w, int64_t n_tokens, float* product);
  // The same product rounded to BF16 (8 significant bits: the runner's
  // gate·up, whose next stop is E4M3's 4), where fp8_takes_bf16(w,
  // n_tokens): half the bytes to write and read back at prompt sizes. Its
  // cuBLASLt algorithm is the heuristic's first (tune() times f32 output).
  // The runner takes it for gate·up at kBf16ProductFrom tokens and more.
  bool fp8_takes_bf16(const DeviceMatrix& w, int64_t n_tokens);
  void fp8_product(const DeviceMatrix& w, int64_t n_tokens, __nv_bfloat16* product);
  static constexpr int64_t kBf16ProductFrom = 128;
  // run() with x already in fp8_input(). Needs fp8_takes(w, n_tokens).
  void run_fp8_input(const DeviceMatrix& w, int64_t n_tokens, float* y, int64_t ldy, bool accumulate);
  // Allocates the f16 slice that 8-bit weights are dequantized into, at its
  // largest, so that it never moves (decode graphs may capture it).
  void reserve_dequant();
  // run() with x already rounded to input_type(w.format) (not F32 weights).
  //   x_low: [n_tokens, w.cols].
  void run_converted(const DeviceMatrix& w, const void* x_low, int64_t n_tokens, float* y, int64_t ldy,
                     bool accumulate);

  // Picks, by timing, the algorithm of the F16/BF16 products with
  // `weights`' shape for each token-count bucket up to max_tokens (8, 16, 32,
  // 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048): cuBLAS's
  // default and each algorithm cuBLASLt's heuristic offers, timed over
  // `weights` in turn (a model's layers, so that the weights come from HBM as
  // in a step). cuBLAS's own choice is up to 15% slower than the best at
  // some of the 8B shape's products on an H100. Later products of that shape
  // and format with kTunedFrom or more tokens take their bucket's winner
  // when cuBLASLt accepts it for the operands (16-byte aligned pointers and
  // rows of y, cublasLtMatmulAlgoCheck); the rest take cuBLAS's default. The
  // choice follows timings, so it may differ between runs (the sums'
  // rounding with it). Needs room for max_tokens rows of x and y on the GPU
  // for a moment; call outside graph capture. Returns the bucket choices,
  // for the start-up log.
  // Each candidate is timed at the bucket's smallest and largest counts, and
  // the least sum wins. FP8 rows (where fp8_tensor_cores()) are tuned the
  // same way up to 64 tokens, their product alone: the heuristic's first
  // FP8 algorithm (the "default") against the others it offers (on an H100
  // up to 6% faster at the 8B shapes; at 160 tokens the timed choices made
  // a step slower, so larger products keep the heuristic's).
  struct TunedBucket {
    int64_t tokens = 0;          // the bucket's largest token count, which was timed
    double default_us = 0;       // cuBLAS's default (FP8: the heuristic's first algorithm)
    double best_us = 0;          // the winner
    int algo = -1;               // the winner's rank in cuBLASLt's heuristic; -1: the default
  };
  // prefer_lt (tests): take cuBLASLt's fastest algorithm even where cuBLAS's
  // default was faster (FP8: the fastest but the first), so that the tuned
  // path runs.
  std::vector<TunedBucket> tune(const std::vector<const DeviceMatrix*>& weights, int64_t max_tokens,
                                bool prefer_lt = false);
  // Runs run() over `w` once for every token count a step may give it (each
  // count up to 64, then every 16th, and max_tokens), with and without
  // accumulation (and FP8 rows' BF16-output product from kBf16ProductFrom
  // tokens), so that each cuBLAS/cuBLASLt kernel those products take is
  // loaded now. A parallel rank calls it at load: cuBLAS loads a kernel
  // on its first use, which may wait for the whole CUDA context (and so for
  // a collective that waits for a peer) while it holds cuBLASLt's lock, the
  // one the peer's thread then needs to queue its part (docs/PARALLEL.md).
  // Borrows max_tokens rows of x and y on the GPU; call outside graph capture.
  // Returns the number of products run.
  int64_t warm(const DeviceMatrix& w, int64_t max_tokens);
  // The token counts warm() runs, ascending.
  static std::vector<int64_t> warm_counts(int64_t max_tokens);
  // The token-count buckets tune() times (their largest counts).
  static std::vector<int64_t> tuned_buckets();
  // Products of fewer tokens take cuBLAS's default (tests may lower it).
  static constexpr int64_t kTunedFrom = 5;
  void set_tuned_from(int64_t n) { tuned_from_ = n; }

 private:
  // A tuned shape: its buckets' algorithms (tune()).
  struct TunedShape {
    std::vector<int64_t> bucket_tokens;               // ascending
    std::vector<bool> use_lt;                         // per bucket: false = cuBLAS's default won
    std::vector<cublasLtMatmulAlgo_t> algos;          // per bucket
  };
  using ShapeKey = std::tuple<int64_t, int64_t, int>;  // rows, cols, input type (CUDA_R_16F / 16BF / 8F_E4M3)
  // Enqueues y^T = W^T x through cuBLASLt with `algo`; false (nothing
  // enqueued) when the algorithm does not take these operands.
  bool run_lt(const DeviceMatrix& w, const void* x_low, int64_t n_tokens, float* y, int64_t ldy, bool accumulate,
              cudaDataType_t type, const cublasLtMatmulAlgo_t& algo);
  // False (nothing enqueued) when cuBLASLt has no FP8 kernel for the shape.
  bool run_fp8(const DeviceMatrix& w, const float* x, int64_t n_tokens, float* y, int64_t ldy, bool accumulate);
  // One FP8 product's operand layouts and algorithm, made at its first use
  // (the tuned bucket's algorithm where cuBLASLt takes it, else the
  // heuristic's first) and kept: (rows, cols, n_tokens, output type).
  struct Fp8Plan {
    cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
    cublasLtMatmulAlgo_t algo{};
    bool usable = false;  // false: cuBLASLt has no FP8 kernel for it (dequantized instead)
  };
  const Fp8Plan& fp8_plan(int64_t rows, int64_t cols, int64_t n_tokens, cudaDataType_t out = CUDA_R_32F);
  void fp8_product_as(const DeviceMatrix& w, int64_t n_tokens, void* product, cudaDataType_t out);
  std::vector<TunedBucket> tune_fp8(const std::vector<const DeviceMatrix*>& weights, int64_t max_tokens,
                                    bool prefer_lt);

  cudaStream_t stream_;
  cublasHandle_t handle_ = nullptr;
  cublasLtHandle_t lt_ = nullptr;
  bool fp8_ = false;
  cublasLtMatmulDesc_t op8_ = nullptr;  // product^T = W^T x8, E4M3 inputs, f32 accumulation (output: the plan's)
  std::map<std::tuple<int64_t, int64_t, int64_t, int>, Fp8Plan> fp8_plans_;
  std::map<ShapeKey, TunedShape> tuned_;
  int64_t tuned_from_ = kTunedFrom;
  cublasLtMatmulDesc_t op16_ = nullptr;  // y^T = W^T x, f32 accumulation and output (16-bit inputs)
  // One tuned product's operand layouts, made once: (rows, cols, n, ldy, type).
  struct LtLayouts {
    cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
    bool usable = false;  // cuBLASLt accepts the bucket's algorithm for them
  };
  std::map<std::tuple<int64_t, int64_t, int64_t, int64_t, int>, LtLayouts> lt_layouts_;
  static void destroy_layouts(LtLayouts& l);
  static void destroy_layouts(Fp8Plan& p);
  DeviceBuffer x8_;         // [n_tokens, cols] E4M3: x quantized per token
  DeviceBuffer x8_scale_;   // [n_tokens] f32
  DeviceBuffer product_;    // [n_tokens, rows] f32: the FP8 product before scaling
  DeviceBuffer x_low_;      // [n_tokens, cols] f16 or bf16
  DeviceBuffer w_f16_;      // [slice rows, cols] f16 (Q8_0 weights)
  DeviceBuffer workspace_;  // cuBLAS workspace
};

}  // namespace tandem::cuda
