// The CPU engine against transformers' float32 reference (fixtures made by
// tools/fixtures/make_fixtures.py): every architecture, every weight dtype,
// from safetensors and from GGUF, one sequence and several in one batch.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <cstring>
#include <unistd.h>

#include "backends/cpu/cpu_kernels.h"
#include "common/error.h"
#include "common/half.h"
#include "common/thread_pool.h"
#include "engine/cpu_model_runner.h"
#include "engine/generator.h"
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

struct Diff {
  double max_abs = 0;
  double top1_agreement = 0;  // fraction of rows whose argmax matches
};

Diff compare(const std::vector<float>& got, const std::vector<float>& want, int64_t vocab) {
  Diff d;
  const int64_t rows = static_cast<int64_t>(want.size()) / vocab;
  int64_t agree = 0;
  for (int64_t r = 0; r < rows; ++r) {
    const float* g = got.data() + r * vocab;
    const float* w = want.data() + r * vocab;
    for (int64_t i = 0; i < vocab; ++i) d.max_abs = std::max(d.max_abs, std::fabs(double(g[i]) - double(w[i])));
    agree += (std::max_element(g, g + vocab) - g) == (std::max_element(w, w + vocab) - w);
  }
  d.top1_agreement = double(agree) / double(rows);
  return d;
}

// Logits of every prompt position, prompt in one chunk.
std::vector<float> all_logits(ModelRunner& runner, const std::vector<int32_t>& prompt) {
  SequenceKv kv;
  EXPECT_TRUE(kv.reserve(static_cast<int64_t>(prompt.size()), runner.block_size(), runner.block_allocator()));
  SequenceChunk chunk{prompt, &kv, true};
  std::vector<float> out = runner.forward(std::span<const SequenceChunk>(&chunk, 1));
  kv.release(runner.block_allocator());
  return out;
}

std::vector<int32_t> greedy(ModelRunner& runner, const std::vector<int32_t>& prompt, int n) {
  Generator gen(runner, nullptr);
  GenerateOptions o;
  o.sampling.temperature = 0;
  o.sampling.max_tokens = n;
  o.sampling.ignore_eos = true;
  return gen.generate(prompt, o).token_ids;
}

// A copy of a fixture folder with every tensor re-stored as `dtype`.
fs::path restore_as(const std::string& arch, DType dtype) {
  const fs::path src = kFixtures / arch;
  const fs::path dst = fs::temp_directory_path() / ("tandem_fixture_" + arch + "_" + std::string(dtype_name(dtype)) +
                                                    "_" + std::to_string(::getpid()));
  fs::create_directories(dst);
  for (const char* f : {"config.json", "tokenizer.json", "tokenizer_config.json"})
    fs::copy_file(src / f, dst / f, fs::copy_options::overwrite_existing);
  auto in = SafetensorsFile::open((src / "model.safetensors").string());
  std::vector<std::vector<uint8_t>> buffers;
  buffers.reserve(in->tensors().size());
  SafetensorsWriter w;
  for (const TensorRef& t : in->tensors()) {
    std::vector<float> f32(static_cast<size_t>(t.n_elements()));
    cpu::dequantize_row(t.dtype, t.data, f32.data(), t.n_elements());
    std::vector<uint8_t> bytes(f32.size() * (dtype == DType::F32 ? 4 : 2));
    if (dtype == DType::F32) {
      std::memcpy(bytes.data(), f32.data(), bytes.size());
    } else {
      for (size_t i = 0; i < f32.size(); ++i) {
        const uint16_t h = dtype == DType::F16 ? f32_to_f16(f32[i]) : f32_to_bf16(f32[i]);
        std::memcpy(bytes.data() + 2 * i, &h, 2);
      }
    }
    buffers.push_back(std::move(bytes));
    w.add_tensor(t.name, dtype, t.shape, buffers.back().data(), buffers.back().size());
  }
  w.write((dst / "model.safetensors").string());
  return dst;
}

