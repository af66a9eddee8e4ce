#include "engine/perplexity.h"

#include <algorithm>
#include <cmath>

#include "common/error.h"

namespace tandem {

LossResult evaluate_loss(ModelRunner& runner, const std::vector<int32_t>& ids, int64_t context) {
  check(ids.size() >= 2, "need at least two tokens to measure a loss");
  check(context >= 1, "the evaluation context must be at least one token");
  const int64_t vocab = runner.config().vocab_size;
  const int64_t n = static_cast<int64_t>(ids.size());
  LossResult r;
  double total = 0;
  for (int64_t start = 0; start + 1 < n; start += context) {
    const int64_t end = std::min(n, start + context + 1);  // window [start, end)
    const std::vector<int32_t> inputs(ids.begin() + start, ids.begin() + end - 1);
    SequenceKv kv;
    check(kv.reserve(static_cast<int64_t>(inputs.size()), runner.block_size(), runner.block_allocator()),
          "the KV cache cannot hold an evaluation window of " + std::to_string(inputs.size()) + " tokens");
    SequenceChunk chunk{inputs, &kv, true};
    const std::vector<float>& logits = runner.forward(std::span<const SequenceChunk>(&chunk, 1));
    for (size_t i = 0; i < inputs.size(); ++i) {
      const float* row = logits.data() + static_cast<int64_t>(i) * vocab;
      const float max = *std::max_element(row, row + vocab);
      double sum = 0;
      for (int64_t v = 0; v < vocab; ++v) sum += std::exp(static_cast<double>(row[v]) - max);
      const int32_t target = ids[static_cast<size_t>(start) + i + 1];
      total += std::log(sum) + max - row[target];
    }
    r.predicted_tokens += static_cast<int64_t>(inputs.size());
    r.windows += 1;
    kv.release(runner.block_allocator());
  }
  r.mean_nll = total / static_cast<double>(r.predicted_tokens);
  r.perplexity = std::exp(r.mean_nll);
  return r;
}

AgreementResult compare_runners(ModelRunner& a, ModelRunner& b, const std::vector<int32_t>& ids, int64_t context,
                                int64_t max_windows) {
  check(ids.size() >= 2, "need at least two tokens to compare");
  check(context >= 1, "the evaluation context must be at least one token");
  check(a.config().vocab_size == b.config().vocab_size, "the two runners have different vocabularies");
  const int64_t vocab = a.config().vocab_size;
  const int64_t n = static_cast<int64_t>(ids.size());
  AgreementResult r;
  int64_t agree = 0, windows = 0;
  std::vector<float> logits_a;
  for (int64_t start = 0; start + 1 < n && (max_windows == 0 || windows < max_windows); start += context, ++windows) {
    const int64_t end = std::min(n, start + context + 1);
    const std::vector<int32_t> inputs(ids.begin() + start, ids.begin() + end - 1);
    auto run = [&](ModelRunner& runner) -> const std::vector<float>& {
      SequenceKv kv;
      check(kv.reserve(static_cast<int64_t>(inputs.size()), runner.block_size(), runner.block_allocator()),
            "the KV cache cannot hold an evaluation window of " + std::to_string(inputs.size()) + " tokens");
      SequenceChunk chunk{inputs, &kv, true};
      const std::vector<float>& out = runner.forward(std::span<const SequenceChunk>(&chunk, 1));
      kv.release(runner.block_allocator());
      return out;
    };
    logits_a = run(a);
    const std::vector<float>& logits_b = run(b);
    for (size_t i = 0; i < inputs.size(); ++i) {
      const float* ra = logits_a.data() + static_cast<int64_t>(i) * vocab;
      const float* rb = logits_b.data() + static_cast<int64_t>(i) * vocab;
      for (int64_t v = 0; v < vocab; ++v)
        r.max_abs_logit_diff = std::max(r.max_abs_logit_diff, std::fabs(static_cast<double>(ra[v]) - rb[v]));
      agree += (std::max_element(ra, ra + vocab) - ra) == (std::max_element(rb, rb + vocab) - rb);
    }
    r.positions += static_cast<int64_t>(inputs.size());
  }
  r.top1_agreement = static_cast<double>(agree) / static_cast<double>(r.positions);
  return r;
}

}  // namespace tandem
