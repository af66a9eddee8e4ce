// Held-out loss: the mean negative log-likelihood of each token given the
// ones before it, as language-model evaluations report it.
#pragma once

#include <cstdint>
#include <vector>

#include "engine/model_runner.h"

namespace tandem {

struct LossResult {
  double mean_nll = 0;       // nats per predicted token
  double perplexity = 0;     // exp(mean_nll)
  int64_t predicted_tokens = 0;
  int64_t windows = 0;
};

// Cuts `ids` into windows of `context` + 1 tokens, each starting a fresh
// context (window k covers ids[k*context, (k+1)*context]); every token of a
// window but its first is predicted. The demo model's training script
// measures the same way, so the two numbers compare directly.
// PRECONDITIONS: ids.size() >= 2; context >= 1 and fits the runner.
LossResult evaluate_loss(ModelRunner& runner, const std::vector<int32_t>& ids, int64_t context);

// How closely two runners (say, a quantized model and its 16-bit original)
// agree on the same windows of `ids`: the fraction of positions whose argmax
// is the same, and the largest logit difference.
struct AgreementResult {
  double top1_agreement = 0;
  double max_abs_logit_diff = 0;
  int64_t positions = 0;
};

// Windows as evaluate_loss cuts them, at most `max_windows` (0: all).
// PRECONDITIONS: both runners have the same vocabulary; as evaluate_loss.
AgreementResult compare_runners(ModelRunner& a, ModelRunner& b, const std::vector<int32_t>& ids, int64_t context,
                                int64_t max_windows = 0);

}  // namespace tandem