class ModelNumerics : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override { ref_ = load_reference(GetParam()); }

  // Checks one model copy against the reference. `tol` bounds max |Δlogit|;
  // `min_top1` the fraction of positions whose argmax agrees; `exact_greedy`
  // requires the 32-token greedy continuation to be identical.
  void check_model(const std::string& path, double tol, double min_top1, bool exact_greedy) {
    auto model = ModelFile::open(path);
    ThreadPool pool(2);
    CpuRunnerOptions o;
    o.max_context = 256;
    o.block_size = 4;  // small blocks: sequences span many of them
    CpuModelRunner runner(*model, pool, o);
    const int64_t vocab = model->config().vocab_size;
    const Diff a = compare(all_logits(runner, ref_.prompt_a), ref_.logits_a, vocab);
    const Diff b = compare(all_logits(runner, ref_.prompt_b), ref_.logits_b, vocab);
    EXPECT_LT(a.max_abs, tol) << path;
    EXPECT_LT(b.max_abs, tol) << path;
    EXPECT_GE(a.top1_agreement, min_top1) << path;
    EXPECT_GE(b.top1_agreement, min_top1) << path;
    const std::vector<int32_t> g = greedy(runner, ref_.prompt_a, 32);
    if (exact_greedy) {
      EXPECT_EQ(g, ref_.greedy_a) << path;
    } else {
      // Quantized weights may flip a near-tie; the first tokens must hold.
      ASSERT_GE(g.size(), 4u);
      EXPECT_TRUE(std::equal(g.begin(), g.begin() + 4, ref_.greedy_a.begin())) << path;
    }
    std::printf("[%s] max|dlogit| a=%.2e b=%.2e top1 a=%.3f b=%.3f\n", path.c_str(), a.max_abs, b.max_abs,
                a.top1_agreement, b.top1_agreement);
  }

  Reference ref_;
};

TEST_P(ModelNumerics, SafetensorsBf16MatchesReference) {
  // The BF16 weights are the exact values the reference ran with in f32.
  check_model((kFixtures / GetParam()).string(), 1e-3, 1.0, true);
}

TEST_P(ModelNumerics, SafetensorsF32MatchesReference) {
  const fs::path dir = restore_as(GetParam(), DType::F32);
  check_model(dir.string(), 1e-3, 1.0, true);
  fs::remove_all(dir);
}

TEST_P(ModelNumerics, SafetensorsF16MatchesReference) {
  const fs::path dir = restore_as(GetParam(), DType::F16);
  check_model(dir.string(), 1e-3, 1.0, true);
  fs::remove_all(dir);
}

TEST_P(ModelNumerics, GgufConversionsMatchReference) {
  auto hf = ModelFile::open((kFixtures / GetParam()).string());
  const fs::path tmp = fs::temp_directory_path();
  struct {
    DType dtype;
    double tol;
    double top1;
    bool exact;
  } cases[] = {{DType::F32, 1e-3, 1.0, true},
               {DType::BF16, 1e-3, 1.0, true},
               {DType::F16, 1e-3, 1.0, true},
               {DType::Q8_0, 0.3, 0.8, false}};
  for (const auto& c : cases) {
    const fs::path out =
        tmp / ("tandem_" + GetParam() + "_" + std::string(dtype_name(c.dtype)) + std::to_string(::getpid()) + ".gguf");
    convert_to_gguf(*hf, c.dtype, out.string());
    check_model(out.string(), c.tol, c.top1, c.exact);
    fs::remove(out);
  }
}

TEST_P(ModelNumerics, BatchedAndChunkedStepsMatchSingleSequence) {
  auto model = ModelFile::open((kFixtures / GetParam()).string());
  ThreadPool pool(2);
  CpuRunnerOptions o;
  o.max_context = 128;
  o.block_size = 4;
  o.kv_blocks = 96;
  CpuModelRunner runner(*model, pool, o);
  const int64_t vocab = model->config().vocab_size;
  BlockAllocator& alloc = runner.block_allocator();

  // Both prompts in one step, the longer one split: a chunk of prompt_a is
  // prefilled first, then its rest goes in the same step as all of prompt_b.
  SequenceKv kv_a, kv_b;
  const size_t split = ref_.prompt_a.size() / 3;
  ASSERT_TRUE(kv_a.reserve(static_cast<int64_t>(ref_.prompt_a.size()) + 8, 4, alloc));
  ASSERT_TRUE(kv_b.reserve(static_cast<int64_t>(ref_.prompt_b.size()) + 8, 4, alloc));
  std::vector<int32_t> head(ref_.prompt_a.begin(), ref_.prompt_a.begin() + static_cast<long>(split));
  std::vector<int32_t> tail(ref_.prompt_a.begin() + static_cast<long>(split), ref_.prompt_a.end());
  SequenceChunk first{head, &kv_a, true};
  std::vector<float> logits_head = runner.forward(std::span<const SequenceChunk>(&first, 1));
  SequenceChunk both[] = {{tail, &kv_a, true}, {ref_.prompt_b, &kv_b, true}};
  std::vector<float> logits_both = runner.forward(both);

  std::vector<float> got_a = logits_head;
  got_a.insert(got_a.end(), logits_both.begin(), logits_both.begin() + static_cast<long>(tail.size() * vocab));
  std::vector<float> got_b(logits_both.begin() + static_cast<long>(tail.size() * vocab), logits_both.end());
  EXPECT_LT(compare(got_a, ref_.logits_a, vocab).max_abs, 1e-3);
  EXPECT_LT(compare(got_b, ref_.logits_b, vocab).max_abs, 1e-3);

  // Decode both sequences together: a's continuation must be the greedy
  // reference while b decodes beside it.
  int32_t next_a = ref_.greedy_a[0];
  int32_t next_b = 0;
  {
    const float* last_b = got_b.data() + (got_b.size() / vocab - 1) * vocab;
    next_b = static_cast<int32_t>(std::max_element(last_b, last_b + vocab) - last_b);
  }
  for (size_t step = 1; step < 8; ++step) {
    SequenceChunk pair[] = {{std::span<const int32_t>(&next_a, 1), &kv_a, false},
                            {std::span<const int32_t>(&next_b, 1), &kv_b, false}};
    const std::vector<float>& l = runner.forward(pair);
    next_a = static_cast<int32_t>(std::max_element(l.begin(), l.begin() + vocab) - l.begin());
    next_b = static_cast<int32_t>(std::max_element(l.begin() + vocab, l.begin() + 2 * vocab) - (l.begin() + vocab));
    EXPECT_EQ(next_a, ref_.greedy_a[step]) << "step " << step;
  }
  kv_a.release(alloc);
  kv_b.release(alloc);
  EXPECT_EQ(alloc.n_free(), alloc.n_blocks());
}

