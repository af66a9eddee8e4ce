// The CUDA engine end to end against transformers' reference (the fixtures
// of tools/fixtures/make_fixtures.py), and its batch invariance. Label gpu.
#include <gtest/gtest.h>

#include <cstdlib>
#include <cuda_runtime.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <memory>
#include <vector>

#include "backends/cuda/cuda_check.h"
#include "backends/cuda/cuda_model_runner.h"
#include "backends/cuda/offload_runner.h"
#include "common/error.h"
#include "common/thread_pool.h"
#include "engine/cpu_model_runner.h"
#include "engine/row_sampling.h"
#include "engine/sampler.h"
#include "formats/safetensors.h"
#include "tests/models/fixture_reference.h"
#include "models/gguf_export.h"
#include "models/model_file.h"

namespace tandem {
namespace {

namespace fs = std::filesystem;
using test_fixtures::kFixtures;
using test_fixtures::load_reference;
using test_fixtures::Reference;

// How far `got` is from `want`, row by row. An argmax that differs counts as
// a real disagreement only when `want` does not rate the two tokens within
// `tie` of each other; random tiny models have many near ties.
struct Diff {
  double max_abs = 0;
  int64_t rows = 0;
  int64_t near_ties = 0;      // argmax differs, but within `tie` in `want`
  int64_t disagreements = 0;  // argmax differs by more than `tie`
  int64_t non_finite = 0;     // entries of `got` that are NaN or infinite (max_abs skips them)
  int64_t first_bad_row = -1; // the first row with a disagreement or a non-finite entry
};

Diff compare(const float* got, const float* want, int64_t rows, int64_t vocab, double tie) {
  Diff d;
  d.rows = rows;
  for (int64_t r = 0; r < rows; ++r) {
    const float* g = got + r * vocab;
    const float* w = want + r * vocab;
    int64_t bad = 0;
    for (int64_t i = 0; i < vocab; ++i) {
      if (!std::isfinite(g[i])) ++bad;
      else d.max_abs = std::max(d.max_abs, std::fabs(double(g[i]) - double(w[i])));
    }
    d.non_finite += bad;
    if (bad > 0 && d.first_bad_row < 0) d.first_bad_row = r;
    const int64_t ga = std::max_element(g, g + vocab) - g, wa = std::max_element(w, w + vocab) - w;
    if (ga == wa) continue;
    if (double(w[wa]) - double(w[ga]) <= tie) {
      ++d.near_ties;
    } else {
      ++d.disagreements;
      if (d.first_bad_row < 0) d.first_bad_row = r;
    }
  }
  return d;
}

Diff compare(const std::vector<float>& got, const std::vector<float>& want, int64_t vocab, double tie) {
  return compare(got.data(), want.data(), static_cast<int64_t>(want.size()) / vocab, vocab, tie);
}

std::vector<float> all_logits(ModelRunner& runner, const std::vector<int32_t>& prompt) {
  SequenceKv kv;
  EXPECT_TRUE(kv.reserve(static_cast<int64_t>(prompt.size()), runner.block_size(), runner.block_allocator()));
  SequenceChunk chunk{prompt, &kv, true};
  std::vector<float> out = runner.forward(std::span<const SequenceChunk>(&chunk, 1));
  kv.release(runner.block_allocator());
  return out;
}

CudaRunnerOptions small_options() {
  CudaRunnerOptions o;
  o.max_context = 256;
  o.block_size = 4;
  o.kv_blocks = 256;
  // TANDEM_TEST_NO_GEMM_TUNING=1: cuBLAS's default GEMMs only (for chasing a failure).
  o.tune_gemm = std::getenv("TANDEM_TEST_NO_GEMM_TUNING") == nullptr;
  o.cuda_graphs = std::getenv("TANDEM_TEST_NO_GRAPHS") == nullptr;
  return o;
}

// Fills 256 MiB of free GPU memory with NaN bits and frees it, so that the
// next allocations (a runner's cache and scratch) likely start as NaN: a
// kernel that reads what no step wrote then shows in the logits, instead of
// reading the zeros of fresh memory.
void poison_free_memory() {
  void* p = nullptr;
  const size_t bytes = size_t{256} << 20;
  if (cudaMalloc(&p, bytes) != cudaSuccess) {
    cudaGetLastError();
    return;
  }
  TANDEM_CUDA_CHECK(cudaMemset(p, 0xFF, bytes));
  TANDEM_CUDA_CHECK(cudaDeviceSynchronize());
  TANDEM_CUDA_CHECK(cudaFree(p));
}

class CudaNumerics : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override { ref_ = load_reference(GetParam()); }

