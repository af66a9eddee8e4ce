// Token sampling and stop conditions, on the host, for one sequence.
#pragma once

#include <cstdint>
#include <optional>
#include <random>
#include <span>
#include <string>
#include <string_view>
#include <vector>

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
void validate(const SamplingParams& params);

class Sampler {
 public:
  // Without a seed, one is drawn from std::random_device.
  explicit Sampler(const SamplingParams& params);

  // logits: [vocab] raw model output for the next position; modified in place.
  // prompt: the prompt's ids (for repetition_penalty);
  // generated: ids generated so far (for all three penalties).
  int32_t sample(std::span<float> logits, std::span<const int32_t> prompt, std::span<const int32_t> generated);

  // log-softmax of the logits that sample() last saw, after penalties and
  // before temperature: what an API reports as logprobs.
  const std::vector<float>& last_logprobs() const { return logprobs_; }

 private:
  SamplingParams params_;
  std::mt19937_64 rng_;
  std::vector<float> logprobs_;
  std::vector<std::pair<float, int32_t>> candidates_;  // scratch
};

// Finds stop strings in streamed text. Text that could still be the start of
// a stop string is held back, so a client never sees part of a stop string.
class StopMatcher {
 public:
  explicit StopMatcher(std::vector<std::string> stops);
  struct Result {
    std::string text;  // safe to emit now
    bool stopped = false;
  };
  // Feed newly decoded text.
  Result push(std::string_view text);
  // End of stream: release what was held back.
  std::string flush();

 private:
  std::vector<std::string> stops_;
  std::string pending_;
  bool stopped_ = false;
};

}  // namespace tandem
