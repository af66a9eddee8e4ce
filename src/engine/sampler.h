// Token sampling and stop conditions, on the host, for one sequence.
#pragma once

#include <cstdint>
#include <optional>
#include <random>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "engine/row_sampling.h"

namespace tandem {

struct SamplingParams {
  float temperature = 1.0f;  // 0 = greedy (argmax)
  int top_k = 0;             // 0 = off
  float top_p = 1.0f;        // 1 = off
  float min_p = 0.0f;        // 0 = off; keeps tokens with p >= min_p * p_max
  float repetition_penalty = 1.0f;  // 1 = off; divides positive / multiplies negative logits of seen tokens
  float presence_penalty = 0.0f;    // subtracted once from the logit of every generated token seen
  float frequency_penalty = 0.0f;   // subtracted per occurrence in the generated tokens
  std::optional<uint64_t> seed;     // fixed seed = reproducible sampling
  int max_tokens = 256;
  std::vector<std::string> stop;    // stop strings; the match is not part of the output
  bool ignore_eos = false;
};

// Throws tandem::Error naming the field when a value is out of range
// (temperature < 0, top_p outside (0, 1], min_p outside [0, 1], top_k < 0,
// repetition_penalty <= 0, max_tokens < 0).
// Also rejected: NaN or infinite floats, presence_penalty and
// frequency_penalty outside [-2, 2] (the OpenAI API's range), and empty stop
// strings (an empty string would match before any text; a client that sends
// one almost certainly meant "no stop string", and saying so beats silently
// ending every reply at once).
void validate(const SamplingParams& params);

// One Sampler per sequence; not thread-safe (it owns the RNG and scratch).
//
// Pipeline of sample():
//   penalties (repetition over prompt + generated; presence and frequency
//   over generated) -> [logprobs taken here] -> greedy argmax if
//   temperature == 0, else temperature -> top-k -> softmax -> min-p ->
//   top-p -> renormalise -> one draw from the seeded RNG.
//
// Reproducibility: the RNG is std::mt19937_64 (its output is fixed by the
// standard), each non-greedy sample() takes exactly one 64-bit draw from it
// (greedy takes none), and the uniform double is built from its bits here.
// The exp() is Tandem's own, not the C library's, and every selection uses a
// strict total order (weight, then token id). So one seed gives one token
// stream for one logits stream on every platform with IEEE-754 float and no
// FMA contraction (the default in ISO C++ mode).
//
// Non-finite logits (checked after penalties): NaN counts as -inf (never
// sampled, logprob -inf). If any logit is +inf, the distribution is the
// limit of softmax: uniform over the +inf tokens, zero elsewhere (in place
// they become 0 and -inf). If no token is left with a finite or +inf logit,
// sample() throws tandem::Error.
class Sampler {
 public:
  // Without a seed, one is drawn from std::random_device.
  // Throws tandem::Error when validate(params) does.
  explicit Sampler(const SamplingParams& params);

  // logits: [vocab] raw model output for the next position; modified in place
  //   (afterwards it holds the penalised logits with NaN / +inf handled as
  //   below; temperature not applied).
  // prompt: the prompt's ids (for repetition_penalty);
  // generated: ids generated so far (for all three penalties).
  // Returns a token id in [0, vocab).
  // PRECONDITIONS: every id in prompt and generated is in [0, vocab), else
  // tandem::Error (thrown before logits are touched). vocab >= 1.
  // Greedy ties go to the lowest token id. A temperature below about 3e-39
  // (1 / temperature overflows float) is treated as greedy.
  // If sample() throws, last_logprobs() is empty until the next success.
  int32_t sample(std::span<float> logits, std::span<const int32_t> prompt, std::span<const int32_t> generated);

  // log-softmax of the logits that sample() last saw, after penalties and
  // before temperature: what an API reports as logprobs. [vocab]; empty
  // before the first sample(). Computed on the first call after each
  // sample(): the full-vocab exp is the largest cost of a step, and most
  // requests never ask for logprobs.
  const std::vector<float>& last_logprobs() const;

