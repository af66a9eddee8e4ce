// OpenAI response shapes: chat.completion, text_completion, their streamed
// chunks, logprobs and usage, built from the engine's StreamEvents.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "scheduler/engine_service.h"
#include "server/served_model.h"

namespace tandem::server {

// What one choice has produced so far (non-streaming responses).
struct ChoiceOutput {
  std::string text;
  std::vector<int32_t> token_ids;
  nlohmann::json logprobs;  // chat: array of content entries; completions: the four parallel arrays
  std::string finish_reason;
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
  bool done = false;
};

class OpenAiFormat {
 public:
  // `chat`: chat.completion shapes, else text_completion.
  OpenAiFormat(bool chat, const ServedModel& model, int top_logprobs);

  // Streaming: one chunk for a token event; the first chat chunk of a choice
  // also carries the role.
  nlohmann::json token_chunk(int index, const StreamEvent& event, bool first) const;
  // The chunk that closes a choice (empty delta, its finish_reason).
  nlohmann::json finish_chunk(int index, const std::string& finish_reason) const;
  // stream_options.include_usage: the last chunk, no choices.
  nlohmann::json usage_chunk(int64_t prompt_tokens, int64_t completion_tokens) const;

  // Non-streaming.
  void accumulate(ChoiceOutput& choice, const StreamEvent& event) const;
  nlohmann::json response(const std::vector<ChoiceOutput>& choices) const;

  const std::string& id() const { return id_; }

 private:
  nlohmann::json logprobs_for(const StreamEvent& event, size_t text_offset) const;
  nlohmann::json envelope(const char* object) const;
  std::string token_text(int32_t id) const;

  bool chat_;
  const ServedModel& model_;
  int top_logprobs_;
  std::string id_;
  int64_t created_;
};

nlohmann::json usage_json(int64_t prompt_tokens, int64_t completion_tokens);

// "data: <json>\n\n". Invalid UTF-8 (a token's partial bytes) is replaced by U+FFFD.
std::string sse_event(const nlohmann::json& data);
// JSON text with invalid UTF-8 replaced (never throws on bytes).
std::string dump_json(const nlohmann::json& j);

}  // namespace tandem::server
