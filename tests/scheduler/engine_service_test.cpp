// The continuous-batching engine: batching and preemption never change an
// answer; cancellation, timeouts, limits and draining behave as documented.
#include <gtest/gtest.h>

#include <atomic>
#include <condition_variable>
#include <filesystem>
#include <limits>
#include <map>
#include <mutex>
#include <set>
#include <sstream>

#include "common/thread_pool.h"
#include "engine/cpu_model_runner.h"
#include "engine/forwarding_runner.h"
#include "engine/paced_runner.h"
#include "engine/row_sampling.h"
#include "engine/sampler.h"
#include "models/model_file.h"
#include "scheduler/engine_service.h"
#include "tokenizer/tokenizer.h"

namespace tandem {
namespace {

namespace fs = std::filesystem;
const std::string kModel = (fs::path(TANDEM_SOURCE_DIR) / "tests/models/fixtures/qwen3").string();

// Collects every request's events; waits for their ends.
class Collector {
 public:
  EventCallback callback(int key) {
    return [this, key](StreamEvent&& e) {
      std::lock_guard<std::mutex> lock(mutex_);
      order_.push_back(key);
      Result& r = results_[key];
      for (int32_t id : e.token_ids) r.ids.push_back(id);
      r.logprobs.insert(r.logprobs.end(), e.logprobs.begin(), e.logprobs.end());
      r.text += e.text;
      if (e.done) {
        r.done = e;
        r.finished = true;
        cv_.notify_all();
      }
    };
  }
  struct Result {
    std::vector<int32_t> ids;
    std::vector<float> logprobs;
    std::string text;
    StreamEvent done;
    bool finished = false;
  };
  Result wait(int key) {
    std::unique_lock<std::mutex> lock(mutex_);
    EXPECT_TRUE(cv_.wait_for(lock, std::chrono::seconds(60), [&] { return results_[key].finished; }))
        << "request " << key << " never finished";
    return results_[key];
  }
  std::vector<int> order() {
    std::lock_guard<std::mutex> lock(mutex_);
    return order_;
  }

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  std::map<int, Result> results_;
  std::vector<int> order_;  // the key of every event, in the order they came
};

// forward() waits while the gate is closed: the requests a test submits then
// cannot finish under it.
class GatedRunner : public ForwardingRunner {
 public:
  using ForwardingRunner::ForwardingRunner;
  void open() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      open_ = true;
    }
    cv_.notify_all();
  }
  const std::vector<float>& forward(std::span<const SequenceChunk> chunks) override {
    {
      std::unique_lock<std::mutex> lock(mutex_);
      cv_.wait(lock, [&] { return open_; });
    }
    return inner_.forward(chunks);
  }

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  bool open_ = false;
};

class EngineServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    model_ = ModelFile::open(model_path_);
    tokenizer_ = Tokenizer::load(model_path_);
  }
  std::string model_path_ = kModel;
  std::unique_ptr<CpuModelRunner> make_runner(int64_t kv_blocks, int64_t block_size = 4, int64_t context = 512) {
    CpuRunnerOptions o;
    o.max_context = context;
    o.block_size = block_size;
    o.kv_blocks = kv_blocks;
    return std::make_unique<CpuModelRunner>(*model_, pool_, o);
  }
  GenerationRequest greedy(const std::string& text, int max_tokens) {
    GenerationRequest r;
    r.prompt = tokenizer_->encode(text, false);
    r.sampling.temperature = 0;
    r.sampling.max_tokens = max_tokens;
    r.sampling.ignore_eos = true;
    return r;
  }
  std::vector<std::string> prompts() {
    std::vector<std::string> p;
    const char* words[] = {"Beautiful", "Errors", "Simple", "Flat", "Sparse", "Readability", "Special", "Now"};
    for (int i = 0; i < 16; ++i) {
      std::string s;
      for (int j = 0; j <= i % 5; ++j) s += std::string(words[(i + j) % 8]) + " is better than ugly. ";
      p.push_back(s);
    }
    return p;
  }
  // Each prompt alone, one at a time.
  std::vector<std::vector<int32_t>> alone(int max_tokens) {
    auto runner = make_runner(256);
    EngineOptions o = opts();
    o.batch_size = 1;
    Collector c;  // outlives the service, whose delivery thread calls into it
    EngineService service(*runner, *tokenizer_, o);
    std::vector<std::vector<int32_t>> out;
    for (int i = 0; i < 16; ++i) {
      service.submit(greedy(prompts()[static_cast<size_t>(i)], max_tokens), c.callback(i));
      out.push_back(c.wait(i).ids);
    }
    return out;
  }

  static EngineOptions opts() {
    EngineOptions o;
    o.context_window = 512;
    return o;
  }

  ThreadPool pool_{2};
  std::unique_ptr<ModelFile> model_;
  std::unique_ptr<Tokenizer> tokenizer_;
};

