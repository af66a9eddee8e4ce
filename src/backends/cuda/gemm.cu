#include "backends/cuda/gemm.h"

#include <algorithm>
#include <cstdint>
#include <iterator>

#include "backends/cuda/cuda_check.h"

namespace tandem::cuda {
namespace {

// 128 MiB of f16 per slice of 8-bit weights: the 8B shape's down projection
// (4096 x 14336) in one GEMM, gate/up in two (a slice of 2,340 rows made
// cuBLAS pick a split-K kernel at a third of the speed).
constexpr int64_t kDequantSliceElems = int64_t{64} << 20;
constexpr size_t kWorkspaceBytes = size_t{32} << 20;

// The token counts tune() times; a product of n tokens takes the choice of
// the smallest bucket >= n.
constexpr int64_t kTunedBuckets[] = {8, 16, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048};
constexpr int kTuneCandidates = 8;  // cuBLASLt heuristic results timed per bucket
constexpr int64_t kFp8TunedUpTo = 64;  // FP8 products of more tokens take the heuristic's first algorithm
constexpr size_t kLtAlignment = 16;  // bytes: the alignment tuned algorithms may assume

bool aligned(const void* p) { return reinterpret_cast<uintptr_t>(p) % kLtAlignment == 0; }

// What tune() and tune_fp8() time with: two events, and a heuristic
// preference with room for the workspace; released however they end.
struct TuneScratch {
  cudaEvent_t e0 = nullptr, e1 = nullptr;
  cublasLtMatmulPreference_t pref = nullptr;
  TuneScratch() {
    try {
      TANDEM_CUDA_CHECK(cudaEventCreate(&e0));
      TANDEM_CUDA_CHECK(cudaEventCreate(&e1));
      TANDEM_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
      const size_t workspace = kWorkspaceBytes;
      TANDEM_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                               &workspace, sizeof workspace));
    } catch (...) {
      release();
      throw;
    }
  }
  ~TuneScratch() { release(); }
  TuneScratch(const TuneScratch&) = delete;
  TuneScratch& operator=(const TuneScratch&) = delete;
  void release() {
    if (pref) cublasLtMatmulPreferenceDestroy(pref);
    if (e0) cudaEventDestroy(e0);
    if (e1) cudaEventDestroy(e1);
    pref = nullptr;
    e0 = e1 = nullptr;
  }
};

// µs a call of `call(weight)` on `stream`: one pass over the weights to
// warm up, then passes (4 calls at least) timed; -1 when a call fails.
template <typename Call>
double time_over(const std::vector<const DeviceMatrix*>& weights, cudaStream_t stream, cudaEvent_t e0, cudaEvent_t e1,
                 Call&& call) {
  const size_t n = weights.size();
  for (size_t i = 0; i < n; ++i)
    if (!call(*weights[i])) return -1.0;
  const size_t calls = n * ((4 + n - 1) / n);
  TANDEM_CUDA_CHECK(cudaEventRecord(e0, stream));
  for (size_t i = 0; i < calls; ++i) call(*weights[i % n]);
  TANDEM_CUDA_CHECK(cudaEventRecord(e1, stream));
  TANDEM_CUDA_CHECK(cudaEventSynchronize(e1));
  float ms = 0;
  TANDEM_CUDA_CHECK(cudaEventElapsedTime(&ms, e0, e1));
  return 1000.0 * ms / static_cast<double>(calls);
}

// The buckets tune() times for products of up to max_tokens: those up to
// the first that covers it.
std::vector<int64_t> buckets_up_to(int64_t max_tokens) {
  std::vector<int64_t> buckets;
  for (int64_t b : kTunedBuckets) {
    buckets.push_back(b);
    if (b >= max_tokens) break;
  }
  return buckets;
}

}  // namespace

