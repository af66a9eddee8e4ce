// The matmul driver: validates the request, prepares activations, splits the
// rows over the thread pool and runs the selected kernel variant.
#include <algorithm>
#include <atomic>
#include <span>
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
  const MatmulProduct product{&w, y};
  matmul_group(kernels, std::span<const MatmulProduct>(&product, 1), x, n_tokens, pool, path);
}

void matmul_group(const KernelSet& kernels, std::span<const MatmulProduct> products, const float* x,
                  int64_t n_tokens, ThreadPool& pool, MatmulPath path) {
  bool token_groups = false;
  for (const MatmulProduct& p : products) {
    check(p.w != nullptr, "matmul: a product has no weight matrix");
    validate(kernels, *p.w, x, n_tokens, p.y);
    check(p.w->cols == products.front().w->cols, "matmul: the matrices of a group take inputs of one size (cols " +
                                                     std::to_string(p.w->cols) + " and " +
                                                     std::to_string(products.front().w->cols) + ")");
    token_groups = token_groups || (path == MatmulPath::Gemv && kernels.gemv_max_tokens > 0 &&
                                    n_tokens > kernels.gemv_max_tokens && p.w->layout != WeightLayout::Q8_0Rows8);
  }
  if (products.empty() || n_tokens == 0) return;
  if (token_groups) {
    // Decode kernels compute each token alone, so groups give the same
    // per-token results as one token at a time.
    for (const MatmulProduct& p : products) {
      if (p.w->layout == WeightLayout::Q8_0Rows8) {
        matmul_group(kernels, std::span<const MatmulProduct>(&p, 1), x, n_tokens, pool, path);
        continue;
      }
      for (int64_t t = 0; t < n_tokens; t += kernels.gemv_max_tokens) {
        const int64_t n = std::min(kernels.gemv_max_tokens, n_tokens - t);
        const MatmulProduct part{p.w, p.y + t * p.w->rows};
        matmul_group(kernels, std::span<const MatmulProduct>(&part, 1), x + t * p.w->cols, n, pool, path);
      }
    }
    return;
  }
  const int64_t cols = products.front().w->cols;
  // Per matrix: the kernel's arguments, whether it takes the quantized
  // activations, and its rows in blocks of `align` (a kernel tile's start).
  struct Part {
    MatmulArgs args;
    bool quantized = false;
    int64_t align = kRowAlign, blocks = 0;
  };
  std::vector<Part> parts(products.size());
  bool quantize = false;
  int64_t total_blocks = 0, work = 0;
  for (size_t i = 0; i < products.size(); ++i) {
    const WeightMatrix& w = *products[i].w;
    Part& p = parts[i];
    p.args.dtype = w.dtype;
    p.args.layout = w.layout;
    p.args.rows = w.rows;
    p.args.cols = w.cols;
    p.args.w = w.data;
    p.args.x = x;
    p.args.n_tokens = n_tokens;
    p.args.y = products[i].y;
    p.args.force_gemm = path == MatmulPath::Gemm;
    p.quantized = w.dtype == DType::Q8_0 && w.cols > 0 &&
                  (w.layout == WeightLayout::Q8_0Rows8 || (!p.args.force_gemm && n_tokens <= kernels.gemv_max_tokens));
    quantize = quantize || p.quantized;
    p.align = w.layout == WeightLayout::Q8_0Rows8 ? 8 : kRowAlign;
    p.blocks = (w.rows + p.align - 1) / p.align;
    total_blocks += p.blocks;
    work += w.rows * std::max<int64_t>(w.cols, 1) * n_tokens;
  }
  // Q8_0 kernels take the activations quantized per block of 32: once for
  // the whole group.
  std::vector<int8_t> xq;  // [n_tokens, cols]
  std::vector<float> xd;   // [n_tokens, cols / 32]
  if (quantize) {
    xq.resize(static_cast<size_t>(n_tokens * cols));
    xd.resize(static_cast<size_t>(n_tokens * cols / kQ8_0BlockElems));
    kernels.quantize_activations(x, n_tokens * cols, xq.data(), xd.data());
    for (Part& p : parts) {
      if (!p.quantized) continue;
      p.args.xq = xq.data();
      p.args.xd = xd.data();
    }
  }

  // Rows are dealt out in chunks of contiguous rows (each a sequential stream
  // of weights) from a shared counter, ~8 per thread, over every matrix of
  // the group in one pass of the pool: when another process takes one core
  // for a while, the other thread picks up its chunks instead of the whole
  // matmul waiting for the slow one. Each row's result does not depend on
  // which thread computes it. Small groups are not worth waking the other
  // threads for.
  const int64_t max_threads = std::max<int64_t>(1, std::min<int64_t>(pool.size(), work / 16384));
  const int64_t n_parts = std::min<int64_t>(max_threads, total_blocks);
  if (n_parts <= 1) {
    for (const Part& p : parts)
      if (p.args.rows > 0) kernels.matmul_rows(p.args, 0, p.args.rows);
    return;
  }
  struct Chunk {
    const MatmulArgs* args;
    int64_t r0, r1;
  };
  std::vector<Chunk> chunks;
  const int64_t wanted = std::min<int64_t>(total_blocks, n_parts * kChunksPerThread);
  chunks.reserve(static_cast<size_t>(wanted) + parts.size());
  for (const Part& p : parts) {
    if (p.blocks == 0) continue;
    // Each matrix's share of the chunks, by its rows; at least one.
    const int64_t n = std::clamp<int64_t>((p.blocks * wanted + total_blocks / 2) / total_blocks, 1, p.blocks);
    for (int64_t c = 0; c < n; ++c) {
      const int64_t r0 = std::min(p.args.rows, p.blocks * c / n * p.align);
      const int64_t r1 = std::min(p.args.rows, p.blocks * (c + 1) / n * p.align);
      if (r0 < r1) chunks.push_back({&p.args, r0, r1});
    }
  }
  std::atomic<size_t> next_chunk{0};
  pool.run([&](int t) {
    if (t >= n_parts) return;
    for (;;) {
      const size_t c = next_chunk.fetch_add(1, std::memory_order_relaxed);
      if (c >= chunks.size()) return;
      kernels.matmul_rows(*chunks[c].args, chunks[c].r0, chunks[c].r1);
    }
  });
}

void matmul_group(std::span<const MatmulProduct> products, const float* x, int64_t n_tokens, ThreadPool& pool,
                  MatmulPath path) {
  matmul_group(best_kernel_set(), products, x, n_tokens, pool, path);
}

void matmul(const WeightMatrix& w, const float* x, int64_t n_tokens, float* y, ThreadPool& pool, MatmulPath path) {
  matmul(best_kernel_set(), w, x, n_tokens, y, pool, path);
}

}  // namespace tandem::cpu
