// ParallelCudaRunner on real GPUs (label gpu): the fixture models split by
// tensor and pipeline parallelism must generate the same greedy tokens as
// one GPU, with logits within rounding of it, in batches whose sequences
// fill several pipeline micro-batches. Plans that need more GPUs than are
// visible are skipped (and refused with the numbers).
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <tuple>
#include <vector>

#include "backends/cuda/cuda_model_runner.h"
#include "backends/cuda/parallel_cuda_runner.h"
#include "common/error.h"
#include "engine/row_sampling.h"
#include "models/gguf_export.h"
#include "models/model_file.h"
#include "tests/models/fixture_reference.h"

namespace tandem {
namespace {

namespace fs = std::filesystem;

using test_fixtures::kFixtures;
using test_fixtures::load_reference;
using test_fixtures::Reference;

int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return n;
}

// A step of these fixtures takes milliseconds: one that runs past this
// (ranks that wait on each other for good) fails the test, naming the
// ranks still running, instead of hanging it.
constexpr std::chrono::milliseconds kStepLimit{30000};

// Greedy steps a generation check runs.
constexpr int kSteps = 24;

CudaRunnerOptions small_options(bool graphs) {
  CudaRunnerOptions o;
  o.max_context = 256;
  o.block_size = 4;
  o.kv_blocks = 512;
  o.cuda_graphs = graphs;
  return o;
}

// Greedy generation for `prompts` decoded together: per sequence the tokens
// it generated, and all logits rows in step order (for the max difference).
struct Generation {
  std::vector<std::vector<int32_t>> tokens;
  std::vector<float> logits;
};

Generation generate(ModelRunner& runner, const std::vector<std::vector<int32_t>>& prompts, int steps) {
  const int64_t vocab = runner.config().vocab_size;
  BlockAllocator& alloc = runner.block_allocator();
  const size_t n = prompts.size();
  std::vector<SequenceKv> kvs(n);
  Generation g;
  g.tokens.resize(n);
  std::vector<int32_t> next(n);
  const bool trace = std::getenv("TANDEM_TEST_TRACE") != nullptr;
  auto take = [&](const std::vector<float>& l) {
    if (trace) std::fprintf(stderr, "  step %zu done\n", g.tokens.empty() ? 0 : g.tokens[0].size());
    g.logits.insert(g.logits.end(), l.begin(), l.end());
    for (size_t i = 0; i < n; ++i) {
      const float* row = l.data() + static_cast<int64_t>(i) * vocab;
      next[i] = static_cast<int32_t>(std::max_element(row, row + vocab) - row);
      g.tokens[i].push_back(next[i]);
    }
  };
  std::vector<SequenceChunk> chunks;
  for (size_t i = 0; i < n; ++i) {
    EXPECT_TRUE(kvs[i].reserve(static_cast<int64_t>(prompts[i].size()) + steps + 1, runner.block_size(), alloc));
    SequenceChunk c{prompts[i], &kvs[i], false};
    c.prompt_len = static_cast<int64_t>(prompts[i].size());
    chunks.push_back(c);
  }
  take(runner.forward(chunks));  // the prompts in one step (prefill GEMM)
  for (int s = 1; s < steps; ++s) {
    chunks.clear();
    for (size_t i = 0; i < n; ++i) {
      SequenceChunk c{std::span<const int32_t>(&next[i], 1), &kvs[i], false};
      c.prompt_len = static_cast<int64_t>(prompts[i].size());
      chunks.push_back(c);
    }
    take(runner.forward(chunks));  // decode (GEMV, graphs)
  }
  for (auto& kv : kvs) kv.release(alloc);
  EXPECT_EQ(alloc.n_free(), alloc.n_blocks());
  return g;
}

std::vector<std::vector<int32_t>> prompts_of(const Reference& ref, int n) {
  std::vector<std::vector<int32_t>> out;
  for (int i = 0; i < n; ++i) {
    std::vector<int32_t> p = i % 2 == 0 ? ref.prompt_a : ref.prompt_b;
    p.resize(p.size() - static_cast<size_t>(i % 5));
    out.push_back(p);
  }
  return out;
}

struct Plan {
  int64_t tp, pp;
  std::vector<int> devices;  // global rank -> GPU; empty: rank r on GPU r
  bool fused = true;         // CudaRunnerOptions::fused_all_reduce
};

// The plans a machine with `gpus` GPUs can run, one rank a GPU: TP 2, PP 2,
// and with four GPUs TP 2 x PP 2. With `unfused`, TP 2 also runs with NCCL's
// all-reduce and a norm kernel instead of the fused reduction.
// TANDEM_TEST_PLANS="2x1,1x2" keeps only those (for chasing a failure).
std::vector<Plan> plans_for(int gpus, bool unfused = false) {
  std::vector<Plan> out;
  if (gpus < 2) return out;
  out.push_back({2, 1, {}});
  if (unfused) out.push_back({2, 1, {}, false});
  out.push_back({1, 2, {}});
  if (gpus >= 4) out.push_back({2, 2, {}});
  if (const char* only = std::getenv("TANDEM_TEST_PLANS")) {
    std::erase_if(out, [&](const Plan& p) {
      return std::string(only).find(std::to_string(p.tp) + "x" + std::to_string(p.pp)) == std::string::npos;
    });
  }
  return out;
}

// The fixture `arch` as `dtype` runs it: its bf16 directory, or an f32 GGUF
// written to the temporary directory under `prefix` (the caller removes it).
fs::path fixture_as(const std::string& arch, const std::string& dtype, const std::string& prefix) {
  const fs::path source = kFixtures / arch;
  if (dtype == "bf16") return source;
  const fs::path path = fs::temp_directory_path() / (prefix + arch + "_" + dtype + ".gguf");
  convert_to_gguf(*ModelFile::open(source.string()), DType::F32, path.string());
  return path;
}

// The fixture as `dtype` runs it, five of its reference prompts, and one
// GPU's greedy generation of them: what every plan is checked against.
struct OneGpuBaseline {
  std::unique_ptr<ModelFile> model;
  std::vector<std::vector<int32_t>> prompts;
  Generation want;
};
OneGpuBaseline one_gpu_baseline(const fs::path& path, const std::string& arch, bool graphs) {
  OneGpuBaseline b;
  b.model = ModelFile::open(path.string());
  b.prompts = prompts_of(load_reference(arch), 5);
  CudaModelRunner single(*b.model, small_options(graphs));
  b.want = generate(single, b.prompts, kSteps);
  return b;
}

// One plan's greedy generation against one GPU's (`want`).
void check_plan(const Plan& plan, const std::string& arch, const std::string& dtype, bool graphs,
                const ModelFile& model, const std::vector<std::vector<int32_t>>& prompts, const Generation& want) {
  ParallelRunnerOptions o;
  o.step_limit = kStepLimit;
  o.devices = plan.devices;
  o.parallel.tensor_parallel = plan.tp;
  o.parallel.pipeline_stages = plan.pp;
  o.gpu = small_options(graphs && plan.devices.empty());
  // TANDEM_TEST_NO_WINDOW=1: all-reduces in ordinary memory, and
  // TANDEM_TEST_NO_FUSED=1: none fused (for chasing a failure).
  o.gpu.shared_all_reduce = std::getenv("TANDEM_TEST_NO_WINDOW") == nullptr;
  o.gpu.fused_all_reduce = plan.fused && std::getenv("TANDEM_TEST_NO_FUSED") == nullptr;
  if (std::getenv("TANDEM_TEST_TRACE"))
    std::fprintf(stderr, "TP %lld x PP %lld%s\n", (long long)plan.tp, (long long)plan.pp,
                 o.gpu.fused_all_reduce ? "" : " unfused");
  ParallelCudaRunner runner(model, o);
  // Tensor parallelism alone, where the GPUs reach each other's memory,
  // fuses its decode steps' all-reduces with the norms after them, or
  // (fusion off) puts them in NCCL's symmetric window (the start-up plan
  // says which each rank uses).
  int peer = 0;
  const bool reachable = cudaDeviceCanAccessPeer(&peer, 0, 1) == cudaSuccess && peer;
  for (const std::string& line : runner.describe_ranks()) {
    if (plan.pp == 1 && reachable && o.gpu.fused_all_reduce) {
      EXPECT_NE(line.find("fused with the norm"), std::string::npos) << line;
    } else if (plan.pp == 1 && reachable && o.gpu.shared_all_reduce) {
      EXPECT_NE(line.find("NCCL's symmetric window"), std::string::npos) << line;
    }
  }
  const Generation got = generate(runner, prompts, kSteps);
  ASSERT_EQ(got.logits.size(), want.logits.size());
  // Per sequence: tokens until the first difference, and there whether
  // one GPU rated the two tokens within `tie` (a near tie that rounding may
  // flip; random tiny models have them). Logits are compared up to it.
  const double tie = dtype == "bf16" ? 5e-2 : 2e-3;
  const int64_t vocab = model.config().vocab_size;
  const size_t n = prompts.size();
  double max_abs = 0;
  int64_t same = 0, total = 0, near_ties = 0;
  for (size_t i = 0; i < n; ++i) {
    for (size_t k = 0; k < want.tokens[i].size(); ++k) {
      const float* w = want.logits.data() + static_cast<int64_t>(k * n + i) * vocab;
      const float* g = got.logits.data() + static_cast<int64_t>(k * n + i) * vocab;
      for (int64_t v = 0; v < vocab; ++v) max_abs = std::max(max_abs, std::fabs(double(g[v]) - double(w[v])));
      total += 1;
      if (got.tokens[i][k] == want.tokens[i][k]) {
        ++same;
        continue;
      }
      const double gap = double(w[want.tokens[i][k]]) - double(w[got.tokens[i][k]]);
      std::printf("  sequence %zu step %zu: token %d, one GPU %d, one GPU's gap %.2e\n", i, k, got.tokens[i][k],
                  want.tokens[i][k], gap);
      EXPECT_LE(gap, tie) << "sequence " << i << " step " << k << ": not a near tie";
      ++near_ties;
      total += static_cast<int64_t>(want.tokens[i].size() - k - 1);
      break;  // the inputs differ from here on
    }
  }
  std::printf("[%s %s graphs=%d] TP %lld x PP %lld%s: %lld/%lld greedy tokens equal (%lld near ties), "
              "max|dlogit| %.2e up to them\n",
              arch.c_str(), dtype.c_str(), graphs ? 1 : 0, static_cast<long long>(plan.tp),
              static_cast<long long>(plan.pp), plan.fused ? "" : " unfused", static_cast<long long>(same),
              static_cast<long long>(total),
              static_cast<long long>(near_ties), max_abs);
  std::fflush(stdout);
  // Tensor parallelism sums the all-reduced halves in another order;
  // pipeline micro-batches give the prefill GEMM fewer rows (its tiling may
  // change). Both are rounding, bounded by the bf16 tolerance one GPU has
  // against the reference (tests/backends/cuda/cuda_runner_test.cpp).
  EXPECT_LT(max_abs, 5e-2) << "TP " << plan.tp << " x PP " << plan.pp;
}

// With two or three GPUs, TP 2 x PP 2 runs its four ranks two per GPU,
// placed so that no communicator has two ranks on one GPU (stage 1 swaps the
// GPUs): that checks the wiring of a 4-GPU plan, not its speed. Sharing a
// GPU, two ranks' NCCL kernels can wait on each other inside replayed
// graphs (such a run hung on two H100s), so it runs without graphs. And two
// ranks share one CUDA context, where loading a kernel's module lazily, at
// its first launch mid-step, may wait for the whole context and so for the
// other rank's collectives: this plan loads every module eagerly
// (CUDA_MODULE_LOADING=EAGER), which must be set before CUDA starts and is
// wrong for the other plans (eagerly, a library that cuBLASLt loads on first
// use goes into every context, a peer GPU's busy one included:
// docs/PARALLEL.md). So it runs in a child process of its own, which exits
// 0 when the plan matched one GPU.
[[noreturn]] void check_shared_gpu_plan(const std::string& arch, const std::string& dtype) {
  setenv("CUDA_MODULE_LOADING", "EAGER", /*overwrite=*/1);
  const fs::path path = fixture_as(arch, dtype, "tandem_parallel_shared_");
  {
    const OneGpuBaseline b = one_gpu_baseline(path, arch, /*graphs=*/false);
    check_plan(Plan{2, 2, {0, 1, 1, 0}}, arch, dtype, /*graphs=*/false, *b.model, b.prompts, b.want);
  }
  if (dtype != "bf16") fs::remove(path);
  // A death test's child prints no failures of its own: each goes to
  // stderr, which the parent shows.
  const ::testing::TestResult& result = *::testing::UnitTest::GetInstance()->current_test_info()->result();
  for (int i = 0; i < result.total_part_count(); ++i) {
    const ::testing::TestPartResult& part = result.GetTestPartResult(i);
    if (part.failed())
      std::fprintf(stderr, "%s:%d: %s\n", part.file_name() ? part.file_name() : "?", part.line_number(),
                   part.message());
  }
  std::fflush(stdout);
  std::exit(::testing::Test::HasFailure() ? 1 : 0);
}

class ParallelGeneration : public ::testing::TestWithParam<std::tuple<std::string, std::string, bool>> {};

// Greedy tokens of TP 2, PP 2 and (four GPUs) TP 2 x PP 2 equal one GPU's, for bf16
// weights (the fixture as trained) and f32 GGUF, with and without graphs.
// (Q8_0's decode GEMV quantizes activations, so an all-reduce's last bit can
// move a token: docs/PARALLEL.md. It is not held to equality here.)
TEST_P(ParallelGeneration, MatchesOneGpu) {
  const auto& [arch, dtype, graphs] = GetParam();
  if (device_count() < 2) GTEST_SKIP() << "needs two GPUs";
  const fs::path path = fixture_as(arch, dtype, "tandem_parallel_");
  const OneGpuBaseline b = one_gpu_baseline(path, arch, graphs);

  int ran = 0;
  // The unfused TP 2 run for one fixture: NCCL's all-reduce in the
  // symmetric window, then the norm kernel.
  for (const Plan& plan : plans_for(device_count(), arch == "llama3")) {
    check_plan(plan, arch, dtype, graphs, *b.model, b.prompts, b.want);
    ++ran;
  }
  if (dtype != "bf16") fs::remove(path);
  if (ran == 0) GTEST_SKIP() << "no plan left (TANDEM_TEST_PLANS)";
}

// TP 2 x PP 2 on two or three GPUs, ranks sharing them (check_shared_gpu_plan,
// in a child process; without graphs, so once a fixture and dtype). Only
// with TANDEM_TEST_SHARED_GPUS=1: two NCCL communicators used at once on one
// GPU may wait on each other's kernels forever, and on two H200s this plan
// stopped in 2 of the 5 fixture runs it began (docs/PARALLEL.md). Users
// cannot place two ranks on one GPU; MatchesOneGpu runs TP 2 x PP 2 where
// there are four.
TEST_P(ParallelGeneration, MatchesOneGpuOnSharedGpus) {
  const auto& [arch, dtype, graphs] = GetParam();
  if (graphs) GTEST_SKIP() << "the shared placement runs without graphs: see graphs=0";
  const char* shared = std::getenv("TANDEM_TEST_SHARED_GPUS");
  if (shared == nullptr || std::string(shared) != "1")
    GTEST_SKIP() << "ranks sharing a GPU may deadlock in NCCL; TANDEM_TEST_SHARED_GPUS=1 runs it";
  // The child runs this body again from the start: only the parent asks for
  // the GPUs (starting CUDA), and marks the environment the child inherits.
  constexpr const char* kChild = "TANDEM_TEST_SHARED_GPU_CHILD";
  if (std::getenv(kChild) == nullptr) {
    const int gpus = device_count();
    if (gpus < 2 || gpus >= 4) GTEST_SKIP() << "runs on two or three GPUs (" << gpus << " here)";
    const char* only = std::getenv("TANDEM_TEST_PLANS");
    if (only != nullptr && std::string(only).find("2x2") == std::string::npos) GTEST_SKIP() << "TANDEM_TEST_PLANS";
    setenv(kChild, "1", 1);
  }
  ::testing::FLAGS_gtest_death_test_style = "threadsafe";  // the child starts afresh, before CUDA
  EXPECT_EXIT(check_shared_gpu_plan(arch, dtype), ::testing::ExitedWithCode(0), "");
  unsetenv(kChild);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, ParallelGeneration,
                         ::testing::Combine(::testing::Values("llama3", "llama2", "qwen2", "qwen3"),
                                            ::testing::Values("bf16", "f32"), ::testing::Bool()));

// The rank that holds the logits picks tokens on its GPU: greedy rows
// their argmax, sampled rows their draw (the row sampling rule), tensor
// ranks' vocabulary slices laid side by side first. Each checked sequence
// has a twin with the same tokens whose logits row comes back (batch
// invariance makes the two rows equal); steps of picked rows only copy no
// logits and must still give both twins the same token.
TEST(ParallelRunner, PicksTokensOnTheLogitsGpu) {
  const Reference ref = load_reference("llama3");
  auto model = ModelFile::open((kFixtures / "llama3").string());
  const int64_t vocab = model->config().vocab_size;
  int ran = 0;
  for (const Plan& plan : plans_for(device_count())) {
    ParallelRunnerOptions o;
    o.step_limit = kStepLimit;
    o.devices = plan.devices;
    o.parallel.tensor_parallel = plan.tp;
    o.parallel.pipeline_stages = plan.pp;
    o.gpu = small_options(plan.devices.empty());
    o.gpu.batch_invariant = true;
    // The fused reduction too, where the plan fuses (its sampled rows change
    // in number between steps, so buffers grow mid-run).
    o.gpu.fused_all_reduce = plan.fused && std::getenv("TANDEM_TEST_NO_FUSED") == nullptr;
    if (std::getenv("TANDEM_TEST_TRACE"))
      std::fprintf(stderr, "TP %lld x PP %lld%s\n", (long long)plan.tp, (long long)plan.pp,
                   o.gpu.fused_all_reduce ? "" : " unfused");
    ParallelCudaRunner runner(*model, o);
    ASSERT_TRUE(runner.samples_rows());
    BlockAllocator& alloc = runner.block_allocator();
    constexpr size_t kPairs = 4;  // sequence 2p is checked against its twin 2p + 1
    const auto prompts = prompts_of(ref, kPairs);
    std::vector<SequenceKv> kvs(2 * kPairs);
    std::vector<RowSampling> plans(kPairs);
    std::vector<int32_t> next(kPairs);
    for (size_t i = 0; i < 2 * kPairs; ++i)
      ASSERT_TRUE(kvs[i].reserve(static_cast<int64_t>(prompts[i / 2].size()) + 16, runner.block_size(), alloc));
    for (int step = 0; step < 8; ++step) {
      const bool all_picked = step % 3 == 2;
      std::vector<SequenceChunk> chunks;
      for (size_t p = 0; p < kPairs; ++p) {
        plans[p].scale = 1.0f / 0.9f;
        plans[p].top_p = p == 3 ? 0.8f : 1.0f;
        plans[p].draw = (0x9e3779b97f4a7c15ull * (step * kPairs + p + 1)) >> 11;
        for (int twin = 0; twin < 2; ++twin) {
          const std::span<const int32_t> tokens =
              step == 0 ? std::span<const int32_t>(prompts[p]) : std::span<const int32_t>(&next[p], 1);
          SequenceChunk c{tokens, &kvs[2 * p + twin], false, static_cast<int64_t>(prompts[p].size())};
          if (twin == 0 || all_picked) {
            if (p < 2) c.argmax_only = true;
            else c.sampling = &plans[p];
          }
          chunks.push_back(c);
        }
      }
      const std::vector<float>& logits = runner.forward(chunks);
      const std::span<const int32_t> picked = runner.row_tokens();
      ASSERT_EQ(picked.size(), chunks.size()) << "TP " << plan.tp << " x PP " << plan.pp << ", step " << step;
      for (size_t p = 0; p < kPairs; ++p) {
        const int32_t got = picked[2 * p];
        if (all_picked) {
          EXPECT_EQ(picked[2 * p + 1], got) << "pair " << p << ", step " << step;
        } else {
          std::vector<float> row(logits.begin() + static_cast<long>(2 * p + 1) * vocab,
                                 logits.begin() + static_cast<long>(2 * p + 2) * vocab);
          const int32_t want = p < 2 ? static_cast<int32_t>(std::max_element(row.begin(), row.end()) - row.begin())
                                     : sample_row_reference(row, plans[p]);
          EXPECT_EQ(got, want) << "TP " << plan.tp << " x PP " << plan.pp << ", pair " << p << ", step " << step;
        }
        EXPECT_GE(got, 0);
        next[p] = got;
      }
    }
    for (SequenceKv& kv : kvs) kv.release(alloc);
    ++ran;
  }
  if (ran == 0) GTEST_SKIP() << "needs two GPUs";
}

TEST(ParallelRunner, RefusesPlansWithMoreRanksThanGpus) {
  auto model = ModelFile::open((kFixtures / "llama2").string());
  ParallelRunnerOptions o;
  o.parallel.tensor_parallel = 2;
  o.parallel.pipeline_stages = 2;
  o.gpu = small_options(true);
  o.devices = {0, 1, 2, device_count()};  // one past the last GPU
  try {
    ParallelCudaRunner runner(*model, o);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("GPU(s) are visible"), std::string::npos) << e.what();
  }
}

TEST(ParallelRunner, RefusesSplitsTheModelDoesNotAllow) {
  auto model = ModelFile::open((kFixtures / "llama3").string());  // 2 KV heads
  ParallelRunnerOptions o;
  o.parallel.tensor_parallel = 4;
  o.gpu = small_options(true);
  try {
    ParallelCudaRunner runner(*model, o);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("KV heads cannot be split over 4 GPUs"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace tandem