  // Prefill logits against transformers, then decode along the reference's
  // greedy continuation (teacher-forced) against the CPU engine, which
  // matches transformers to 1e-5. `tol` bounds max |dlogit| everywhere;
  // every argmax disagreement must be a near tie (within 2 * tol).
  void check_model(const std::string& path, double tol) {
    auto model = ModelFile::open(path);
    poison_free_memory();
    CudaModelRunner runner(*model, small_options());
    for (const std::string& line : runner.gemm_tuning()) std::printf("  %s\n", line.c_str());
    const int64_t vocab = model->config().vocab_size;
    const Diff a = compare(all_logits(runner, ref_.prompt_a), ref_.logits_a, vocab, 2 * tol);
    const Diff b = compare(all_logits(runner, ref_.prompt_b), ref_.logits_b, vocab, 2 * tol);
    EXPECT_LT(a.max_abs, tol) << path;
    EXPECT_LT(b.max_abs, tol) << path;
    EXPECT_EQ(a.disagreements + b.disagreements, 0) << path;
    EXPECT_EQ(a.non_finite + b.non_finite, 0) << path << ": prefill rows " << a.first_bad_row << ", " << b.first_bad_row;

    ThreadPool pool(2);
    CpuRunnerOptions co;
    co.max_context = 256;
    CpuModelRunner cpu_runner(*model, pool, co);
    SequenceKv kv_gpu, kv_cpu;
    const int64_t n_prompt = static_cast<int64_t>(ref_.prompt_a.size());
    const int64_t n_total = n_prompt + static_cast<int64_t>(ref_.greedy_a.size());
    ASSERT_TRUE(kv_gpu.reserve(n_total, runner.block_size(), runner.block_allocator()));
    ASSERT_TRUE(kv_cpu.reserve(n_total, cpu_runner.block_size(), cpu_runner.block_allocator()));
    Diff decode;
    std::vector<float> gpu_logits, cpu_logits;
    for (size_t step = 0; step <= ref_.greedy_a.size(); ++step) {
      const std::span<const int32_t> tokens =
          step == 0 ? std::span<const int32_t>(ref_.prompt_a) : std::span<const int32_t>(&ref_.greedy_a[step - 1], 1);
      SequenceChunk g{tokens, &kv_gpu, false, n_prompt};
      SequenceChunk c{tokens, &kv_cpu, false, n_prompt};
      gpu_logits = runner.forward(std::span<const SequenceChunk>(&g, 1));
      cpu_logits = cpu_runner.forward(std::span<const SequenceChunk>(&c, 1));
      const Diff d = compare(gpu_logits.data(), cpu_logits.data(), 1, vocab, 2 * tol);
      EXPECT_EQ(d.non_finite, 0) << path << ": decode step " << step << " (position " << kv_gpu.n_tokens
                                 << ") has non-finite logits";
      EXPECT_EQ(d.disagreements, 0) << path << ": decode step " << step;
      decode.max_abs = std::max(decode.max_abs, d.max_abs);
      decode.near_ties += d.near_ties;
      decode.disagreements += d.disagreements;
    }
    kv_gpu.release(runner.block_allocator());
    kv_cpu.release(cpu_runner.block_allocator());
    EXPECT_LT(decode.max_abs, tol) << path;
    EXPECT_EQ(decode.disagreements, 0) << path;
    std::printf("[%s] prefill max|dlogit| a=%.2e b=%.2e near-ties %lld/%lld; decode max|dlogit| %.2e near-ties %lld/%zu\n",
                path.c_str(), a.max_abs, b.max_abs, static_cast<long long>(a.near_ties + b.near_ties),
                static_cast<long long>(a.rows + b.rows), decode.max_abs, static_cast<long long>(decode.near_ties),
                ref_.greedy_a.size() + 1);
  }
  Reference ref_;
};

// BF16 weights are exactly what the reference ran with in f32. Prompt tokens
// go through BF16 tensor-core GEMMs (activations rounded to bf16) and the KV
// cache is f16; decode runs the f32-activation GEMV.
TEST_P(CudaNumerics, SafetensorsBf16MatchesReference) {
  check_model((kFixtures / GetParam()).string(), 8e-2);
}

TEST_P(CudaNumerics, GgufF32F16AndQ8MatchReference) {
  auto hf = ModelFile::open((kFixtures / GetParam()).string());
  struct {
    DType dtype;
    double tol;
  } cases[] = {{DType::F32, 1e-2}, {DType::F16, 2e-2}, {DType::Q8_0, 0.3}};
  for (const auto& c : cases) {
    const fs::path out = fs::temp_directory_path() /
                         ("tandem_cuda_" + GetParam() + "_" + std::string(dtype_name(c.dtype)) +
                          std::to_string(::getpid()) + ".gguf");
    convert_to_gguf(*hf, c.dtype, out.string());
    check_model(out.string(), c.tol);
    fs::remove(out);
  }
}

// A sequence's decode logits are bit-identical whether it decodes alone or
// beside others.
// Decode steps replay captured CUDA graphs; with graphs off, the same
// kernels run launch by launch. Both must give the same bits.
class CudaDecode : public ::testing::TestWithParam<std::tuple<std::string, bool>> {
 protected:
  void SetUp() override { ref_ = load_reference(std::get<0>(GetParam())); }
  Reference ref_;
};

std::vector<float> decode_trace(ModelRunner& runner, const Reference& ref, int n_companions);

TEST_P(CudaDecode, IsBatchInvariantWithAndWithoutGraphs) {
  auto model = ModelFile::open((kFixtures / std::get<0>(GetParam())).string());
  CudaRunnerOptions o = small_options();
  o.cuda_graphs = std::get<1>(GetParam());
  o.batch_invariant = true;
  CudaModelRunner runner(*model, o);
  const std::vector<float> alone = decode_trace(runner, ref_, 0);
  const std::vector<float> with_others = decode_trace(runner, ref_, 10);
  ASSERT_EQ(alone.size(), with_others.size());
  EXPECT_EQ(0, std::memcmp(alone.data(), with_others.data(), alone.size() * sizeof(float)));
  CudaRunnerOptions other = o;
  other.cuda_graphs = !o.cuda_graphs;
  CudaModelRunner runner2(*model, other);
  const std::vector<float> flipped = decode_trace(runner2, ref_, 3);
  EXPECT_EQ(0, std::memcmp(alone.data(), flipped.data(), alone.size() * sizeof(float)));
}

// With batch invariance off, a decode batch of more than 4 sequences takes
// the tensor-core GEMM (16-bit weights) or the int8 tensor-core GEMM (int8
// rows and Q8_0), and one of 32 sequences also the tensor-core decode
// attention (32 tokens x 2 KV heads: a block for every third SM of up to
// 192 SMs), which for 8-bit rows also quantizes the o projection's input:
// its logits stay near decoding alone (which takes the GEMV and
// paged_attention), though not bit for bit. Within the bf16 tolerance for
// bf16; 8-bit rows take 0.2, half of what int8 rows are allowed against the
// reference (below): the tensor-core attention rounds q and the softmax
// weights to f16, and where that moves an o-projection input across a
// quantization boundary the input moves by a whole step (measured on an
// H100: int8 9.2e-2, Q8_0 8.0e-2 at 32 sequences, against 2.8e-2 for bf16).
TEST(CudaDecodeThroughput, LargeBatchesStayWithinTolerance) {
  const Reference ref = load_reference("llama3");
  auto hf = ModelFile::open((kFixtures / "llama3").string());
  const fs::path q8_path = fs::temp_directory_path() / ("tandem_cuda_batches_q8_0_" + std::to_string(::getpid()) + ".gguf");
  convert_to_gguf(*hf, DType::Q8_0, q8_path.string());
  auto q8 = ModelFile::open(q8_path.string());
  struct Case {
    const char* name;
    ModelFile* model;
    GpuQuantization quantize;
    double tol;  // max |dlogit| against decoding alone
    double tie;  // a larger gap between the two top logits must not flip
    std::vector<int> companions;
  } cases[] = {{"bf16", hf.get(), GpuQuantization::None, 8e-2, 0.16, {10, 31}},
               {"int8", hf.get(), GpuQuantization::Int8, 0.2, 0.16, {10, 31}},
               {"q8_0", q8.get(), GpuQuantization::None, 0.2, 0.16, {10, 31}},
               // FP8 rows: one sequence alone takes the GEMV (f32 inputs),
               // two or more cuBLASLt's FP8 product, whose inputs are rounded
               // to E4M3 (3 mantissa bits) per token: 0.52 at 2 and 4
               // sequences, 0.48 at 32 (H100).
               {"fp8", hf.get(), GpuQuantization::Fp8, 1.0, 2.0, {1, 3, 31}}};
  int sm_count = 0;
  TANDEM_CUDA_CHECK(cudaDeviceGetAttribute(&sm_count, cudaDevAttrMultiProcessorCount, 0));
  ASSERT_LE(sm_count, 3 * 32 * hf->config().n_kv_heads) << "32 sequences no longer reach the tensor-core attention";
  for (const Case& c : cases) for (const int companions : c.companions) {
    CudaRunnerOptions o = small_options();
    o.batch_invariant = false;
    o.quantize = c.quantize;
    o.kv_blocks = 1024;  // 32 sequences
    CudaModelRunner runner(*c.model, o);
    const std::vector<float> alone = decode_trace(runner, ref, 0);
    const std::vector<float> batched = decode_trace(runner, ref, companions);
    ASSERT_EQ(alone.size(), batched.size());
    const int64_t vocab = c.model->config().vocab_size;
    // Compare step by step until the two runs pick different tokens (a near
    // tie), after which their inputs differ.
    Diff d;
    int64_t steps = 0;
    for (int64_t r = 0; r < static_cast<int64_t>(alone.size()) / vocab; ++r, ++steps) {
      const Diff step = compare(batched.data() + r * vocab, alone.data() + r * vocab, 1, vocab, c.tie);
      d.max_abs = std::max(d.max_abs, step.max_abs);
      d.disagreements += step.disagreements;
      if (step.near_ties + step.disagreements > 0) break;
    }
    std::printf("[%s] decode batch of %d through the GEMM: max|dlogit| %.2e over %lld steps\n", c.name,
                companions + 1, d.max_abs, static_cast<long long>(steps));
    EXPECT_LT(d.max_abs, c.tol) << c.name << ", " << companions + 1 << " sequences";
    EXPECT_GT(d.max_abs, 0.0) << c.name << ", " << companions + 1 << " sequences";  // the GEMM path really ran
    EXPECT_GT(steps, 4) << c.name << ", " << companions + 1 << " sequences";
    EXPECT_EQ(d.disagreements, 0) << c.name << ", " << companions + 1 << " sequences";
  }
  q8.reset();
  fs::remove(q8_path);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, CudaDecode,
                         ::testing::Combine(::testing::Values("llama3", "qwen2", "qwen3"), ::testing::Bool()));

// Logits of sequence 0 over 12 decode steps, decoding beside n_companions others.
std::vector<float> decode_trace(ModelRunner& runner, const Reference& ref_, int n_companions) {
  const int64_t vocab = runner.config().vocab_size;
  BlockAllocator& alloc = runner.block_allocator();
  {
    std::vector<SequenceKv> kvs(static_cast<size_t>(1 + n_companions));
    std::vector<std::vector<int32_t>> prompts;
    for (int i = 0; i <= n_companions; ++i) {
      std::vector<int32_t> p = i == 0 ? ref_.prompt_a : ref_.prompt_b;
      p.resize(p.size() - static_cast<size_t>(i % 3));
      prompts.push_back(p);
      EXPECT_TRUE(kvs[static_cast<size_t>(i)].reserve(static_cast<int64_t>(p.size()) + 16, 4, alloc));
      SequenceChunk c{prompts.back(), &kvs[static_cast<size_t>(i)], false};
      c.prompt_len = static_cast<int64_t>(p.size());
      runner.forward(std::span<const SequenceChunk>(&c, 1));  // prefill alone: same chunking either way
    }
    std::vector<int32_t> next(static_cast<size_t>(1 + n_companions), 1);
    std::vector<float> trace;
    for (int step = 0; step < 12; ++step) {
      std::vector<SequenceChunk> chunks;
      for (int i = 0; i <= n_companions; ++i) {
        SequenceChunk c{std::span<const int32_t>(&next[static_cast<size_t>(i)], 1), &kvs[static_cast<size_t>(i)], false};
        c.prompt_len = static_cast<int64_t>(prompts[static_cast<size_t>(i)].size());
        chunks.push_back(c);
      }
      const std::vector<float>& l = runner.forward(chunks);
      trace.insert(trace.end(), l.begin(), l.begin() + vocab);
      for (int i = 0; i <= n_companions; ++i) {
        const float* row = l.data() + i * vocab;
        next[static_cast<size_t>(i)] = static_cast<int32_t>(std::max_element(row, row + vocab) - row);
      }
    }
    for (auto& kv : kvs) kv.release(alloc);
    EXPECT_EQ(alloc.n_free(), alloc.n_blocks());
    return trace;
  }
}

// Greedy steps: a chunk marked argmax_only gets row_tokens() (the GPU's
// argmax, the host's rule), in chunk order, whether every chunk of the step
// is marked (no logits copied back) or only some (their rows still exact).
TEST(CudaGreedy, ArgmaxOnlyStepsReturnTheHostsArgmax) {
  const Reference ref = load_reference("llama3");
  auto model = ModelFile::open((kFixtures / "llama3").string());
  CudaRunnerOptions o = small_options();
  o.batch_invariant = true;  // the two runners below see the same batches anyway
  CudaModelRunner full(*model, o), greedy(*model, o);
  const int64_t vocab = model->config().vocab_size;
  constexpr int kSeqs = 6;
  std::vector<SequenceKv> kv_full(kSeqs), kv_greedy(kSeqs);
  std::vector<std::vector<int32_t>> prompts;
  std::vector<int32_t> next(kSeqs);
  auto host_argmax = [&](const float* row) { return static_cast<int32_t>(std::max_element(row, row + vocab) - row); };
  for (int i = 0; i < kSeqs; ++i) {
    std::vector<int32_t> p = i % 2 ? ref.prompt_a : ref.prompt_b;
    p.resize(p.size() - static_cast<size_t>(i / 2));
    prompts.push_back(p);
    ASSERT_TRUE(kv_full[static_cast<size_t>(i)].reserve(static_cast<int64_t>(p.size()) + 16, 4, full.block_allocator()));
    ASSERT_TRUE(
        kv_greedy[static_cast<size_t>(i)].reserve(static_cast<int64_t>(p.size()) + 16, 4, greedy.block_allocator()));
    SequenceChunk a{prompts.back(), &kv_full[static_cast<size_t>(i)], false};
    SequenceChunk b{prompts.back(), &kv_greedy[static_cast<size_t>(i)], false};
    b.argmax_only = true;
    next[static_cast<size_t>(i)] = host_argmax(full.forward(std::span<const SequenceChunk>(&a, 1)).data());
    greedy.forward(std::span<const SequenceChunk>(&b, 1));
    ASSERT_EQ(greedy.row_tokens().size(), 1u);
    EXPECT_EQ(greedy.row_tokens()[0], next[static_cast<size_t>(i)]) << "prefill of sequence " << i;
  }
  // Step 6 (all argmax_only) opens with a new sequence's prompt: the runner computes
  // generated tokens first, so its rows are out of chunk order.
  const std::vector<int32_t> late_prompt(ref.prompt_a.begin(), ref.prompt_a.begin() + 5);
  SequenceKv late_full, late_greedy;
  ASSERT_TRUE(late_full.reserve(5, 4, full.block_allocator()));
  ASSERT_TRUE(late_greedy.reserve(5, 4, greedy.block_allocator()));
  for (int step = 0; step < 8; ++step) {
    std::vector<SequenceChunk> a, b;
    if (step == 6) {
      a.push_back({late_prompt, &late_full, false});
      b.push_back({late_prompt, &late_greedy, false});
      b.back().argmax_only = true;
    }
    const size_t first = a.size();
    for (int i = 0; i < kSeqs; ++i) {
      const int64_t prompt_len = static_cast<int64_t>(prompts[static_cast<size_t>(i)].size());
      a.push_back({std::span<const int32_t>(&next[static_cast<size_t>(i)], 1), &kv_full[static_cast<size_t>(i)], false,
                   prompt_len});
      b.push_back({std::span<const int32_t>(&next[static_cast<size_t>(i)], 1), &kv_greedy[static_cast<size_t>(i)],
                   false, prompt_len});
      b.back().argmax_only = step % 2 == 0 || i % 3 == 0;  // odd steps: a mixed step
    }
    const std::vector<float> la = full.forward(a);
    EXPECT_TRUE(full.row_tokens().empty()) << "nothing asked for it";
    const std::vector<float>& lb = greedy.forward(b);
    const std::span<const int32_t> ids = greedy.row_tokens();
    ASSERT_EQ(ids.size(), a.size()) << "step " << step;
    for (size_t r = 0; r < a.size(); ++r) {
      const float* row = la.data() + r * vocab;
      EXPECT_EQ(ids[r], host_argmax(row)) << "step " << step << ", row " << r;
      if (!b[r].argmax_only) {
        EXPECT_EQ(0, std::memcmp(row, lb.data() + r * vocab, static_cast<size_t>(vocab) * sizeof(float)))
            << "step " << step << ", row " << r << ": a full row in a mixed step";
      }
      if (r >= first) next[r - first] = host_argmax(row);
    }
  }
  late_full.release(full.block_allocator());
  late_greedy.release(greedy.block_allocator());
}

// capture_decode_graphs at load: one graph per decode batch size, and no
// step within the plan captures again, a prompt step larger than the
// scratch allocated at load (256 tokens) included. The logits are the bits
// of a runner without graphs on the same steps, so the blocks the captures
// borrowed and wrote leave nothing behind.
TEST(CudaGraphs, CapturedAtLoadServeEveryDecodeSize) {
  const Reference ref = load_reference("llama3");
  auto model = ModelFile::open((kFixtures / "llama3").string());
  CudaRunnerOptions o = small_options();
  o.cuda_graphs = true;
  o.tune_gemm = false;  // the two runners take the same GEMM algorithms
  o.max_step_tokens = 512;
  o.max_logit_rows = 128;  // more rows than the pinned logits vector holds (64): it must stay pinned
  CudaRunnerOptions plain = o;
  plain.cuda_graphs = false;
  poison_free_memory();
  CudaModelRunner graphed(*model, o), eager(*model, plain);
  EXPECT_EQ(eager.capture_decode_graphs(8), 0) << "graphs are off";
  ASSERT_EQ(graphed.capture_decode_graphs(8), 8);
  EXPECT_EQ(graphed.decode_graphs_captured(), 8);
  EXPECT_EQ(graphed.block_allocator().n_free(), eager.block_allocator().n_free()) << "borrowed blocks given back";
  EXPECT_EQ(graphed.host_timing().steps, 0) << "the captures' steps are not counted";

  const int64_t vocab = model->config().vocab_size;
  constexpr int kSeqs = 8, kPrompt = 40;  // one prompt step of 320 tokens
  std::vector<std::vector<int32_t>> prompts(kSeqs);
  std::vector<SequenceKv> kv_g(kSeqs), kv_e(kSeqs);
  std::vector<int32_t> next(kSeqs);
  std::vector<SequenceChunk> g, e;
  for (int i = 0; i < kSeqs; ++i) {
    const std::vector<int32_t>& src = i % 2 ? ref.prompt_a : ref.prompt_b;
    for (int t = 0; t < kPrompt; ++t) prompts[i].push_back(src[static_cast<size_t>(t * (i + 1)) % src.size()]);
    ASSERT_TRUE(kv_g[i].reserve(kPrompt + 8, 4, graphed.block_allocator()));
    ASSERT_TRUE(kv_e[i].reserve(kPrompt + 8, 4, eager.block_allocator()));
    g.push_back({prompts[i], &kv_g[i], false});
    e.push_back({prompts[i], &kv_e[i], false});
  }
  auto same_rows = [&](const std::vector<float>& a, const std::vector<float>& b, const std::string& what) {
    ASSERT_EQ(a.size(), b.size()) << what;
    EXPECT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * sizeof(float))) << what;
  };
  {
    const std::vector<float>& returned = graphed.forward(g);
    cudaPointerAttributes where{};
    TANDEM_CUDA_CHECK(cudaPointerGetAttributes(&where, returned.data()));
    EXPECT_EQ(where.type, cudaMemoryTypeHost) << "the logits of 8 rows still come back in pinned memory";
    const std::vector<float> lg = returned;
    const std::vector<float>& le = eager.forward(e);
    same_rows(lg, le, "prompt step");
    for (int i = 0; i < kSeqs; ++i) {
      const float* row = lg.data() + static_cast<size_t>(i) * vocab;
      next[i] = static_cast<int32_t>(std::max_element(row, row + vocab) - row);
    }
  }
  // Decode steps of 8, 7, 5, 3, 2 and 1 sequences.
  const int sizes[] = {8, 7, 5, 3, 2, 1};
  for (int n : sizes) {
    g.clear();
    e.clear();
    for (int i = 0; i < n; ++i) {
      g.push_back({std::span<const int32_t>(&next[i], 1), &kv_g[i], false, kPrompt});
      e.push_back({std::span<const int32_t>(&next[i], 1), &kv_e[i], false, kPrompt});
    }
    const std::vector<float> lg = graphed.forward(g);
    const std::vector<float>& le = eager.forward(e);
    same_rows(lg, le, "decode step of " + std::to_string(n));
    for (int i = 0; i < n; ++i) {
      const float* row = lg.data() + static_cast<size_t>(i) * vocab;
      next[i] = static_cast<int32_t>(std::max_element(row, row + vocab) - row);
    }
  }
  EXPECT_EQ(graphed.decode_graphs_captured(), 8) << "a step within the plan captured a graph again";
  EXPECT_EQ(graphed.host_timing().graph_steps, static_cast<int64_t>(std::size(sizes)));
  EXPECT_EQ(eager.host_timing().graph_steps, 0);
  for (int i = 0; i < kSeqs; ++i) {
    kv_g[i].release(graphed.block_allocator());
    kv_e[i].release(eager.block_allocator());
  }
}