Gemm::Gemm(cudaStream_t stream, bool fp8_tensor_cores) : stream_(stream) {
  TANDEM_CUBLAS_CHECK(cublasCreate(&handle_));
  if (cublasLtCreate(&lt_) != CUBLAS_STATUS_SUCCESS) {
    cublasDestroy(handle_);
    throw Error("cuBLASLt could not be initialized");
  }
  int device = 0, major = 0, minor = 0;
  TANDEM_CUDA_CHECK(cudaGetDevice(&device));
  TANDEM_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
  TANDEM_CUDA_CHECK(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device));
  fp8_ = fp8_tensor_cores && (major > 8 || (major == 8 && minor >= 9));
  TANDEM_CUBLAS_CHECK(cublasSetStream(handle_, stream_));
  workspace_.resize(kWorkspaceBytes);
  TANDEM_CUBLAS_CHECK(cublasSetWorkspace(handle_, workspace_.get(), kWorkspaceBytes));
  // Column-major view, as for cublasGemmEx: y^T [rows, n] = (W^T)^T x^T.
  const cublasOperation_t trans_a = CUBLAS_OP_T, trans_b = CUBLAS_OP_N;
  if (cublasLtMatmulDescCreate(&op16_, CUBLAS_COMPUTE_32F, CUDA_R_32F) != CUBLAS_STATUS_SUCCESS ||
      cublasLtMatmulDescSetAttribute(op16_, CUBLASLT_MATMUL_DESC_TRANSA, &trans_a, sizeof trans_a) !=
          CUBLAS_STATUS_SUCCESS ||
      cublasLtMatmulDescSetAttribute(op16_, CUBLASLT_MATMUL_DESC_TRANSB, &trans_b, sizeof trans_b) !=
          CUBLAS_STATUS_SUCCESS) {
    if (op16_) cublasLtMatmulDescDestroy(op16_);
    cublasLtDestroy(lt_);
    cublasDestroy(handle_);
    throw Error("cuBLASLt could not describe the 16-bit matmul");
  }
  // The FP8 product: the same view, E4M3 operands, unit scales (the row and
  // token scales are applied after, by scale_product).
  if (fp8_ && (cublasLtMatmulDescCreate(&op8_, CUBLAS_COMPUTE_32F, CUDA_R_32F) != CUBLAS_STATUS_SUCCESS ||
               cublasLtMatmulDescSetAttribute(op8_, CUBLASLT_MATMUL_DESC_TRANSA, &trans_a, sizeof trans_a) !=
                   CUBLAS_STATUS_SUCCESS ||
               cublasLtMatmulDescSetAttribute(op8_, CUBLASLT_MATMUL_DESC_TRANSB, &trans_b, sizeof trans_b) !=
                   CUBLAS_STATUS_SUCCESS)) {
    if (op8_) cublasLtMatmulDescDestroy(op8_);
    cublasLtMatmulDescDestroy(op16_);
    cublasLtDestroy(lt_);
    cublasDestroy(handle_);
    throw Error("cuBLASLt could not describe the FP8 matmul");
  }
}

void Gemm::destroy_layouts(LtLayouts& l) {
  if (l.a) cublasLtMatrixLayoutDestroy(l.a);
  if (l.b) cublasLtMatrixLayoutDestroy(l.b);
  if (l.c) cublasLtMatrixLayoutDestroy(l.c);
  l.a = l.b = l.c = nullptr;
}

void Gemm::destroy_layouts(Fp8Plan& p) {
  if (p.a) cublasLtMatrixLayoutDestroy(p.a);
  if (p.b) cublasLtMatrixLayoutDestroy(p.b);
  if (p.c) cublasLtMatrixLayoutDestroy(p.c);
  p.a = p.b = p.c = nullptr;
}

Gemm::~Gemm() {
  for (auto& [key, l] : lt_layouts_) destroy_layouts(l);
  for (auto& [key, p] : fp8_plans_) destroy_layouts(p);
  if (op8_) cublasLtMatmulDescDestroy(op8_);
  if (op16_) cublasLtMatmulDescDestroy(op16_);
  if (lt_) cublasLtDestroy(lt_);
  if (handle_) cublasDestroy(handle_);
}