INSTANTIATE_TEST_SUITE_P(Fixtures, ModelNumerics, ::testing::Values("llama3", "llama2", "qwen2", "qwen3"));

TEST(Generator, RejectsPromptLongerThanContext) {
  auto model = ModelFile::open((kFixtures / "qwen3").string());
  ThreadPool pool(1);
  CpuRunnerOptions o;
  o.max_context = 16;
  CpuModelRunner runner(*model, pool, o);
  Generator gen(runner, nullptr);
  std::vector<int32_t> prompt(40, 5);
  GenerateOptions go;
  try {
    gen.generate(prompt, go);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("prompt has 40 tokens"), std::string::npos) << e.what();
  }
  // The failed request gave back every block.
  EXPECT_EQ(runner.block_allocator().n_free(), runner.block_allocator().n_blocks());
}

TEST(Generator, StopsAtContextEndWithLength) {
  auto model = ModelFile::open((kFixtures / "qwen3").string());
  ThreadPool pool(1);
  CpuRunnerOptions o;
  o.max_context = 16;
  CpuModelRunner runner(*model, pool, o);
  Generator gen(runner, nullptr);
  GenerateOptions go;
  go.sampling.temperature = 0;
  go.sampling.max_tokens = 100;
  const GenerationResult r = gen.generate(std::vector<int32_t>(10, 7), go);
  EXPECT_EQ(r.finish_reason, "length");
  EXPECT_EQ(r.generated_tokens, 6);
}


// The in-memory synthetic model (perf --synthetic) in Q8_0: every tensor's
// window starts on a whole block, so every block scale is a sane f16 (a window
// starting mid-block read quants as scales: NaN and huge values), and the
// model gives finite logits.
TEST(SynthInMemory, Q8_0TensorsStartOnWholeBlocks) {
  for (const char* preset : {"tiny", "qwen3-0.6b"}) {
    auto model = make_synth_model_in_memory(find_synth_preset(preset), DType::Q8_0, 1);
    int64_t checked = 0;
    for (const TensorRef& t : model->tensors()) {
      if (t.dtype != DType::Q8_0) continue;
      const auto* blocks = reinterpret_cast<const BlockQ8_0*>(t.data);
      const int64_t n_blocks = t.n_elements() / kQ8_0BlockElems;
      for (int64_t b = 0; b < n_blocks; b += 97) {
        const float d = f16_to_f32(blocks[b].d);
        ASSERT_TRUE(std::isfinite(d) && d >= 0.0f && d < 0.01f) << preset << " " << t.name << " block " << b << ": " << d;
      }
      ++checked;
    }
    EXPECT_GT(checked, 0) << preset;
    if (std::string(preset) != "tiny") continue;
    ThreadPool pool(2);
    CpuRunnerOptions o;
    o.max_context = 64;
    CpuModelRunner runner(*model, pool, o);
    SequenceKv kv;
    ASSERT_TRUE(kv.reserve(8, runner.block_size(), runner.block_allocator()));
    const std::vector<int32_t> prompt = {1, 2, 3, 4, 5, 6, 7, 8};
    SequenceChunk chunk{prompt, &kv, false};
    const std::vector<float>& logits = runner.forward(std::span<const SequenceChunk>(&chunk, 1));
    for (float l : logits) ASSERT_TRUE(std::isfinite(l));
    kv.release(runner.block_allocator());
  }
}

}  // namespace
}  // namespace tandem