// Sampled steps: a chunk with a RowSampling gets row_tokens() = the token
// the rule draws from the logits the same step returns without it (the
// CPU reference on the full row), in chunk order; all-sampled steps and
// mixed ones (the other rows still exact, greedy rows still the argmax).
TEST(CudaSampling, SampledChunksReturnTheReferencesToken) {
  const Reference ref = load_reference("llama3");
  auto model = ModelFile::open((kFixtures / "llama3").string());
  CudaRunnerOptions o = small_options();
  o.batch_invariant = true;
  CudaModelRunner full(*model, o), sampled(*model, o);
  ASSERT_TRUE(sampled.samples_rows());
  const int64_t vocab = model->config().vocab_size;
  constexpr int kSeqs = 4;
  std::vector<SequenceKv> kv_full(kSeqs), kv_sampled(kSeqs);
  std::vector<std::vector<int32_t>> prompts, generated(kSeqs);
  std::vector<std::unique_ptr<Sampler>> samplers;
  std::vector<RowSampling> plans(kSeqs);
  for (int i = 0; i < kSeqs; ++i) {
    std::vector<int32_t> p = i % 2 ? ref.prompt_a : ref.prompt_b;
    p.resize(p.size() - static_cast<size_t>(i / 2));
    prompts.push_back(p);
    ASSERT_TRUE(kv_full[static_cast<size_t>(i)].reserve(static_cast<int64_t>(p.size()) + 16, 4, full.block_allocator()));
    ASSERT_TRUE(
        kv_sampled[static_cast<size_t>(i)].reserve(static_cast<int64_t>(p.size()) + 16, 4, sampled.block_allocator()));
    SamplingParams sp;
    sp.temperature = 0.7f + 0.2f * static_cast<float>(i);
    sp.top_k = i == 1 ? 30 : 0;
    sp.top_p = i == 2 ? 0.9f : 1.0f;
    sp.repetition_penalty = i == 3 ? 1.3f : 1.0f;
    sp.presence_penalty = i == 3 ? 0.4f : 0.0f;
    sp.seed = 90 + static_cast<uint64_t>(i);
    samplers.push_back(std::make_unique<Sampler>(sp));
  }
  std::vector<int32_t> next(kSeqs);
  const std::vector<int32_t> late_prompt(ref.prompt_a.begin(), ref.prompt_a.begin() + 5);
  SequenceKv late_full, late_sampled;
  ASSERT_TRUE(late_full.reserve(5, 4, full.block_allocator()));
  ASSERT_TRUE(late_sampled.reserve(5, 4, sampled.block_allocator()));
  RowSampling late_plan;
  late_plan.scale = 1.0f / 1.1f;
  late_plan.top_k = 50;
  late_plan.draw = 0x123456789abcdull;
  for (int step = 0; step < 7; ++step) {
    std::vector<SequenceChunk> a, b;
    for (int i = 0; i < kSeqs; ++i) {
      const size_t k = static_cast<size_t>(i);
      const int64_t prompt_len = static_cast<int64_t>(prompts[k].size());
      const std::span<const int32_t> tokens =
          step == 0 ? std::span<const int32_t>(prompts[k]) : std::span<const int32_t>(&next[k], 1);
      a.push_back({tokens, &kv_full[k], false, prompt_len});
      b.push_back({tokens, &kv_sampled[k], false, prompt_len});
      samplers[k]->plan_row(prompts[k], generated[k], static_cast<size_t>(vocab), plans[k]);
      const bool mixed = step % 2 == 1;
      if (!mixed || i % 2 == 0) b.back().sampling = &plans[k];
      if (mixed && i == 3) b.back().argmax_only = true;  // a greedy row beside sampled ones
    }
    // Step 4 opens with a new sequence's whole prompt, sampled: the runner
    // computes generated tokens first, so the rows are out of chunk order.
    if (step == 4) {
      a.insert(a.begin(), SequenceChunk{late_prompt, &late_full, false});
      b.insert(b.begin(), SequenceChunk{late_prompt, &late_sampled, false});
      b.front().sampling = &late_plan;
    }
    const size_t first = step == 4 ? 1 : 0;
    const std::vector<float> la = full.forward(a);
    const std::vector<float>& lb = sampled.forward(b);
    const std::span<const int32_t> ids = sampled.row_tokens();
    ASSERT_EQ(ids.size(), a.size()) << "step " << step;
    if (step == 4) {
      std::vector<float> row(la.begin(), la.begin() + vocab);
      EXPECT_EQ(ids[0], sample_row_reference(row, late_plan)) << "the late prompt's sampled row";
    }
    for (size_t r = 0; r < static_cast<size_t>(kSeqs); ++r) {
      const size_t at = r + first;  // the row in this step
      std::vector<float> row(la.begin() + static_cast<long>(at) * vocab, la.begin() + static_cast<long>(at + 1) * vocab);
      int32_t want = 0;
      if (b[at].argmax_only) {
        want = static_cast<int32_t>(std::max_element(row.begin(), row.end()) - row.begin());
      } else {
        want = sample_row_reference(row, plans[r]);  // the row's draw either way
      }
      if (b[at].sampling != nullptr || b[at].argmax_only) {
        EXPECT_EQ(ids[at], want) << "step " << step << ", row " << r;
      } else {
        EXPECT_EQ(0, std::memcmp(la.data() + at * vocab, lb.data() + at * vocab, static_cast<size_t>(vocab) * sizeof(float)))
            << "step " << step << ", row " << r << ": a full row in a mixed step";
      }
      next[r] = want;
      generated[r].push_back(want);
    }
  }
  for (int i = 0; i < kSeqs; ++i) {
    kv_full[static_cast<size_t>(i)].release(full.block_allocator());
    kv_sampled[static_cast<size_t>(i)].release(sampled.block_allocator());
  }
  late_full.release(full.block_allocator());
  late_sampled.release(sampled.block_allocator());
}