void Gemm::run(const DeviceMatrix& w, const float* x, int64_t n_tokens, float* y, int64_t ldy, bool accumulate) {
  if (n_tokens == 0) return;
  const float alpha = 1.0f, beta = accumulate ? 1.0f : 0.0f;
  const int m = static_cast<int>(w.rows), n = static_cast<int>(n_tokens), k = static_cast<int>(w.cols);
  const int ldc = static_cast<int>(ldy);
  // Column-major view: W^T is [cols, rows] with lda = cols; x^T is [cols, n]; y^T is [rows, n].
  if (w.format == WeightFormat::F32) {
    TANDEM_CUBLAS_CHECK(cublasGemmEx(handle_, CUBLAS_OP_T, CUBLAS_OP_N, m, n, k, &alpha, w.data, CUDA_R_32F, k, x,
                                     CUDA_R_32F, k, &beta, y, CUDA_R_32F, ldc, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    return;
  }
  if (w.format == WeightFormat::F8Row && fp8_ && run_fp8(w, x, n_tokens, y, ldy, accumulate)) return;
  const DType low = input_type(w.format);
  reserve_input(n_tokens * w.cols);
  convert_f32(x, n_tokens * w.cols, low, x_low_.get(), stream_);
  run_converted(w, x_low_.get(), n_tokens, y, ldy, accumulate);
}

bool Gemm::reserve_input(int64_t n_elements) {
  const size_t bytes = static_cast<size_t>(n_elements) * 2;
  if (bytes <= x_low_.bytes()) return false;
  x_low_.resize(bytes);
  return true;
}

bool Gemm::reserve_fp8(int64_t n_tokens, int64_t cols, int64_t rows) {
  bool moved = false;
  auto grow = [&](DeviceBuffer& b, size_t bytes) {
    if (bytes <= b.bytes()) return;
    b.resize(bytes);
    moved = true;
  };
  grow(x8_, static_cast<size_t>(n_tokens * cols));
  grow(x8_scale_, static_cast<size_t>(n_tokens) * sizeof(float));
  grow(product_, static_cast<size_t>(n_tokens * rows) * sizeof(float));
  return moved;
}

const Gemm::Fp8Plan& Gemm::fp8_plan(int64_t rows, int64_t cols, int64_t n_tokens, cudaDataType_t out) {
  const auto key = std::make_tuple(rows, cols, n_tokens, static_cast<int>(out));
  auto found = fp8_plans_.find(key);
  if (found != fp8_plans_.end()) return found->second;
  // Made aside and kept only once its layouts exist (a failure here throws
  // and leaves no plan behind).
  Fp8Plan made;
  const uint64_t m = static_cast<uint64_t>(rows), n = static_cast<uint64_t>(n_tokens), k = static_cast<uint64_t>(cols);
  try {
    TANDEM_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&made.a, CUDA_R_8F_E4M3, k, m, cols));
    TANDEM_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&made.b, CUDA_R_8F_E4M3, k, n, cols));
    TANDEM_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&made.c, out, m, n, rows));
  } catch (...) {
    destroy_layouts(made);
    throw;
  }
  // Owned by the map from here, so that the destructor releases the layouts.
  Fp8Plan& p = fp8_plans_.emplace(key, made).first->second;
  // The tuned bucket's algorithm (timed with f32 output), where cuBLASLt
  // takes it for this count.
  const auto tuned = tuned_.find(ShapeKey{rows, cols, static_cast<int>(CUDA_R_8F_E4M3)});
  if (tuned != tuned_.end() && n_tokens >= tuned_from_ && out == CUDA_R_32F) {
    const TunedShape& t = tuned->second;
    const auto bucket = std::lower_bound(t.bucket_tokens.begin(), t.bucket_tokens.end(), n_tokens);
    const size_t i = static_cast<size_t>(bucket - t.bucket_tokens.begin());
    if (bucket != t.bucket_tokens.end() && t.use_lt[i]) {
      const cublasLtMatmulAlgo_t& algo = t.algos[i];
      cublasLtMatmulHeuristicResult_t check{};
      if (cublasLtMatmulAlgoCheck(lt_, op8_, p.a, p.b, p.c, p.c, &algo, &check) == CUBLAS_STATUS_SUCCESS &&
          check.workspaceSize <= kWorkspaceBytes) {
        p.algo = algo;
        p.usable = true;
        return p;
      }
    }
  }
  cublasLtMatmulPreference_t pref = nullptr;
  TANDEM_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
  const size_t workspace = kWorkspaceBytes;
  cublasLtMatmulHeuristicResult_t result{};
  int n_results = 0;
  cublasStatus_t st = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace,
                                                           sizeof workspace);
  if (st == CUBLAS_STATUS_SUCCESS)
    st = cublasLtMatmulAlgoGetHeuristic(lt_, op8_, p.a, p.b, p.c, p.c, pref, 1, &result, &n_results);
  cublasLtMatmulPreferenceDestroy(pref);
  p.usable = st == CUBLAS_STATUS_SUCCESS && n_results > 0;  // else this count dequantizes from now on
  if (p.usable) p.algo = result.algo;
  return p;
}

Gemm::Fp8Input Gemm::fp8_input(int64_t n_tokens, int64_t cols) {
  reserve_fp8(n_tokens, cols, 0);
  return Fp8Input{x8_.get<uint8_t>(), x8_scale_.get<float>()};
}

