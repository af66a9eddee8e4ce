// Sampling one logits row where the logits are (a backend that says
// ModelRunner::samples_rows()), by a rule stated exactly enough that a GPU
// and the CPU reference below pick the same token for every input.
//
// It draws from the same distribution as Sampler::sample (penalties ->
// greedy or temperature -> top-k -> min-p -> top-p -> one draw), with these
// choices fixed so that the GPU needs neither a sort nor a float sum whose
// order matters:
//   1. penalties: for each entry e (distinct ids), with l = logits[e.id]:
//        if e.repeat: l = l > 0 ? l / repetition_penalty : l * repetition_penalty
//        l = l - e.subtract
//      (Sampler::apply_penalties' operations, so the same bits.)
//   2. NaN -> -inf; if any logit is +inf, those become 0 and the rest -inf.
//   3. max = the largest logit; when it is -inf there is no token (-1).
//   4. greedy: the lowest id holding max.
//   5. top-k (0 < top_k < vocab): the top_k best by (logit desc, id asc),
//      with -0 equal to +0.
//   6. weight w = exp_weight(l, max, scale) for top-k members (0 for the
//      rest), 0 below min_p; its mass is the fixed-point m = trunc(w * 2^40),
//      an integer, so every sum below is exact in any order.
//   7. top-p (< 1): over tokens with w > 0, best-first by (w desc, id asc),
//      the shortest prefix (at least one token) whose mass reaches
//      trunc((top_p - 1e-6) * total mass) is kept, the rest dropped.
//   8. draw: t = (draw * kept mass) >> 53; the token is the lowest id whose
//      running mass, in id order over the kept tokens, exceeds t.
// (Sampler walks its candidates in another order and sums in double, so for
// one seed the two may pick different tokens; each draws from the same
// distribution up to rounding: the fixed point drops weights below 2^-40.)
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "engine/sampling_math.h"

namespace tandem {

// What a backend needs to sample one row (built by Sampler::plan_row).
struct RowSampling {
  bool greedy = false;     // step 4 (temperature 0, or 1 / temperature overflows)
  float scale = 1.0f;      // 1 / temperature
  int32_t top_k = 0;       // 0 = off
  float top_p = 1.0f;      // 1 = off
  float min_p = 0.0f;      // 0 = off
  float repetition_penalty = 1.0f;
  uint64_t draw = 0;       // 53 random bits (the uniform draw * 2^53); unused when greedy
  std::vector<PenaltyEntry> penalties;  // distinct ids, in [0, vocab)
};

// The CPU reference of the rule above (and of cuda::sample_rows). logits:
// [vocab], modified in place (penalties, NaN and +inf handling, then the
// weights). Returns the token, or -1 when no logit is above -inf. Sorts, so
// it is for tests, not for serving. PRECONDITION: penalty ids in [0, vocab).
int32_t sample_row_reference(std::span<float> logits, const RowSampling& sampling);

}  // namespace tandem