// Weights quantized at load time to int8 or FP8 rows, from the BF16 fixture.
TEST_P(CudaNumerics, LoadTimeQuantizationStaysNearReference) {
  auto model = ModelFile::open((kFixtures / GetParam()).string());
  const int64_t vocab = model->config().vocab_size;
  for (GpuQuantization q : {GpuQuantization::Int8, GpuQuantization::Fp8}) {
    CudaRunnerOptions o = small_options();
    o.quantize = q;
    CudaModelRunner runner(*model, o);
    // Measured on the H100 (tiny fixtures): int8 up to 0.28, fp8 up to 1.08.
    const double tol = q == GpuQuantization::Int8 ? 0.4 : 1.5;
    const Diff a = compare(all_logits(runner, ref_.prompt_a), ref_.logits_a, vocab, 2 * tol);
    const Diff b = compare(all_logits(runner, ref_.prompt_b), ref_.logits_b, vocab, 2 * tol);
    std::printf("[%s %s] max|dlogit| a=%.2e b=%.2e near-ties %lld/%lld\n", GetParam().c_str(),
                q == GpuQuantization::Int8 ? "int8" : "fp8", a.max_abs, b.max_abs,
                static_cast<long long>(a.near_ties + b.near_ties), static_cast<long long>(a.rows + b.rows));
    EXPECT_LT(a.max_abs, tol);
    EXPECT_LT(b.max_abs, tol);
    EXPECT_EQ(a.disagreements + b.disagreements, 0);
  }
}