bool Gemm::fp8_takes(const DeviceMatrix& w, int64_t n_tokens) {
  return fp8_ && w.format == WeightFormat::F8Row && n_tokens > 0 && fp8_plan(w.rows, w.cols, n_tokens).usable;
}

bool Gemm::fp8_takes_bf16(const DeviceMatrix& w, int64_t n_tokens) {
  return fp8_takes(w, n_tokens) && fp8_plan(w.rows, w.cols, n_tokens, CUDA_R_16BF).usable;
}

void Gemm::fp8_product(const DeviceMatrix& w, int64_t n_tokens, float* product) {
  fp8_product_as(w, n_tokens, product, CUDA_R_32F);
}

void Gemm::fp8_product(const DeviceMatrix& w, int64_t n_tokens, __nv_bfloat16* product) {
  fp8_product_as(w, n_tokens, product, CUDA_R_16BF);
}

void Gemm::fp8_product_as(const DeviceMatrix& w, int64_t n_tokens, void* product, cudaDataType_t out) {
  // product^T [rows, n] (column-major) = W [rows, cols] . x8^T: FP8 tensor
  // cores take A transposed (W row-major is A^T column-major) and B as is.
  const Fp8Plan& p = fp8_plan(w.rows, w.cols, n_tokens, out);
  check(p.usable, "internal: no FP8 kernel for this product");
  check(x8_.bytes() >= static_cast<size_t>(n_tokens * w.cols), "internal: the FP8 GEMM's input is not in fp8_input()");
  const float one = 1.0f, zero = 0.0f;
  TANDEM_CUBLAS_CHECK(cublasLtMatmul(lt_, op8_, &one, w.data, p.a, x8_.get(), p.b, &zero, product, p.c, product,
                                     p.c, &p.algo, workspace_.get(), kWorkspaceBytes, stream_));
}

void Gemm::run_fp8_input(const DeviceMatrix& w, int64_t n_tokens, float* y, int64_t ldy, bool accumulate) {
  // x is already in x8_ (which must not move now); only the product's
  // buffer may grow.
  check(x8_.bytes() >= static_cast<size_t>(n_tokens * w.cols) && x8_scale_.bytes() >= static_cast<size_t>(n_tokens) * 4,
        "internal: the FP8 GEMM's input was not quantized into fp8_input()");
  if (product_.bytes() < static_cast<size_t>(n_tokens * w.rows) * sizeof(float))
    product_.resize(static_cast<size_t>(n_tokens * w.rows) * sizeof(float));
  fp8_product(w, n_tokens, product_.get<float>());
  scale_product(product_.get<float>(), n_tokens, w.rows, static_cast<const float*>(w.scales), x8_scale_.get<float>(),
                y, ldy, accumulate, stream_);
}

bool Gemm::run_fp8(const DeviceMatrix& w, const float* x, int64_t n_tokens, float* y, int64_t ldy, bool accumulate) {
  if (!fp8_plan(w.rows, w.cols, n_tokens).usable) return false;  // dequantized instead
  const Fp8Input in = fp8_input(n_tokens, w.cols);
  // x per token to E4M3, scale max|x| / 448 (quantize_rows' rule).
  quantize_tokens_fp8(x, n_tokens, w.cols, in.q, in.scale, stream_);
  run_fp8_input(w, n_tokens, y, ldy, accumulate);
  return true;
}

void Gemm::reserve_dequant() { w_f16_.resize(static_cast<size_t>(kDequantSliceElems) * sizeof(__half)); }

DType Gemm::input_type(WeightFormat format) {
  if (format == WeightFormat::F32) return DType::F32;
  return format == WeightFormat::BF16 ? DType::BF16 : DType::F16;
}

