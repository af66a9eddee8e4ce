// Generates one sequence end to end on a ModelRunner: prefill (in chunks),
// decode, sampling, stop conditions, streaming text. Used by `run` and `perf`;
// the server's scheduler drives ModelRunner directly for many sequences.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "engine/model_runner.h"
#include "engine/sampler.h"

namespace tandem {

class Tokenizer;

struct GenerationResult {
  std::string text;
  std::vector<int32_t> token_ids;  // generated ids (including a final stop token, if one ended it)
  std::string finish_reason;       // "stop" (eos/stop token/stop string) or "length"
  int64_t prompt_tokens = 0;
  int64_t generated_tokens = 0;
  double prompt_ms = 0;  // prefill, up to and including the first sampled token (time to first token)
  double decode_ms = 0;  // the generated tokens after the first: generated_tokens - 1 steps
};

struct GenerateOptions {
  SamplingParams sampling;
  int64_t prefill_chunk = 512;  // tokens per prefill step
  // Called with each piece of text as it becomes final (whole UTF-8).
  std::function<void(const std::string&)> on_text;
};

class Generator {
 public:
  // `tokenizer` may be null: then no text is produced and only eos by id stops.
  Generator(ModelRunner& runner, const Tokenizer* tokenizer);

  // Throws tandem::Error when the prompt is empty or prompt + max_tokens does
  // not fit the context ("prompt has N tokens, the context window is M").
  GenerationResult generate(const std::vector<int32_t>& prompt, const GenerateOptions& options);

 private:
  ModelRunner& runner_;
  const Tokenizer* tokenizer_;
};

}  // namespace tandem