// An FP8 (E4M3) KV cache: the prompt's logits and those of decode steps
// along the reference's greedy continuation stay near the f16 cache's.
// Graphs on, as served.
TEST_P(CudaNumerics, Fp8KvCacheStaysNearF16Cache) {
  auto model = ModelFile::open((kFixtures / GetParam()).string());
  const int64_t vocab = model->config().vocab_size;
  CudaRunnerOptions o = small_options();
  o.tune_gemm = false;
  CudaRunnerOptions o8 = o;
  o8.kv_cache = GpuKvCache::Fp8;
  CudaModelRunner f16(*model, o), fp8(*model, o8);
  EXPECT_EQ(fp8.plan().kv_bytes_per_block * 2, f16.plan().kv_bytes_per_block);
  // E4M3 keeps 3 mantissa bits of each cached value. Measured on an H100:
  // 0.38 (qwen3) to 0.53 (qwen2) over the prompt and 12 decode steps.
  const double tol = 0.75;
  SequenceKv kv16, kv8;
  const int64_t n_prompt = static_cast<int64_t>(ref_.prompt_a.size());
  const int64_t n_total = n_prompt + static_cast<int64_t>(ref_.greedy_a.size());
  ASSERT_TRUE(kv16.reserve(n_total, f16.block_size(), f16.block_allocator()));
  ASSERT_TRUE(kv8.reserve(n_total, fp8.block_size(), fp8.block_allocator()));
  Diff all;
  for (size_t step = 0; step <= ref_.greedy_a.size(); ++step) {
    const std::span<const int32_t> tokens =
        step == 0 ? std::span<const int32_t>(ref_.prompt_a) : std::span<const int32_t>(&ref_.greedy_a[step - 1], 1);
    SequenceChunk a{tokens, &kv16, step == 0, n_prompt};
    SequenceChunk b{tokens, &kv8, step == 0, n_prompt};
    const std::vector<float> la = f16.forward(std::span<const SequenceChunk>(&a, 1));
    const std::vector<float>& lb = fp8.forward(std::span<const SequenceChunk>(&b, 1));
    ASSERT_EQ(la.size(), lb.size());
    const Diff d = compare(lb, la, vocab, 2 * tol);
    EXPECT_EQ(d.non_finite, 0) << "step " << step;
    EXPECT_EQ(d.disagreements, 0) << "step " << step;
    all.max_abs = std::max(all.max_abs, d.max_abs);
    all.near_ties += d.near_ties;
    all.rows += d.rows;
  }
  kv16.release(f16.block_allocator());
  kv8.release(fp8.block_allocator());
  std::printf("[%s] fp8 KV cache against f16: max|dlogit| %.2e over %lld rows, near-ties %lld\n", GetParam().c_str(),
              all.max_abs, static_cast<long long>(all.rows), static_cast<long long>(all.near_ties));
  EXPECT_LT(all.max_abs, tol);
  EXPECT_GT(all.max_abs, 0.0) << "the cache really was E4M3";
}