void Gemm::run_converted(const DeviceMatrix& w, const void* x_low, int64_t n_tokens, float* y, int64_t ldy,
                         bool accumulate) {
  check(w.format != WeightFormat::F32, "internal: f32 weights take f32 input");
  if (n_tokens == 0) return;
  const float alpha = 1.0f, beta = accumulate ? 1.0f : 0.0f;
  const int m = static_cast<int>(w.rows), n = static_cast<int>(n_tokens), k = static_cast<int>(w.cols);
  const int ldc = static_cast<int>(ldy);
  const cudaDataType_t low_type = input_type(w.format) == DType::BF16 ? CUDA_R_16BF : CUDA_R_16F;
  if (w.format == WeightFormat::F16 || w.format == WeightFormat::BF16) {
    const auto tuned = tuned_.find(ShapeKey{w.rows, w.cols, static_cast<int>(low_type)});
    if (tuned != tuned_.end() && n_tokens >= tuned_from_) {
      const TunedShape& t = tuned->second;
      const auto bucket = std::lower_bound(t.bucket_tokens.begin(), t.bucket_tokens.end(), n_tokens);
      if (bucket != t.bucket_tokens.end()) {
        const size_t i = static_cast<size_t>(bucket - t.bucket_tokens.begin());
        if (t.use_lt[i] && run_lt(w, x_low, n_tokens, y, ldy, accumulate, low_type, t.algos[i])) return;
      }
    }
    TANDEM_CUBLAS_CHECK(cublasGemmEx(handle_, CUBLAS_OP_T, CUBLAS_OP_N, m, n, k, &alpha, w.data, low_type, k, x_low,
                                     low_type, k, &beta, y, CUDA_R_32F, ldc, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    return;
  }
  // 8-bit weights: dequantized to f16 a slice of rows at a time.
  const int64_t slice_rows = std::max<int64_t>(1, std::min<int64_t>(w.rows, kDequantSliceElems / w.cols));
  w_f16_.resize(static_cast<size_t>(slice_rows * w.cols) * sizeof(__half));
  for (int64_t r0 = 0; r0 < w.rows; r0 += slice_rows) {
    const int64_t rows = std::min(slice_rows, w.rows - r0);
    dequantize_to_f16(w, r0, rows, w_f16_.get<__half>(), stream_);
    TANDEM_CUBLAS_CHECK(cublasGemmEx(handle_, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(rows), n, k, &alpha,
                                     w_f16_.get(), CUDA_R_16F, k, x_low, CUDA_R_16F, k, &beta, y + r0, CUDA_R_32F, ldc,
                                     CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  }
}

bool Gemm::run_lt(const DeviceMatrix& w, const void* x_low, int64_t n_tokens, float* y, int64_t ldy, bool accumulate,
                  cudaDataType_t type, const cublasLtMatmulAlgo_t& algo) {
  if (!aligned(w.data) || !aligned(x_low) || !aligned(y) || (ldy * sizeof(float)) % kLtAlignment != 0) return false;
  const auto key = std::make_tuple(w.rows, w.cols, n_tokens, ldy, static_cast<int>(type));
  auto found = lt_layouts_.find(key);
  if (found == lt_layouts_.end()) {
    LtLayouts l;
    // Owned by the map from here, so that the destructor releases them.
    found = lt_layouts_.emplace(key, l).first;
    LtLayouts& made = found->second;
    TANDEM_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&made.a, type, static_cast<uint64_t>(w.cols),
                                                   static_cast<uint64_t>(w.rows), w.cols));
    TANDEM_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&made.b, type, static_cast<uint64_t>(w.cols),
                                                   static_cast<uint64_t>(n_tokens), w.cols));
    TANDEM_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&made.c, CUDA_R_32F, static_cast<uint64_t>(w.rows),
                                                   static_cast<uint64_t>(n_tokens), ldy));
    // The bucket's algorithm was timed at its largest count: cuBLASLt says
    // whether it takes this one too, and with how much workspace.
    cublasLtMatmulHeuristicResult_t check{};
    made.usable = cublasLtMatmulAlgoCheck(lt_, op16_, made.a, made.b, made.c, made.c, &algo, &check) ==
                      CUBLAS_STATUS_SUCCESS &&
                  check.workspaceSize <= kWorkspaceBytes;
  }
  if (!found->second.usable) return false;
  const float alpha = 1.0f, beta = accumulate ? 1.0f : 0.0f;
  const LtLayouts& l = found->second;
  const cublasStatus_t status = cublasLtMatmul(lt_, op16_, &alpha, w.data, l.a, x_low, l.b, &beta, y, l.c, y, l.c,
                                               &algo, workspace_.get(), kWorkspaceBytes, stream_);
  // Refused before anything was enqueued: cuBLAS's default takes it. Any
  // other failure is an error (a fallback could add a product twice).
  if (status == CUBLAS_STATUS_NOT_SUPPORTED || status == CUBLAS_STATUS_INVALID_VALUE) {
    found->second.usable = false;
    return false;
  }
  TANDEM_CUBLAS_CHECK(status);
  return true;
}

std::vector<int64_t> Gemm::warm_counts(int64_t max_tokens) {
  std::vector<int64_t> counts;
  for (int64_t n = 1; n <= max_tokens; n += n < 64 ? 1 : 16) counts.push_back(n);
  if (!counts.empty() && counts.back() != max_tokens) counts.push_back(max_tokens);
  return counts;
}

