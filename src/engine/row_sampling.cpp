// The CPU reference of the row sampling rule (engine/row_sampling.h),
// written for clarity: it sorts where the GPU selects by radix.
#include "engine/row_sampling.h"

#include <algorithm>
#include <limits>
#include <numeric>

namespace tandem {

int32_t sample_row_reference(std::span<float> logits, const RowSampling& s) {
  constexpr float kInf = std::numeric_limits<float>::infinity();
  const size_t n = logits.size();
  // 1. penalties
  for (const PenaltyEntry& e : s.penalties) {
    float& l = logits[static_cast<size_t>(e.id)];
    l = penalised_logit(l, e, s.repetition_penalty);
  }
  // 2. NaN and +inf
  bool any_pos_inf = false;
  for (float& l : logits) {
    if (l != l) l = -kInf;
    any_pos_inf = any_pos_inf || l == kInf;
  }
  if (any_pos_inf) {
    for (float& l : logits) l = l == kInf ? 0.0f : -kInf;
  }
  // 3. max
  float max = -kInf;
  for (float l : logits) max = l > max ? l : max;
  if (!(max > -kInf)) return -1;
  // 4. greedy
  if (s.greedy) return static_cast<int32_t>(std::find(logits.begin(), logits.end(), max) - logits.begin());
  // 5. top-k membership
  std::vector<uint8_t> member(n, 1);
  if (s.top_k > 0 && static_cast<size_t>(s.top_k) < n) {
    std::vector<int32_t> order(n);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) {
      return logit_order_key(logits[static_cast<size_t>(a)]) > logit_order_key(logits[static_cast<size_t>(b)]);
    });
    std::fill(member.begin(), member.end(), 0);
    for (int32_t j = 0; j < s.top_k; ++j) member[static_cast<size_t>(order[static_cast<size_t>(j)])] = 1;
  }
  // 6. weights and their fixed-point mass
  uint64_t total = 0;
  for (size_t i = 0; i < n; ++i) {
    float w = member[i] ? exp_weight(logits[i], max, s.scale) : 0.0f;
    if (!(w >= s.min_p)) w = 0.0f;
    logits[i] = w;
    total += weight_mass(w);
  }
  // 7. top-p
  if (s.top_p < 1.0f) {
    std::vector<int32_t> live;
    for (size_t i = 0; i < n; ++i) {
      if (logits[i] > 0.0f) live.push_back(static_cast<int32_t>(i));
    }
    std::stable_sort(live.begin(), live.end(),
                     [&](int32_t a, int32_t b) { return logits[static_cast<size_t>(a)] > logits[static_cast<size_t>(b)]; });
    const uint64_t target = top_p_target(s.top_p, total);
    uint64_t mass = 0;
    size_t keep = live.size();
    for (size_t j = 0; j < live.size(); ++j) {
      mass += weight_mass(logits[static_cast<size_t>(live[j])]);
      if (mass >= target) {
        keep = j + 1;
        break;
      }
    }
    for (size_t j = keep; j < live.size(); ++j) logits[static_cast<size_t>(live[j])] = 0.0f;
  }
  // 8. draw
  uint64_t kept = 0;
  for (float w : logits) kept += weight_mass(w);
  const uint64_t t = draw_target(s.draw, kept);
  uint64_t running = 0;
  for (size_t i = 0; i < n; ++i) {
    running += weight_mass(logits[i]);
    if (running > t) return static_cast<int32_t>(i);
  }
  return -1;  // unreachable: the max token's mass (2^40) is always kept
}

}  // namespace tandem