INSTANTIATE_TEST_SUITE_P(Fixtures, CudaNumerics, ::testing::Values("llama3", "llama2", "qwen2", "qwen3"));

TEST(CudaPlan, RefusesModelsThatDoNotFitWithNumbers) {
  auto model = ModelFile::open((kFixtures / "llama3").string());
  CudaRunnerOptions o;
  o.max_context = 256;
  o.gpu_memory_bytes = 1 << 20;  // 1 MiB
  try {
    plan_cuda_memory(*model, o, uint64_t{80} << 30);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("gpu budget is"), std::string::npos) << e.what();
  }
  o.gpu_memory_bytes = uint64_t{4} << 30;
  const CudaMemoryPlan plan = plan_cuda_memory(*model, o, uint64_t{80} << 30);
  EXPECT_GT(plan.kv_blocks * plan.block_size, 256);
  // int8 rows: one byte per weight plus a scale per row, under the bf16 plan.
  o.quantize = GpuQuantization::Int8;
  const CudaMemoryPlan q = plan_cuda_memory(*model, o, uint64_t{80} << 30);
  EXPECT_LT(q.weight_bytes, plan.weight_bytes * 6 / 10);
  EXPECT_LE(plan.weight_bytes + plan.scratch_bytes + plan.kv_bytes_per_block * uint64_t(plan.kv_blocks),
            plan.budget_bytes);
}

