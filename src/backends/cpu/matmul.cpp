// The matmul driver: validates the request, prepares activations, splits the
// rows over the thread pool and runs the selected kernel variant.
#include <algorithm>
#include <atomic>
#include <string>
#include <vector>

#include "backends/cpu/kernel_set.h"
#include "common/error.h"

namespace tandem::cpu {

namespace {

constexpr int64_t kRowAlign = 4;  // every kernel tile starts on a multiple of 4 rows (8: rows8 layout)
constexpr int64_t kChunksPerThread = 8;

void validate(const KernelSet& kernels, const WeightMatrix& w, const float* x, int64_t n_tokens, const float* y) {
  if (w.layout == WeightLayout::Q8_0Rows8) {
    check(w.dtype == DType::Q8_0, "matmul: the rows8 layout holds q8_0 weights only");
    check(kernels.q8_0_rows8, std::string("matmul: the ") + kernels.name +
                                  " kernels cannot compute with q8_0 weights in the rows8 layout");
  }
  check(w.rows >= 0 && w.cols >= 0 && n_tokens >= 0,
        "matmul: negative shape (rows " + std::to_string(w.rows) + ", cols " +
            std::to_string(w.cols) + ", n_tokens " + std::to_string(n_tokens) + ")");
  switch (w.dtype) {
    case DType::F32:
    case DType::F16:
    case DType::BF16:
      break;
    case DType::Q8_0:
      check(w.cols % kQ8_0BlockElems == 0,
            "matmul: q8_0 weights need cols a multiple of 32, got " + std::to_string(w.cols));
      break;
    default:
      throw Error("matmul: the CPU kernels cannot compute with dtype " +
                  std::string(dtype_name(w.dtype)) + " (supported: f32, f16, bf16, q8_0)");
  }
  if (w.rows > 0 && w.cols > 0) check(w.data != nullptr, "matmul: weight data is null");
  if (n_tokens > 0 && w.cols > 0) check(x != nullptr, "matmul: x is null");
  if (n_tokens > 0 && w.rows > 0) check(y != nullptr, "matmul: y is null");
}

}  // namespace

std::vector<KernelVariant> supported_kernel_variants(const CpuFeatures& features) {
  std::vector<KernelVariant> v{KernelVariant::Generic};
#if defined(TANDEM_CPU_X86)
  if (features.avx2) v.push_back(KernelVariant::Avx2);
  if (features.avx512 && features.avx512_vnni) v.push_back(KernelVariant::Avx512);
#endif
  return v;
}

const KernelSet& kernel_set(KernelVariant variant) {
  switch (variant) {
    case KernelVariant::Generic:
      return kGenericKernels;
#if defined(TANDEM_CPU_X86)
    case KernelVariant::Avx2:
      return kAvx2Kernels;
    case KernelVariant::Avx512:
      return kAvx512Kernels;
#endif
    default:
      throw Error("this build of Tandem has no such CPU kernel variant");
  }
}

const KernelSet& best_kernel_set() {
  // Detected once: cpuid traps to the hypervisor in VMs and costs microseconds,
  // too much for ~200 matmuls per token. Immutable after initialisation.
  static const KernelSet& best = kernel_set(supported_kernel_variants(detect_cpu_features()).back());
  return best;
}

void matmul(const KernelSet& kernels, const WeightMatrix& w, const float* x, int64_t n_tokens,
            float* y, ThreadPool& pool, MatmulPath path) {
  validate(kernels, w, x, n_tokens, y);
  if (w.rows == 0 || n_tokens == 0) return;
  const bool rows8 = w.layout == WeightLayout::Q8_0Rows8;  // one kernel for every token count
  if (path == MatmulPath::Gemv && kernels.gemv_max_tokens > 0 && n_tokens > kernels.gemv_max_tokens && !rows8) {
    // Decode kernels compute each token alone, so groups give the same
    // per-token results as one token at a time.
    for (int64_t t = 0; t < n_tokens; t += kernels.gemv_max_tokens) {
      const int64_t n = std::min(kernels.gemv_max_tokens, n_tokens - t);
      matmul(kernels, w, x + t * w.cols, n, y + t * w.rows, pool, MatmulPath::Gemv);
    }
    return;
  }
  MatmulArgs args;
  args.dtype = w.dtype;
  args.layout = w.layout;
  args.rows = w.rows;
  args.cols = w.cols;
  args.w = w.data;
  args.x = x;
  args.n_tokens = n_tokens;
  args.y = y;
  args.force_gemm = path == MatmulPath::Gemm;

  std::vector<int8_t> xq;  // [n_tokens, cols]
  std::vector<float> xd;   // [n_tokens, cols / 32]
  if (w.dtype == DType::Q8_0 && w.cols > 0 && (rows8 || (!args.force_gemm && n_tokens <= kernels.gemv_max_tokens))) {
    xq.resize(static_cast<size_t>(n_tokens * w.cols));
    xd.resize(static_cast<size_t>(n_tokens * w.cols / kQ8_0BlockElems));
    kernels.quantize_activations(x, n_tokens * w.cols, xq.data(), xd.data());
    args.xq = xq.data();
    args.xd = xd.data();
  }

  // Small matrices are not worth waking the other threads for.
  const int64_t work = w.rows * std::max<int64_t>(w.cols, 1) * n_tokens;
  const int64_t max_threads = std::max<int64_t>(1, std::min<int64_t>(pool.size(), work / 16384));
  const int64_t align = w.layout == WeightLayout::Q8_0Rows8 ? 8 : kRowAlign;
  const int64_t blocks = (w.rows + align - 1) / align;
  const int64_t n_parts = std::min<int64_t>(max_threads, blocks);
  if (n_parts <= 1) {
    kernels.matmul_rows(args, 0, w.rows);
    return;
  }
  // Rows are dealt out in chunks of contiguous rows (each a sequential stream
  // of weights) from a shared counter, ~8 per thread: when another process
  // takes one core for a while, the other thread picks up its chunks instead
  // of the whole matmul waiting for the slow one. Each row's result does not
  // depend on which thread computes it.
  const int64_t n_chunks = std::min<int64_t>(blocks, n_parts * kChunksPerThread);
  std::atomic<int64_t> next_chunk{0};
  pool.run([&](int t) {
    if (t >= n_parts) return;
    for (;;) {
      const int64_t c = next_chunk.fetch_add(1, std::memory_order_relaxed);
      if (c >= n_chunks) return;
      const int64_t r0 = std::min(w.rows, blocks * c / n_chunks * align);
      const int64_t r1 = std::min(w.rows, blocks * (c + 1) / n_chunks * align);
      if (r0 < r1) kernels.matmul_rows(args, r0, r1);
    }
  });
}

void matmul(const WeightMatrix& w, const float* x, int64_t n_tokens, float* y, ThreadPool& pool, MatmulPath path) {
  matmul(best_kernel_set(), w, x, n_tokens, y, pool, path);
}

}  // namespace tandem::cpu
