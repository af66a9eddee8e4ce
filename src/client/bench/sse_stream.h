// Server-sent events from an OpenAI-compatible streaming completion: the
// byte stream is split into events, and each event's data is read as a
// completion chunk.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace tandem::client::bench {

// Splits a byte stream into SSE events (a blank line ends one) and returns
// the joined `data:` lines of each; comments and other fields are dropped.
// Bytes may arrive split anywhere, including inside a CRLF.
class SseParser {
 public:
  void feed(std::string_view bytes, std::vector<std::string>& events);

 private:
  std::string line_;  // the incomplete line so far
  std::string data_;  // the current event's data
  bool has_data_ = false;
};

// What one `data:` payload of /v1/completions says.
struct CompletionChunk {
  bool done_marker = false;  // "[DONE]"
  bool invalid = false;      // not JSON, or not an object
  bool has_token = false;    // the chunk carries generated text (or an empty piece of a running choice)
  std::string finish_reason; // empty while running
  std::string error_code;    // an {"error": {...}} event mid-stream
  std::string error_message;
  int64_t prompt_tokens = -1;  // usage, when this chunk carries it
  int64_t completion_tokens = -1;
};

CompletionChunk read_completion_chunk(const std::string& data);

}  // namespace tandem::client::bench