// The plan reserves scratch for the largest step it is told of: more tokens
// and more logits rows take more of the budget, which the KV cache loses;
// a step size that leaves no room for one sequence is refused, naming
// --step-tokens.
TEST(CudaPlan, ScratchFollowsTheStepSize) {
  auto model = ModelFile::open((kFixtures / "llama3").string());
  const ModelConfig& c = model->config();
  CudaRunnerOptions o;
  o.max_context = 256;
  o.gpu_memory_bytes = uint64_t{1} << 30;
  const CudaMemoryPlan by_default = plan_cuda_memory(*model, o, uint64_t{80} << 30);
  EXPECT_EQ(by_default.step_tokens, 1024);
  EXPECT_EQ(by_default.logit_rows, 1024);
  EXPECT_EQ(by_default.scratch_bytes, step_scratch_bytes(c, GpuQuantization::None, 1024, 1024));
  EXPECT_NE(by_default.describe().find("steps of 1024 tokens"), std::string::npos) << by_default.describe();
  o.max_step_tokens = 8192;
  o.max_logit_rows = 64;
  const CudaMemoryPlan big = plan_cuda_memory(*model, o, uint64_t{80} << 30);
  EXPECT_EQ(big.scratch_bytes, step_scratch_bytes(c, GpuQuantization::None, 8192, 64));
  EXPECT_GT(big.scratch_bytes, by_default.scratch_bytes);
  EXPECT_LT(big.kv_blocks, by_default.kv_blocks);
  EXPECT_LE(big.weight_bytes + big.scratch_bytes + big.kv_bytes_per_block * uint64_t(big.kv_blocks), big.budget_bytes);
  // Every token needs at least its f32 activations (residual, norm, q·k·v,
  // attention, gate·up, silu·up); every row its logits. Below the 256 tokens
  // and rows the runner allocates at load, the plan counts those.
  const uint64_t floor_per_token = 4 * uint64_t(2 * c.hidden_size + 2 * c.q_dim() + 2 * c.kv_dim() + 3 * c.intermediate_size);
  EXPECT_GE(step_scratch_bytes(c, GpuQuantization::None, 301, 0) - step_scratch_bytes(c, GpuQuantization::None, 300, 0),
            floor_per_token);
  EXPECT_GE(step_scratch_bytes(c, GpuQuantization::None, 1, 301) - step_scratch_bytes(c, GpuQuantization::None, 1, 300),
            4 * uint64_t(c.vocab_size));
  EXPECT_EQ(step_scratch_bytes(c, GpuQuantization::None, 1, 1), step_scratch_bytes(c, GpuQuantization::None, 256, 256));
  // FP8's GEMM input and f32 product cost more per token.
  EXPECT_GT(step_scratch_bytes(c, GpuQuantization::Fp8, 1024, 64), step_scratch_bytes(c, GpuQuantization::None, 1024, 64));
  o.max_step_tokens = 1 << 22;  // 4M tokens a step
  try {
    plan_cuda_memory(*model, o, uint64_t{80} << 30);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("--step-tokens"), std::string::npos) << e.what();
  }
}

// What a runner holds after its largest planned step, all rows' logits
// wanted, stays within what its plan counted (weights, KV cache, scratch):
// the plan's scratch is not a guess that the first big step overruns. A
// 0.6B shape (vocabulary 151,936) so that logits rows weigh; FP8 too, whose
// GEMM buffers grow with the LM head's rows.
TEST(CudaPlan, RunnerStaysWithinItsPlan) {
  auto model = make_synth_model_in_memory(find_synth_preset("llama-0.6b"), DType::F16, 1);
  for (GpuQuantization q : {GpuQuantization::None, GpuQuantization::Fp8}) {
    CudaRunnerOptions o;
    o.max_context = 1024;
    o.kv_blocks = 128;
    o.max_step_tokens = 768;
    o.max_logit_rows = 768;
    o.quantize = q;
    TANDEM_CUDA_CHECK(cudaDeviceSynchronize());
    size_t free_before = 0, free_after = 0, total = 0;
    TANDEM_CUDA_CHECK(cudaMemGetInfo(&free_before, &total));
    CudaModelRunner runner(*model, o);
    EXPECT_EQ(runner.capture_decode_graphs(64), 64);  // as serve does: the plan's largest step's buffers, and graphs
    const CudaMemoryPlan& plan = runner.plan();
    size_t free_loaded = 0;
    TANDEM_CUDA_CHECK(cudaDeviceSynchronize());
    TANDEM_CUDA_CHECK(cudaMemGetInfo(&free_loaded, &total));
    std::printf("  quantize %d: %.1f MiB after loading; planned weights %.1f, KV %.1f MiB\n", static_cast<int>(q),
                (free_before - free_loaded) / 1048576.0, plan.weight_bytes / 1048576.0,
                plan.kv_bytes_per_block * static_cast<double>(plan.kv_blocks) / 1048576.0);
    std::vector<std::vector<int32_t>> prompts(3);
    std::vector<SequenceKv> kvs(3);
    std::vector<SequenceChunk> chunks;
    for (size_t i = 0; i < prompts.size(); ++i) {
      for (int32_t t = 0; t < 256; ++t) prompts[i].push_back((t * 7919 + static_cast<int32_t>(i)) % 151936);
      ASSERT_TRUE(kvs[i].reserve(256, runner.block_size(), runner.block_allocator()));
      chunks.push_back(SequenceChunk{prompts[i], &kvs[i], true});
    }
    const std::vector<float>& logits = runner.forward(chunks);
    EXPECT_EQ(logits.size(), size_t{768} * 151936);
    TANDEM_CUDA_CHECK(cudaDeviceSynchronize());
    TANDEM_CUDA_CHECK(cudaMemGetInfo(&free_after, &total));
    const uint64_t used = free_before - free_after;
    const uint64_t planned =
        plan.weight_bytes + plan.kv_bytes_per_block * static_cast<uint64_t>(plan.kv_blocks) + plan.scratch_bytes;
    std::printf("  quantize %d: used %.1f MiB after a step of 768 tokens and rows; planned %.1f MiB (scratch %.1f)\n",
                static_cast<int>(q), used / 1048576.0, planned / 1048576.0, plan.scratch_bytes / 1048576.0);
    EXPECT_LE(used, planned) << plan.describe();
    for (SequenceKv& kv : kvs) kv.release(runner.block_allocator());
  }
}

