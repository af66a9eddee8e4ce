// Turns request JSON (OpenAI bodies, WebSocket generate commands) into what
// the engine runs: prompt token ids and sampling parameters. Every error is
// an ApiError (400) naming the field.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "engine/sampler.h"
#include "server/served_model.h"

namespace tandem::server {

struct ParsedGeneration {
  std::vector<int32_t> prompt;
  SamplingParams sampling;
  int top_logprobs = -1;  // -1: none; 0: the sampled token's; k: also the k most likely
  int n = 1;
  bool stream = false;
  bool include_usage = false;
};

// Sampling fields shared by every endpoint: temperature, top_p, top_k, min_p,
// repetition_penalty, presence_penalty, frequency_penalty, seed, stop,
// max_tokens / max_completion_tokens. Fields absent keep their defaults.
// `max_tokens` defaults to what is left of the context after the prompt.
void parse_sampling_fields(const nlohmann::json& obj, SamplingParams& sampling, size_t prompt_tokens,
                           int64_t context_window);

// Renders `messages` with the model's chat template (add_generation_prompt)
// and tokenizes with add_special=false (the template writes its own special
// tokens). Checks the shape of every message.
std::vector<int32_t> tokenize_messages(const nlohmann::json& messages, const ServedModel& model,
                                       const std::string& field = "messages");
std::string render_messages(const nlohmann::json& messages, const ServedModel& model,
                            const std::string& field = "messages");
// A prompt string (add_special=true) or an array of token ids.
std::vector<int32_t> tokenize_prompt(const nlohmann::json& prompt, const ServedModel& model,
                                     const std::string& field = "prompt");

// POST /v1/chat/completions and /v1/completions bodies. Throws ApiError
// (400 naming the field, 404 for an unknown model).
ParsedGeneration parse_chat_request(const nlohmann::json& body, const ServedModel& model);
ParsedGeneration parse_completion_request(const nlohmann::json& body, const ServedModel& model);

// 404 unless `model` is absent, null or the served model's id.
void check_model_name(const nlohmann::json& body, const ServedModel& model);

}  // namespace tandem::server