int64_t Gemm::warm(const DeviceMatrix& w, int64_t max_tokens) {
  if (w.data == nullptr || max_tokens <= 0) return 0;
  DeviceBuffer x(static_cast<size_t>(max_tokens * w.cols) * sizeof(float));
  DeviceBuffer y(static_cast<size_t>(max_tokens * w.rows) * sizeof(float));
  TANDEM_CUDA_CHECK(cudaMemsetAsync(x.get(), 0, x.bytes(), stream_));
  TANDEM_CUDA_CHECK(cudaMemsetAsync(y.get(), 0, y.bytes(), stream_));
  int64_t runs = 0;
  for (int64_t n : warm_counts(max_tokens)) {
    for (bool accumulate : {false, true}) {
      run(w, x.get<float>(), n, y.get<float>(), w.rows, accumulate);
      ++runs;
    }
    // The BF16-output FP8 product (the runner's prompt-sized gate·up), on
    // the input run() just quantized.
    if (w.format == WeightFormat::F8Row && n >= kBf16ProductFrom && fp8_takes_bf16(w, n)) {
      fp8_product(w, n, y.get<__nv_bfloat16>());
      ++runs;
    }
  }
  // The buffers are freed on return (which waits for the GPU anyway).
  TANDEM_CUDA_CHECK(cudaStreamSynchronize(stream_));
  return runs;
}

std::vector<int64_t> Gemm::tuned_buckets() { return {std::begin(kTunedBuckets), std::end(kTunedBuckets)}; }