TEST_F(EngineServiceTest, BatchingIsInvisibleToAnswers) {
  const auto want = alone(12);
  auto runner = make_runner(256);
  EngineOptions o = opts();
  o.batch_size = 8;
  o.step_tokens = 24;  // forces chunked prefill beside running decodes
  Collector c;  // outlives the service, whose delivery thread calls into it
  EngineService service(*runner, *tokenizer_, o);
  for (int i = 0; i < 16; ++i) service.submit(greedy(prompts()[static_cast<size_t>(i)], 12), c.callback(i));
  for (int i = 0; i < 16; ++i) {
    const auto r = c.wait(i);
    EXPECT_EQ(r.ids, want[static_cast<size_t>(i)]) << "request " << i;
    EXPECT_EQ(r.done.finish_reason, "length");
    EXPECT_EQ(r.done.completion_tokens, 12);
  }
  while (!service.idle()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  const EngineStats s = service.stats();
  EXPECT_EQ(s.requests_finished_length, 16u);
  EXPECT_EQ(s.generation_tokens_total, 16u * 12u);
  EXPECT_EQ(s.ttft_seconds.total, 16u);
  EXPECT_EQ(s.e2e_seconds.total, 16u);
  EXPECT_EQ(s.kv_blocks_used, 0);
}

// The Q8_0 demo model: decode kernels quantize activations, prefill kernels
// do not, so this fails unless every token takes its own kernel whatever the
// batch holds (SequenceChunk::prompt_len).
class EngineServiceQ8Test : public EngineServiceTest {
 protected:
  void SetUp() override {
    model_path_ = (fs::path(TANDEM_SOURCE_DIR) / "models/demo/demo-q8_0.gguf").string();
    EngineServiceTest::SetUp();
  }
};

TEST_F(EngineServiceQ8Test, BatchingIsInvisibleToAnswers) {
  const auto want = alone(24);
  auto runner = make_runner(512);
  EngineOptions o = opts();
  o.batch_size = 16;
  o.step_tokens = 40;
  Collector c;  // outlives the service, whose delivery thread calls into it
  EngineService service(*runner, *tokenizer_, o);
  for (int i = 0; i < 16; ++i) service.submit(greedy(prompts()[static_cast<size_t>(i)], 24), c.callback(i));
  for (int i = 0; i < 16; ++i) EXPECT_EQ(c.wait(i).ids, want[static_cast<size_t>(i)]) << "request " << i;
}

// Rows sampled in parallel on a pool (the runner's own, as serve does) give
// every request the tokens it gets with rows sampled one by one: greedy and
// seeded temperature sampling alike.
TEST_F(EngineServiceTest, ParallelSamplingIsInvisibleToAnswers) {
  auto request = [&](int i) {
    GenerationRequest r = greedy(prompts()[static_cast<size_t>(i)], 10);
    if (i % 2 == 1) {
      r.sampling.temperature = 0.9f;
      r.sampling.top_k = 20;
      r.sampling.seed = 1000 + static_cast<uint64_t>(i);
    }
    return r;
  };
  auto run = [&](ThreadPool* sampling_pool) {
    auto runner = make_runner(256);
    EngineOptions o = opts();
    o.batch_size = 8;
    o.sampling_pool = sampling_pool;
    Collector c;
    EngineService service(*runner, *tokenizer_, o);
    for (int i = 0; i < 12; ++i) service.submit(request(i), c.callback(i));
    std::vector<std::vector<int32_t>> out;
    for (int i = 0; i < 12; ++i) out.push_back(c.wait(i).ids);
    return out;
  };
  const auto serial = run(nullptr);
  const auto parallel = run(&pool_);
  for (int i = 0; i < 12; ++i) {
    EXPECT_EQ(parallel[static_cast<size_t>(i)], serial[static_cast<size_t>(i)]) << "request " << i;
    EXPECT_EQ(serial[static_cast<size_t>(i)].size(), 10u);
  }
}

// Logits the sampler cannot use (every one NaN) fail the sequence they
// belong to with an error; the others in the same steps finish as usual.
class PoisonRunner : public ForwardingRunner {
 public:
  PoisonRunner(ModelRunner& inner, int64_t poisoned_prompt_len) : ForwardingRunner(inner), len_(poisoned_prompt_len) {}
  const std::vector<float>& forward(std::span<const SequenceChunk> chunks) override {
    out_ = inner_.forward(chunks);
    const int64_t vocab = inner_.config().vocab_size;
    size_t row = 0;
    for (const SequenceChunk& ch : chunks) {
      const size_t rows = ch.all_logits ? ch.tokens.size() : 1;
      if (ch.prompt_len == len_)
        std::fill(out_.begin() + static_cast<long>(row) * vocab, out_.begin() + static_cast<long>(row + rows) * vocab,
                  std::numeric_limits<float>::quiet_NaN());
      row += rows;
    }
    return out_;
  }

 private:
  int64_t len_;
  std::vector<float> out_;
};

TEST_F(EngineServiceTest, UnusableLogitsFailOnlyTheirSequence) {
  const auto want = alone(8);
  GenerationRequest bad = greedy("x", 8);
  bad.prompt = {11, 12, 13};  // no other prompt here has 3 tokens
  for (int i = 0; i < 4; ++i) ASSERT_NE(greedy(prompts()[static_cast<size_t>(i)], 8).prompt.size(), 3u);
  for (ThreadPool* sampling_pool : {static_cast<ThreadPool*>(nullptr), &pool_}) {
    auto inner = make_runner(256);
    PoisonRunner runner(*inner, 3);
    EngineOptions o = opts();
    o.batch_size = 8;
    o.sampling_pool = sampling_pool;
    Collector c;
    EngineService service(runner, *tokenizer_, o);
    for (int i = 0; i < 4; ++i) service.submit(greedy(prompts()[static_cast<size_t>(i)], 8), c.callback(i));
    service.submit(bad, c.callback(99));
    const auto r = c.wait(99);
    EXPECT_EQ(r.done.finish_reason, "error");
    EXPECT_EQ(r.done.error_code, "internal_error");
    EXPECT_NE(r.done.error_message.find("NaN"), std::string::npos) << r.done.error_message;
    for (int i = 0; i < 4; ++i) {
      const auto ok = c.wait(i);
      EXPECT_EQ(ok.done.finish_reason, "length") << "request " << i;
      EXPECT_EQ(ok.ids, want[static_cast<size_t>(i)]) << "request " << i;
    }
    while (!service.idle()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    EXPECT_EQ(service.stats().kv_blocks_used, 0);
  }
}

// A backend whose step throws once (a multi-GPU runner that lost a node
// mid-step): the step's sequences fail with its error, the server's hook
// hears it (even a hook that throws), and the engine goes on serving.
class FailOnceRunner : public ForwardingRunner {
 public:
  using ForwardingRunner::ForwardingRunner;
  const std::vector<float>& forward(std::span<const SequenceChunk> chunks) override {
    if (++calls_ == 3) throw Error("node 0 lost node 1, mid-step");
    return inner_.forward(chunks);
  }

 private:
  int calls_ = 0;
};

TEST_F(EngineServiceTest, AFailedStepFailsItsSequencesAndIsReported) {
  const auto want = alone(8);
  auto inner = make_runner(256);
  FailOnceRunner runner(*inner);
  EngineOptions o = opts();
  std::mutex mu;
  std::vector<std::string> reported;
  // A hook that throws (a logger that failed) changes nothing.
  o.on_step_error = [&](const std::string& why) {
    std::lock_guard<std::mutex> lock(mu);
    reported.push_back(why);
    throw std::runtime_error("the log is gone");
  };
  Collector c;
  EngineService service(runner, *tokenizer_, o);
  service.submit(greedy(prompts()[0], 8), c.callback(0));
  const auto failed = c.wait(0);
  EXPECT_EQ(failed.done.finish_reason, "error");
  EXPECT_EQ(failed.done.error_code, "internal_error");
  EXPECT_EQ(failed.done.error_message, "node 0 lost node 1, mid-step");
  {
    std::lock_guard<std::mutex> lock(mu);
    ASSERT_EQ(reported.size(), 1u);
    EXPECT_EQ(reported[0], "node 0 lost node 1, mid-step");
  }
  // The next request runs as if alone.
  service.submit(greedy(prompts()[1], 8), c.callback(1));
  const auto ok = c.wait(1);
  EXPECT_EQ(ok.done.finish_reason, "length");
  EXPECT_EQ(ok.ids, want[1]);
  while (!service.idle()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  EXPECT_EQ(service.stats().kv_blocks_used, 0);
  std::lock_guard<std::mutex> lock(mu);
  EXPECT_EQ(reported.size(), 1u);
}

// A backend that computes row_tokens (as the GPU does) and then leaves the
// rows of argmax_only chunks unusable (NaN), as a GPU step that copies no
// logits back may. Records which prompts' chunks were marked argmax_only.
class ArgmaxRunner : public ForwardingRunner {
 public:
  using ForwardingRunner::ForwardingRunner;
  const std::vector<float>& forward(std::span<const SequenceChunk> chunks) override {
    out_ = inner_.forward(chunks);
    const int64_t vocab = inner_.config().vocab_size;
    argmax_.clear();
    size_t row = 0;
    for (const SequenceChunk& ch : chunks) {
      EXPECT_FALSE(ch.all_logits);
      float* r = out_.data() + static_cast<long>(row) * vocab;
      argmax_.push_back(static_cast<int32_t>(std::max_element(r, r + vocab) - r));
      {
        std::lock_guard<std::mutex> lock(mutex_);
        (ch.argmax_only ? argmax_only_ : full_rows_).insert(ch.prompt_len);
      }
      if (ch.argmax_only) std::fill(r, r + vocab, std::numeric_limits<float>::quiet_NaN());
      ++row;
    }
    return out_;
  }
  std::span<const int32_t> row_tokens() const override { return argmax_; }
  std::set<int64_t> argmax_only_prompts() {
    std::lock_guard<std::mutex> lock(mutex_);
    return argmax_only_;
  }
  std::set<int64_t> full_row_prompts() {
    std::lock_guard<std::mutex> lock(mutex_);
    return full_rows_;
  }

 private:
  std::vector<float> out_;
  std::vector<int32_t> argmax_;
  std::mutex mutex_;
  std::set<int64_t> argmax_only_, full_rows_;
};

// Plain greedy sequences take the backend's argmax; sampled sequences, and
// greedy ones that report logprobs, keep their logits rows. Answers are those
// of a backend without row_tokens.
TEST_F(EngineServiceTest, GreedyRowsTakeTheBackendsArgmax) {
  std::vector<GenerationRequest> requests;
  for (int i = 0; i < 3; ++i) requests.push_back(greedy(prompts()[static_cast<size_t>(i)], 8));
  GenerationRequest sampled = greedy("Sampled with a seed, and a penalty.", 8);
  sampled.sampling.temperature = 0.8f;
  sampled.sampling.seed = 5;
  requests.push_back(sampled);
  GenerationRequest penalised = greedy("Greedy with a repetition penalty.", 8);
  penalised.sampling.repetition_penalty = 1.3f;
  requests.push_back(penalised);
  GenerationRequest with_logprobs = greedy("Greedy, reporting logprobs.", 8);
  with_logprobs.top_logprobs = 2;
  requests.push_back(with_logprobs);
  // Distinct prompt lengths (a token appended to one that repeats a length)
  // name the requests in what the backend records.
  std::set<size_t> lengths;
  for (GenerationRequest& r : requests) {
    while (lengths.count(r.prompt.size())) r.prompt.push_back(r.prompt.back());
    lengths.insert(r.prompt.size());
  }
  ASSERT_EQ(lengths.size(), requests.size()) << "prompt lengths name the requests below";

  auto run = [&](bool with_argmax, std::set<int64_t>* argmax_only, std::set<int64_t>* full_rows) {
    auto inner = make_runner(256);
    ArgmaxRunner argmax_runner(*inner);
    ForwardingRunner plain(*inner);
    EngineOptions o = opts();
    o.batch_size = 8;
    Collector c;
    std::vector<Collector::Result> out;
    {
      EngineService service(with_argmax ? static_cast<ModelRunner&>(argmax_runner) : plain, *tokenizer_, o);
      for (size_t i = 0; i < requests.size(); ++i) service.submit(requests[i], c.callback(static_cast<int>(i)));
      for (size_t i = 0; i < requests.size(); ++i) out.push_back(c.wait(static_cast<int>(i)));
    }
    if (argmax_only) *argmax_only = argmax_runner.argmax_only_prompts();
    if (full_rows) *full_rows = argmax_runner.full_row_prompts();
    return out;
  };
  std::set<int64_t> argmax_only, full_rows;
  const auto want = run(false, nullptr, nullptr);
  const auto got = run(true, &argmax_only, &full_rows);
  for (size_t i = 0; i < requests.size(); ++i) {
    EXPECT_EQ(got[i].done.finish_reason, "length") << "request " << i << ": " << got[i].done.error_message;
    EXPECT_EQ(got[i].ids, want[i].ids) << "request " << i;
    const int64_t len = static_cast<int64_t>(requests[i].prompt.size());
    const bool plain_greedy = i < 3;
    EXPECT_EQ(argmax_only.count(len), plain_greedy ? 1u : 0u) << "request " << i;
    EXPECT_EQ(full_rows.count(len), plain_greedy ? 0u : 1u) << "request " << i;
  }
  ASSERT_EQ(got[5].logprobs.size(), 8u);
  EXPECT_EQ(got[5].logprobs, want[5].logprobs);
}

// A backend that samples rows itself (samples_rows), by the CPU reference
// of the rule the GPU follows, and leaves those rows unusable (NaN).
// Records which prompts' chunks came with a RowSampling.
class RowSamplingRunner : public ForwardingRunner {
 public:
  using ForwardingRunner::ForwardingRunner;
  bool samples_rows() const override { return true; }
  const std::vector<float>& forward(std::span<const SequenceChunk> chunks) override {
    out_ = inner_.forward(chunks);
    const int64_t vocab = inner_.config().vocab_size;
    tokens_.assign(chunks.size(), -1);
    for (size_t r = 0; r < chunks.size(); ++r) {
      const SequenceChunk& ch = chunks[r];
      EXPECT_FALSE(ch.all_logits);
      float* row = out_.data() + static_cast<long>(r) * vocab;
      if (ch.argmax_only) {
        tokens_[r] = static_cast<int32_t>(std::max_element(row, row + vocab) - row);
      } else if (ch.sampling != nullptr) {
        std::vector<float> copy(row, row + vocab);
        tokens_[r] = sample_row_reference(copy, *ch.sampling);
        std::fill(row, row + vocab, std::numeric_limits<float>::quiet_NaN());
        std::lock_guard<std::mutex> lock(mutex_);
        sampled_.insert(ch.prompt_len);
      }
    }
    return out_;
  }
  std::span<const int32_t> row_tokens() const override { return tokens_; }
  std::set<int64_t> sampled_prompts() {
    std::lock_guard<std::mutex> lock(mutex_);
    return sampled_;
  }

 private:
  std::vector<float> out_;
  std::vector<int32_t> tokens_;
  std::mutex mutex_;
  std::set<int64_t> sampled_;
};

// With a backend that samples rows, sampled sequences (penalties included)
// draw from their own seeded samplers through Sampler::plan_row: each
// answer is the token stream of that sequence alone, built here step by
// step. Greedy rows keep the argmax, and a request that reports logprobs
// keeps its logits row.
TEST_F(EngineServiceTest, BackendSampledRowsFollowTheirSeededSamplers) {
  std::vector<GenerationRequest> requests;
  for (int i = 0; i < 4; ++i) {
    GenerationRequest r = greedy(prompts()[static_cast<size_t>(i)], 10);
    r.sampling.temperature = 0.8f + 0.1f * static_cast<float>(i);
    r.sampling.top_p = i == 1 ? 0.9f : 1.0f;
    r.sampling.top_k = i == 2 ? 20 : 0;
    r.sampling.repetition_penalty = i == 3 ? 1.3f : 1.0f;
    r.sampling.frequency_penalty = i == 3 ? 0.5f : 0.0f;
    r.sampling.seed = 40 + static_cast<uint64_t>(i);
    requests.push_back(r);
  }
  requests.push_back(greedy(prompts()[4], 10));
  GenerationRequest with_logprobs = requests[0];
  with_logprobs.prompt = tokenizer_->encode("Sampled, reporting logprobs.", false);
  with_logprobs.top_logprobs = 1;
  requests.push_back(with_logprobs);
  std::set<size_t> lengths;
  for (GenerationRequest& r : requests) {
    while (lengths.count(r.prompt.size())) r.prompt.push_back(r.prompt.back());
    lengths.insert(r.prompt.size());
  }
  // Each sampled request alone: forward, plan_row, the reference rule.
  auto alone = [&](const GenerationRequest& r) {
    auto runner = make_runner(256);
    SequenceKv kv;
    EXPECT_TRUE(kv.reserve(static_cast<int64_t>(r.prompt.size()) + r.sampling.max_tokens, runner->block_size(),
                           runner->block_allocator()));
    std::vector<int32_t> tokens = r.prompt;
    const size_t n_prompt = tokens.size();
    Sampler sampler(r.sampling);
    RowSampling rs;
    for (int g = 0; g < r.sampling.max_tokens; ++g) {
      SequenceChunk chunk{std::span<const int32_t>(tokens.data() + kv.n_tokens, tokens.size() - kv.n_tokens), &kv,
                          false, static_cast<int64_t>(n_prompt)};
      std::vector<float> row = runner->forward(std::span<const SequenceChunk>(&chunk, 1));
      sampler.plan_row(std::span<const int32_t>(tokens.data(), n_prompt),
                       std::span<const int32_t>(tokens.data() + n_prompt, tokens.size() - n_prompt), row.size(), rs);
      tokens.push_back(sample_row_reference(row, rs));
    }
    kv.release(runner->block_allocator());
    return std::vector<int32_t>(tokens.begin() + static_cast<long>(n_prompt), tokens.end());
  };
  auto inner = make_runner(256);
  RowSamplingRunner runner(*inner);
  EngineOptions o = opts();
  o.batch_size = 8;
  o.step_tokens = 16;  // chunked prompts beside running decodes
  Collector c;
  std::vector<Collector::Result> got;
  {
    EngineService service(runner, *tokenizer_, o);
    for (size_t i = 0; i < requests.size(); ++i) service.submit(requests[i], c.callback(static_cast<int>(i)));
    for (size_t i = 0; i < requests.size(); ++i) got.push_back(c.wait(static_cast<int>(i)));
  }
  const std::set<int64_t> sampled = runner.sampled_prompts();
  for (size_t i = 0; i < requests.size(); ++i) {
    EXPECT_EQ(got[i].done.finish_reason, "length") << "request " << i << ": " << got[i].done.error_message;
    const int64_t len = static_cast<int64_t>(requests[i].prompt.size());
    EXPECT_EQ(sampled.count(len), i < 4 ? 1u : 0u) << "request " << i;
    if (i < 4) EXPECT_EQ(got[i].ids, alone(requests[i])) << "request " << i;
  }
  EXPECT_EQ(got[5].logprobs.size(), 10u) << "the logprobs request kept its logits rows";
}

// A backend that finds no usable logit in a sampled row (token -1) fails
// that sequence with the reason; the others, sampled in the same steps,
// finish.
class NoTokenForOneRunner : public RowSamplingRunner {
 public:
  NoTokenForOneRunner(ModelRunner& inner, int64_t poisoned_prompt_len)
      : RowSamplingRunner(inner), poisoned_(poisoned_prompt_len) {}
  const std::vector<float>& forward(std::span<const SequenceChunk> chunks) override {
    const std::vector<float>& out = RowSamplingRunner::forward(chunks);
    tokens_ = std::vector<int32_t>(RowSamplingRunner::row_tokens().begin(), RowSamplingRunner::row_tokens().end());
    for (size_t r = 0; r < chunks.size(); ++r)
      if (chunks[r].sampling != nullptr && chunks[r].prompt_len == poisoned_) tokens_[r] = -1;
    return out;
  }
  std::span<const int32_t> row_tokens() const override { return tokens_; }

 private:
  int64_t poisoned_;
  std::vector<int32_t> tokens_;
};

TEST_F(EngineServiceTest, ASampledRowWithoutATokenFailsOnlyItsSequence) {
  std::vector<GenerationRequest> requests;
  for (int i = 0; i < 3; ++i) {
    GenerationRequest r = greedy(prompts()[static_cast<size_t>(i)], 6);
    r.sampling.temperature = 0.9f;
    r.sampling.seed = 7;
    requests.push_back(r);
  }
  std::set<size_t> lengths;
  for (GenerationRequest& r : requests) {
    while (lengths.count(r.prompt.size())) r.prompt.push_back(r.prompt.back());
    lengths.insert(r.prompt.size());
  }
  auto inner = make_runner(256);
  NoTokenForOneRunner runner(*inner, static_cast<int64_t>(requests[1].prompt.size()));
  EngineOptions o = opts();
  o.batch_size = 4;
  Collector c;
  {
    EngineService service(runner, *tokenizer_, o);
    for (size_t i = 0; i < requests.size(); ++i) service.submit(requests[i], c.callback(static_cast<int>(i)));
    for (int i : {0, 2}) {
      const auto r = c.wait(i);
      EXPECT_EQ(r.done.finish_reason, "length") << "request " << i << ": " << r.done.error_message;
      EXPECT_EQ(r.ids.size(), 6u);
    }
    const auto failed = c.wait(1);
    EXPECT_EQ(failed.done.finish_reason, "error");
    EXPECT_NE(failed.done.error_message.find("every logit is NaN or -inf"), std::string::npos)
        << failed.done.error_message;
  }
}

// With nothing to run, the engine thread calls the runner's idle() every
// idle_tick (a multi-host runner's heartbeat); a runner whose idle() throws
// keeps serving.
class IdleCountingRunner : public ForwardingRunner {
 public:
  using ForwardingRunner::ForwardingRunner;
  void idle() override {
    ++idle_calls;
    if (idle_calls % 2 == 0) throw Error("the other hosts are gone");
  }
  std::atomic<int> idle_calls{0};
};

TEST_F(EngineServiceTest, IdleEngineTicksTheRunner) {
  auto inner = make_runner(64);
  IdleCountingRunner runner(*inner);
  EngineOptions o = opts();
  o.idle_tick = std::chrono::milliseconds(10);
  Collector c;
  EngineService service(runner, *tokenizer_, o);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (runner.idle_calls < 5 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  EXPECT_GE(runner.idle_calls, 5);
  service.submit(greedy(prompts()[0], 4), c.callback(0));
  const auto r = c.wait(0);
  EXPECT_EQ(r.done.finish_reason, "length") << r.done.error_message;
  EXPECT_EQ(r.ids.size(), 4u);
}

TEST_F(EngineServiceTest, PreemptionByRecomputeIsInvisibleToAnswers) {
  const auto want = alone(12);
  // 40 blocks of 4 tokens: far less than 8 sequences need at once.
  auto runner = make_runner(40);
  EngineOptions o = opts();
  o.batch_size = 8;
  o.step_tokens = 64;
  Collector c;  // outlives the service, whose delivery thread calls into it
  EngineService service(*runner, *tokenizer_, o);
  for (int i = 0; i < 16; ++i) service.submit(greedy(prompts()[static_cast<size_t>(i)], 12), c.callback(i));
  for (int i = 0; i < 16; ++i) EXPECT_EQ(c.wait(i).ids, want[static_cast<size_t>(i)]) << "request " << i;
  while (!service.idle()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  EXPECT_GT(service.stats().preemptions_total, 0u);
  EXPECT_EQ(service.stats().kv_blocks_used, 0);
}

TEST_F(EngineServiceTest, LongPromptDoesNotStallRunningStreams) {
  auto inner = make_runner(1024, 4, 1024);
  // 800 decode steps of at least 0.5 ms (PacedRunner): the short stream is
  // still running when the long prompt's ~20 prefill steps end, however slow
  // the machine.
  PacedRunner runner(*inner, std::chrono::microseconds(500));
  EngineOptions o = opts();
  o.context_window = 1024;
  o.batch_size = 4;
  o.step_tokens = 32;
  std::string long_text;
  for (int i = 0; i < 20; ++i) long_text += "Although practicality beats purity, errors should never pass silently. ";
  GenerationRequest big = greedy(long_text, 4);
  const size_t prefill_steps = (big.prompt.size() + 31) / 32;
  ASSERT_GE(prefill_steps, 8u);
  Collector c;  // outlives the service, whose delivery thread calls into it
  EngineService service(runner, *tokenizer_, o);
  const RequestId short_id = service.submit(greedy("Now is better than never.", 800), c.callback(0));
  // Wait until the short stream decodes, then send the prompt of ~300 tokens.
  while (c.order().size() < 2) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  const size_t before = c.order().size();
  service.submit(std::move(big), c.callback(1));
  c.wait(1);
  // Every step of the long prefill also decoded the running stream.
  const std::vector<int> order = c.order();
  size_t short_tokens = 0;
  for (size_t i = before; i < order.size(); ++i) {
    if (order[i] == 1) break;
    short_tokens += order[i] == 0;
  }
  EXPECT_GE(short_tokens + 1, prefill_steps);
  service.cancel(short_id);
  const auto short_stream = c.wait(0);
  EXPECT_EQ(short_stream.done.finish_reason, "cancelled") << "the short stream ended before the long prompt's prefill";
}

// The step trace: a header, then one line per step whose counts add up to
// what the requests needed (every prompt token prefilled once, every
// generated token but the last fed back as a decode).
TEST_F(EngineServiceTest, StepTraceAccountsForEveryToken) {
  auto runner = make_runner(256);
  EngineOptions o = opts();
  o.batch_size = 4;
  o.step_tokens = 16;
  std::ostringstream trace;
  o.step_trace = &trace;
  Collector c;
  int64_t prompt_tokens = 0;
  const int64_t max_tokens = 6;
  {
    EngineService service(*runner, *tokenizer_, o);
    for (int i = 0; i < 3; ++i) {
      GenerationRequest r = greedy(prompts()[static_cast<size_t>(i)], max_tokens);
      prompt_tokens += static_cast<int64_t>(r.prompt.size());
      service.submit(std::move(r), c.callback(i));
    }
    for (int i = 0; i < 3; ++i) ASSERT_EQ(c.wait(i).done.finish_reason, "length");
  }
  std::istringstream lines(trace.str());
  std::string line;
  ASSERT_TRUE(std::getline(lines, line));
  EXPECT_EQ(line, "start_ms,plan_ms,forward_ms,after_ms,sequences,decodes,prefill_tokens,waiting");
  int64_t steps = 0, decodes = 0, prefill = 0;
  double last_start = -1;
  while (std::getline(lines, line)) {
    std::vector<double> v;
    std::istringstream fields(line);
    for (std::string f; std::getline(fields, f, ',');) v.push_back(std::stod(f));
    ASSERT_EQ(v.size(), 8u) << line;
    EXPECT_GE(v[0], last_start) << line;
    for (int k = 1; k < 4; ++k) EXPECT_GE(v[k], 0.0) << line;
    EXPECT_GE(v[4], 1.0) << line;
    EXPECT_LE(v[5], v[4]) << "more decodes than sequences: " << line;
    if (v[6] > 0) EXPECT_LT(v[5], v[4]) << "prompt tokens but no sequence to hold them: " << line;
    EXPECT_LE(v[5] + v[6], 16.0) << "over the step budget: " << line;
    last_start = v[0];
    ++steps;
    decodes += static_cast<int64_t>(v[5]);
    prefill += static_cast<int64_t>(v[6]);
  }
  EXPECT_GT(steps, 0);
  EXPECT_EQ(prefill, prompt_tokens);
  EXPECT_EQ(decodes, 3 * (max_tokens - 1));
}

TEST_F(EngineServiceTest, CancelEndsTheStreamAndFreesItsBlocks) {
  auto inner = make_runner(128);
  // Steps of at least 1 ms: the 400 tokens outlast the test's reaction.
  PacedRunner runner(*inner, std::chrono::milliseconds(1));
  Collector c;  // outlives the service, whose delivery thread calls into it
  EngineService service(runner, *tokenizer_, opts());
  const RequestId id = service.submit(greedy("Simple is better than complex.", 400), c.callback(0));
  while (c.order().size() < 3) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  service.cancel(id);
  const auto r = c.wait(0);
  EXPECT_EQ(r.done.finish_reason, "cancelled");
  EXPECT_LT(r.done.completion_tokens, 400);
  while (!service.idle()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  EXPECT_EQ(service.stats().kv_blocks_used, 0);
  EXPECT_EQ(service.stats().requests_cancelled, 1u);
  service.cancel(id);  // a finished id is ignored
  service.cancel(9999);
}

TEST_F(EngineServiceTest, TimeoutEndsTheStream) {
  // A context far longer than 20 ms of decoding can fill.
  auto runner = make_runner(4096 / 4, 4, 4096);
  EngineOptions o = opts();
  o.context_window = 4096;
  Collector c;  // outlives the service, whose delivery thread calls into it
  EngineService service(*runner, *tokenizer_, o);
  GenerationRequest r = greedy("Flat is better than nested.", 4000);
  r.timeout = std::chrono::milliseconds(20);
  service.submit(std::move(r), c.callback(0));
  EXPECT_EQ(c.wait(0).done.finish_reason, "timeout");
}

TEST_F(EngineServiceTest, RefusesWhatCannotBeServed) {
  auto cpu_runner = make_runner(128);
  // Closed while requests are submitted: none can finish and free its slot.
  GatedRunner runner(*cpu_runner);
  EngineOptions o = opts();
  o.batch_size = 1;
  o.max_queued = 2;
  o.context_window = 64;
  EngineService service(runner, *tokenizer_, o);
  auto code_of = [&](GenerationRequest r) -> std::string {
    try {
      service.submit(std::move(r), [](StreamEvent&&) {});
    } catch (const RequestError& e) {
      return e.code();
    }
    return "accepted";
  };
  std::string long_text;
  for (int i = 0; i < 30; ++i) long_text += "Sparse is better than dense. ";
  EXPECT_EQ(code_of(greedy(long_text, 4)), "context_length_exceeded");
  GenerationRequest bad = greedy("x", 4);
  bad.sampling.top_p = 0;
  EXPECT_EQ(code_of(bad), "invalid_request");
  GenerationRequest empty = greedy("", 4);
  EXPECT_EQ(code_of(empty), "invalid_request");
  // Fill the queue: one running, two waiting, the next is refused.
  // prompt + max_tokens beyond the window is refused, not cut short.
  EXPECT_EQ(code_of(greedy("Now is better than never.", 2000)), "context_length_exceeded");
  int accepted = 0, overloaded = 0;
  for (int i = 0; i < 8; ++i) {
    const std::string code = code_of(greedy("Now is better than never.", 50));
    accepted += code == "accepted";
    overloaded += code == "overloaded";
  }
  // Two waiting, and one running if the engine took the first before the
  // third came.
  EXPECT_GE(accepted, 2);
  EXPECT_LE(accepted, 3);
  EXPECT_EQ(accepted + overloaded, 8);
  EXPECT_GE(service.stats().requests_rejected, 4u + static_cast<uint64_t>(overloaded));
  runner.open();
}

TEST_F(EngineServiceTest, DrainRefusesNewWorkAndFinishesRunning) {
  auto runner = make_runner(128);
  Collector c;  // outlives the service, whose delivery thread calls into it
  EngineService service(*runner, *tokenizer_, opts());
  service.submit(greedy("Readability counts.", 20), c.callback(0));
  service.begin_drain();
  EXPECT_THROW(service.submit(greedy("Readability counts.", 20), [](StreamEvent&&) {}), RequestError);
  EXPECT_EQ(c.wait(0).done.finish_reason, "length");
  while (!service.idle()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  EXPECT_TRUE(service.stats().draining);
}

TEST_F(EngineServiceTest, StopStringsAndLogprobs) {
  auto runner = make_runner(128);
  Collector c;  // outlives the service, whose delivery thread calls into it
  EngineService service(*runner, *tokenizer_, opts());
  GenerationRequest r = greedy("Beautiful is better than ugly.", 16);
  r.top_logprobs = 3;
  std::vector<StreamEvent> events;
  std::mutex m;
  std::condition_variable cv;
  bool finished = false;
  service.submit(std::move(r), [&](StreamEvent&& e) {
    std::lock_guard<std::mutex> lock(m);
    finished = e.done;
    events.push_back(std::move(e));
    cv.notify_all();
  });
  {
    std::unique_lock<std::mutex> lock(m);
    ASSERT_TRUE(cv.wait_for(lock, std::chrono::seconds(30), [&] { return finished; }));
  }
  std::string text;
  for (const StreamEvent& e : events) {
    text += e.text;
    if (e.done) continue;
    ASSERT_EQ(e.token_ids.size(), 1u);
    ASSERT_EQ(e.logprobs.size(), 1u);
    ASSERT_EQ(e.top.size(), 1u);
    ASSERT_EQ(e.top[0].size(), 3u);
    // Greedy: the sampled token is the most likely one.
    EXPECT_EQ(e.top[0][0].id, e.token_ids[0]);
    EXPECT_FLOAT_EQ(e.top[0][0].logprob, e.logprobs[0]);
    EXPECT_LE(e.logprobs[0], 0.0f);
    EXPECT_GE(e.top[0][0].logprob, e.top[0][1].logprob);
  }
  ASSERT_GE(text.size(), 4u);
  // Now stop on a piece of that text: the output ends right before it.
  const std::string stop = text.substr(2, 2);
  GenerationRequest s = greedy("Beautiful is better than ugly.", 16);
  s.sampling.stop = {stop};
  service.submit(std::move(s), c.callback(1));
  const auto res = c.wait(1);
  EXPECT_EQ(res.done.finish_reason, "stop");
  EXPECT_EQ(res.text, text.substr(0, text.find(stop)));
}

}  // namespace
}  // namespace tandem