// Offload: the fixture's first layer (and the embedding) on the GPU, the
// second layer and the LM head on the CPU engine. Prefill logits against
// transformers and decode steps (graphs on: the hand-over to the host is
// captured too) against the CPU engine, several sequences at once, within
// the GPU engine's own tolerance.
TEST_P(CudaNumerics, OffloadedLayersMatchReference) {
  auto model = ModelFile::open((kFixtures / GetParam()).string());
  const int64_t vocab = model->config().vocab_size;
  ThreadPool pool(2);
  OffloadOptions oo;
  oo.gpu = small_options();
  oo.gpu_layers = 1;
  OffloadRunner runner(*model, pool, oo);
  EXPECT_EQ(runner.plan().gpu_layers, 1);
  EXPECT_NE(runner.plan().describe().find("layers 1-1 (1), the final norm and the LM head on the CPU"),
            std::string::npos)
      << runner.plan().describe();
  const double tol = 8e-2;
  const Diff a = compare(all_logits(runner, ref_.prompt_a), ref_.logits_a, vocab, 2 * tol);
  const Diff b = compare(all_logits(runner, ref_.prompt_b), ref_.logits_b, vocab, 2 * tol);
  EXPECT_LT(a.max_abs, tol);
  EXPECT_LT(b.max_abs, tol);
  EXPECT_EQ(a.disagreements + b.disagreements, 0);

  CpuRunnerOptions co;
  co.max_context = 256;
  co.block_size = 4;
  CpuModelRunner cpu_runner(*model, pool, co);
  const std::vector<float> want = decode_trace(cpu_runner, ref_, 3);
  const std::vector<float> got = decode_trace(runner, ref_, 3);
  ASSERT_EQ(got.size(), want.size());
  Diff d;
  for (int64_t r = 0; r < static_cast<int64_t>(want.size()) / vocab; ++r) {
    const Diff step = compare(got.data() + r * vocab, want.data() + r * vocab, 1, vocab, 2 * tol);
    d.max_abs = std::max(d.max_abs, step.max_abs);
    d.disagreements += step.disagreements;
    if (step.near_ties + step.disagreements > 0) break;  // inputs differ from here on
  }
  std::printf("[%s offload 1 of 2 layers] prefill max|dlogit| a=%.2e b=%.2e; decode %.2e\n", GetParam().c_str(),
              a.max_abs, b.max_abs, d.max_abs);
  EXPECT_LT(d.max_abs, tol);
  EXPECT_EQ(d.disagreements, 0);
}

TEST(CudaOffloadPlan, FitsWhatTheBudgetsAllowAndSaysWhyNot) {
  auto model = ModelFile::open((kFixtures / "llama3").string());
  const uint64_t gpu_total = uint64_t{80} << 30;
  CudaRunnerOptions o = small_options();
  o.kv_blocks = 0;
  o.gpu_memory_bytes = uint64_t{64} << 30;
  const CudaMemoryPlan whole = plan_cuda_memory(*model, o, gpu_total);
  const uint64_t whole_need = whole.weight_bytes + whole.scratch_bytes +
                              whole.kv_bytes_per_block * static_cast<uint64_t>((256 + 3) / 4);
  // One byte short of the whole model: one layer goes to the CPU.
  OffloadOptions oo;
  oo.gpu = o;
  oo.gpu.gpu_memory_bytes = whole_need - 1;
  oo.cpu_memory_bytes = uint64_t{1} << 30;
  EXPECT_THROW(plan_cuda_memory(*model, oo.gpu, gpu_total), Error);
  const OffloadPlan p = plan_offload(*model, oo, gpu_total);
  EXPECT_EQ(p.gpu_layers, 1);
  EXPECT_GT(p.cpu_weight_bytes, 0u);
  EXPECT_GE(p.gpu.kv_blocks * p.gpu.block_size, 256);

  auto error_of = [&](const OffloadOptions& x) -> std::string {
    try {
      plan_offload(*model, x, gpu_total);
    } catch (const Error& e) {
      return e.what();
    }
    return "";
  };
  OffloadOptions tiny = oo;
  tiny.gpu.gpu_memory_bytes = 1 << 20;
  EXPECT_NE(error_of(tiny).find("not even one layer fits"), std::string::npos) << error_of(tiny);
  OffloadOptions all = oo;
  all.gpu_layers = 2;
  EXPECT_NE(error_of(all).find("at least one on the CPU"), std::string::npos) << error_of(all);
  OffloadOptions no_cpu = oo;
  no_cpu.cpu_memory_bytes = 1024;
  EXPECT_NE(error_of(no_cpu).find("CPU budget"), std::string::npos) << error_of(no_cpu);
}

}  // namespace
}  // namespace tandem