std::vector<Gemm::TunedBucket> Gemm::tune(const std::vector<const DeviceMatrix*>& all_weights, int64_t max_tokens,
                                          bool prefer_lt) {
  std::vector<TunedBucket> out;
  // Unaligned weights never take a tuned algorithm (run_lt): not timed.
  std::vector<const DeviceMatrix*> weights;
  for (const DeviceMatrix* w : all_weights)
    if (aligned(w->data)) weights.push_back(w);
  if (weights.empty() || max_tokens <= 0) return out;
  const DeviceMatrix& w0 = *weights[0];
  if (w0.format == WeightFormat::F8Row && fp8_) return tune_fp8(weights, max_tokens, prefer_lt);
  if (w0.format != WeightFormat::F16 && w0.format != WeightFormat::BF16) return out;
  for (const DeviceMatrix* w : weights)
    check(w->format == w0.format && w->rows == w0.rows && w->cols == w0.cols,
          "internal: Gemm::tune takes weights of one shape and format");
  const cudaDataType_t type = w0.format == WeightFormat::BF16 ? CUDA_R_16BF : CUDA_R_16F;
  const std::vector<int64_t> buckets = buckets_up_to(max_tokens);
  const int64_t most = buckets.back();
  DeviceBuffer x(static_cast<size_t>(most * w0.cols) * 2), y(static_cast<size_t>(most * w0.rows) * sizeof(float));
  TANDEM_CUDA_CHECK(cudaMemsetAsync(x.get(), 0x2A, x.bytes(), stream_));  // small finite values in f16 and bf16
  TunedShape shape;
  {
    const TuneScratch scratch;
    cudaEvent_t e0 = scratch.e0, e1 = scratch.e1;
    cublasLtMatmulPreference_t pref = scratch.pref;
    const uint32_t alignment = kLtAlignment;
    for (auto attr : {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
                      CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES})
      TANDEM_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, attr, &alignment, sizeof alignment));
    const float alpha = 1.0f, beta = 0.0f;
    auto time = [&](auto&& call) { return time_over(weights, stream_, e0, e1, call); };
    int64_t below = 0;  // the previous bucket's largest count
    for (int64_t n : buckets) {
      const int m = static_cast<int>(w0.rows), k = static_cast<int>(w0.cols);
      // Each candidate is timed at the bucket's largest count and at its
      // smallest, and the least sum of the two wins.
      const int64_t lo = std::max(below + 1, std::min(n, tuned_from_));
      below = n;
      TunedBucket b;
      b.tokens = n;
      auto time_default = [&](int64_t count) {
        return time([&](const DeviceMatrix& w) {
          TANDEM_CUBLAS_CHECK(cublasGemmEx(handle_, CUBLAS_OP_T, CUBLAS_OP_N, m, static_cast<int>(count), k, &alpha,
                                           w.data, type, k, x.get(), type, k, &beta, y.get(), CUDA_R_32F, m,
                                           CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
          return true;
        });
      };
      b.default_us = b.best_us = time_default(n);
      double best_sum = b.default_us + (lo < n ? time_default(lo) : 0.0);
      cublasLtMatmulAlgo_t best{};
      // This bucket's operand layouts (at n and at lo tokens), released
      // however the timing ends.
      struct Layouts {
        LtLayouts l, low;
        ~Layouts() {
          destroy_layouts(l);
          destroy_layouts(low);
        }
      } made;
      cublasLtMatrixLayout_t& la = made.l.a;
      cublasLtMatrixLayout_t& lb = made.l.b;
      cublasLtMatrixLayout_t& lc = made.l.c;
      TANDEM_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&la, type, static_cast<uint64_t>(k), static_cast<uint64_t>(m), k));
      TANDEM_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&lb, type, static_cast<uint64_t>(k), static_cast<uint64_t>(n), k));
      TANDEM_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&lc, CUDA_R_32F, static_cast<uint64_t>(m), static_cast<uint64_t>(n), m));
      TANDEM_CUBLAS_CHECK(
          cublasLtMatrixLayoutCreate(&made.low.b, type, static_cast<uint64_t>(k), static_cast<uint64_t>(lo), k));
      TANDEM_CUBLAS_CHECK(
          cublasLtMatrixLayoutCreate(&made.low.c, CUDA_R_32F, static_cast<uint64_t>(m), static_cast<uint64_t>(lo), m));
      cublasLtMatmulHeuristicResult_t found[kTuneCandidates];
      int n_found = 0;
      if (cublasLtMatmulAlgoGetHeuristic(lt_, op16_, la, lb, lc, lc, pref, kTuneCandidates, found, &n_found) !=
          CUBLAS_STATUS_SUCCESS)
        n_found = 0;
      for (int a = 0; a < n_found; ++a) {
        if (found[a].state != CUBLAS_STATUS_SUCCESS || found[a].workspaceSize > kWorkspaceBytes) continue;
        auto time_lt = [&](cublasLtMatrixLayout_t lx, cublasLtMatrixLayout_t ly) {
          return time([&](const DeviceMatrix& w) {
            return cublasLtMatmul(lt_, op16_, &alpha, w.data, la, x.get(), lx, &beta, y.get(), ly, y.get(), ly,
                                  &found[a].algo, workspace_.get(), kWorkspaceBytes, stream_) == CUBLAS_STATUS_SUCCESS;
          });
        };
        const double us = time_lt(lb, lc);
        if (us <= 0) continue;
        const double us_lo = lo < n ? time_lt(made.low.b, made.low.c) : 0.0;
        if (us_lo < 0) continue;
        if (us + us_lo < best_sum || (prefer_lt && b.algo < 0)) {
          best_sum = us + us_lo;
          b.best_us = us;
          b.algo = a;
          best = found[a].algo;
        }
      }
      shape.bucket_tokens.push_back(n);
      shape.use_lt.push_back(b.algo >= 0);
      shape.algos.push_back(best);
      out.push_back(b);
    }
  }
  // Layouts checked against an earlier choice for this shape are checked again.
  for (auto it = lt_layouts_.begin(); it != lt_layouts_.end();) {
    if (std::get<0>(it->first) == w0.rows && std::get<1>(it->first) == w0.cols &&
        std::get<4>(it->first) == static_cast<int>(type)) {
      destroy_layouts(it->second);
      it = lt_layouts_.erase(it);
    } else {
      ++it;
    }
  }
  tuned_[ShapeKey{w0.rows, w0.cols, static_cast<int>(type)}] = std::move(shape);
  return out;
}