  // True when sample() returns the argmax of the raw logits (greedy, no
  // penalties) and takes nothing from the RNG: the caller may take the
  // argmax computed elsewhere (ModelRunner::row_tokens) instead of calling
  // sample(); last_logprobs() then stays empty.
  bool is_plain_greedy() const;

  // For a backend that samples where the logits are (ModelRunner::
  // samples_rows, the rule in engine/row_sampling.h): fills `out` with this
  // sequence's parameters, its penalties as one entry per distinct token,
  // and, unless greedy, the next draw from the RNG (the one draw sample()
  // would take). last_logprobs() is empty afterwards. Throws tandem::Error
  // for ids outside [0, vocab), as sample() does, before drawing.
  void plan_row(std::span<const int32_t> prompt, std::span<const int32_t> generated, size_t vocab,
                RowSampling& out);

 private:
  // Applies the three penalties to logits in place (see SamplingParams).
  void apply_penalties(std::span<float> logits, std::span<const int32_t> prompt,
                       std::span<const int32_t> generated);
  // Temperature > 0 path, after penalties. max_logit: the largest logit.
  int32_t sample_stochastic(std::span<const float> logits, float max_logit);
  // Keeps the k best (logit, id) pairs in candidates_, sorted best first.
  void select_top_k(std::span<const float> logits, size_t k);
  // Fills candidates_ with the top-p set of weights_ ([vocab], by token id)
  // without sorting the vocab. total: the sum of weights_.
  void top_p_from_weights(double total);
  // A uniform double in [0, 1) from 53 bits of rng_.
  double next_uniform();

  SamplingParams params_;
  std::mt19937_64 rng_;
  std::vector<float> penalised_;  // [vocab] logits after penalties and NaN/inf handling
  float penalised_max_ = 0.0f;    // max of penalised_
  double penalised_sum_ = -1.0;   // sum of exp(penalised_ - max) when known, else < 0
  mutable std::vector<float> logprobs_;  // [vocab] filled by last_logprobs()
  mutable bool logprobs_ready_ = true;   // logprobs_ matches penalised_
  std::vector<std::pair<float, int32_t>> candidates_;  // scratch: (logit or weight, token id)
  std::vector<std::pair<float, int32_t>> pool_;            // scratch: [vocab + 1] top-p candidates
  std::vector<std::pair<float, int32_t>> bucket_scratch_;  // scratch for the top-p cut
  std::vector<float> weights_;        // scratch: [vocab] or [candidates] unnormalised probabilities
  std::vector<double> chunk_sums_;    // scratch: [ceil(n / chunk)] partial sums of weights_
  std::vector<uint8_t> seen_;         // scratch: [vocab] 1 = token already penalised this step (all 0 between calls)
  std::vector<uint32_t> counts_;      // scratch: [vocab] occurrences in generated (all 0 between calls)
};

// Finds stop strings in streamed text. Text that could still be the start of
// a stop string is held back, so a client never sees part of a stop string.
// Matching is on bytes; for valid UTF-8 input and stop strings, emitted text
// is only ever cut at character boundaries. The earliest match in the text
// wins, whichever stop string it is. Empty stop strings are ignored here
// (validate() rejects them in requests).
class StopMatcher {
 public:
  explicit StopMatcher(std::vector<std::string> stops);
  struct Result {
    std::string text;  // safe to emit now
    bool stopped = false;
  };
  // Feed newly decoded text. On a match, text is what came before the match
  // and stopped is true. Once stopped, every later push returns
  // {"", true} and ignores its input.
  Result push(std::string_view text);
  // End of stream: release what was held back ("" once stopped).
  std::string flush();
  bool stopped() const { return stopped_; }

 private:
  std::vector<std::string> stops_;
  std::string pending_;
  bool stopped_ = false;
};

}  // namespace tandem