std::vector<Gemm::TunedBucket> Gemm::tune_fp8(const std::vector<const DeviceMatrix*>& weights, int64_t max_tokens,
                                              bool prefer_lt) {
  std::vector<TunedBucket> out;
  const DeviceMatrix& w0 = *weights[0];
  for (const DeviceMatrix* w : weights)
    check(w->format == w0.format && w->rows == w0.rows && w->cols == w0.cols,
          "internal: Gemm::tune takes weights of one shape and format");
  // Decode batches only: past 64 tokens the timed choice made steps slower
  // than the heuristic's own (H100, docs/PERFORMANCE.md).
  const std::vector<int64_t> buckets = buckets_up_to(std::min(max_tokens, kFp8TunedUpTo));
  const int64_t most = buckets.back();
  DeviceBuffer x8(static_cast<size_t>(most * w0.cols)), product(static_cast<size_t>(most * w0.rows) * sizeof(float));
  TANDEM_CUDA_CHECK(cudaMemsetAsync(x8.get(), 0x2A, x8.bytes(), stream_));  // E4M3 0.3125
  TunedShape shape;
  {
    const TuneScratch scratch;
    cudaEvent_t e0 = scratch.e0, e1 = scratch.e1;
    cublasLtMatmulPreference_t pref = scratch.pref;
    const float alpha = 1.0f, beta = 0.0f;
    int64_t below = 0;  // the previous bucket's largest count
    for (int64_t n : buckets) {
      // As tune() does: timed at the bucket's largest and smallest counts.
      const int64_t lo = std::max(below + 1, std::min(n, tuned_from_));
      below = n;
      // This bucket's operand layouts (at n and at lo tokens), released
      // however the timing ends.
      struct Layouts {
        Fp8Plan p, low;
        ~Layouts() {
          destroy_layouts(p);
          destroy_layouts(low);
        }
      } made;
      const uint64_t m = static_cast<uint64_t>(w0.rows), k = static_cast<uint64_t>(w0.cols);
      TANDEM_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&made.p.a, CUDA_R_8F_E4M3, k, m, w0.cols));
      TANDEM_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&made.p.b, CUDA_R_8F_E4M3, k, static_cast<uint64_t>(n), w0.cols));
      TANDEM_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&made.p.c, CUDA_R_32F, m, static_cast<uint64_t>(n), w0.rows));
      TANDEM_CUBLAS_CHECK(
          cublasLtMatrixLayoutCreate(&made.low.b, CUDA_R_8F_E4M3, k, static_cast<uint64_t>(lo), w0.cols));
      TANDEM_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&made.low.c, CUDA_R_32F, m, static_cast<uint64_t>(lo), w0.rows));
      cublasLtMatmulHeuristicResult_t found[kTuneCandidates];
      int n_found = 0;
      if (cublasLtMatmulAlgoGetHeuristic(lt_, op8_, made.p.a, made.p.b, made.p.c, made.p.c, pref, kTuneCandidates,
                                         found, &n_found) != CUBLAS_STATUS_SUCCESS)
        n_found = 0;
      TunedBucket b;
      b.tokens = n;
      bool timed_any = false;
      double best_sum = 0;
      cublasLtMatmulAlgo_t best{};
      for (int a = 0; a < n_found; ++a) {
        if (found[a].state != CUBLAS_STATUS_SUCCESS || found[a].workspaceSize > kWorkspaceBytes) continue;
        auto time_at = [&](cublasLtMatrixLayout_t lx, cublasLtMatrixLayout_t ly) {
          return time_over(weights, stream_, e0, e1, [&](const DeviceMatrix& w) {
            return cublasLtMatmul(lt_, op8_, &alpha, w.data, made.p.a, x8.get(), lx, &beta, product.get(), ly,
                                  product.get(), ly, &found[a].algo, workspace_.get(), kWorkspaceBytes,
                                  stream_) == CUBLAS_STATUS_SUCCESS;
          });
        };
        const double us = time_at(made.p.b, made.p.c);
        if (us <= 0) continue;
        const double us_lo = lo < n ? time_at(made.low.b, made.low.c) : 0.0;
        if (us_lo < 0) continue;
        if (!timed_any) {
          // The first that runs is the default: what an untuned product takes.
          timed_any = true;
          b.default_us = b.best_us = us;
          best_sum = us + us_lo;
          best = found[a].algo;
        } else if (us + us_lo < best_sum || (prefer_lt && b.algo < 0)) {
          best_sum = us + us_lo;
          b.best_us = us;
          b.algo = a;
          best = found[a].algo;
        }
      }
      shape.bucket_tokens.push_back(n);
      shape.use_lt.push_back(timed_any);
      shape.algos.push_back(best);
      if (timed_any) out.push_back(b);
    }
  }
  // Plans made before for this shape take the new choice at their next use.
  for (auto it = fp8_plans_.begin(); it != fp8_plans_.end();) {
    if (std::get<0>(it->first) == w0.rows && std::get<1>(it->first) == w0.cols) {
      destroy_layouts(it->second);
      it = fp8_plans_.erase(it);
    } else {
      ++it;
    }
  }
  tuned_[ShapeKey{w0.rows, w0.cols, static_cast<int>(CUDA_R_8F_E4M3)}] = std::move(shape);
  return out;
}

}  // namespace tandem::cuda
