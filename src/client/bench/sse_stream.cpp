#include "client/bench/sse_stream.h"

#include <nlohmann/json.hpp>

namespace tandem::client::bench {

void SseParser::feed(std::string_view bytes, std::vector<std::string>& events) {
  for (char c : bytes) {
    if (c != '\n') {
      line_ += c;
      continue;
    }
    if (!line_.empty() && line_.back() == '\r') line_.pop_back();
    if (line_.empty()) {  // blank line: dispatch
      if (has_data_) events.push_back(std::move(data_));
      data_.clear();
      has_data_ = false;
    } else if (line_.rfind("data:", 0) == 0) {
      std::string_view value = std::string_view(line_).substr(5);
      if (!value.empty() && value.front() == ' ') value.remove_prefix(1);
      if (has_data_) data_ += '\n';
      data_ += value;
      has_data_ = true;
    }
    line_.clear();
  }
}

CompletionChunk read_completion_chunk(const std::string& data) {
  CompletionChunk c;
  if (data == "[DONE]") {
    c.done_marker = true;
    return c;
  }
  const nlohmann::json j = nlohmann::json::parse(data, nullptr, false);
  if (j.is_discarded() || !j.is_object()) {
    c.invalid = true;
    return c;
  }
  if (j.contains("error")) {
    const nlohmann::json& e = j.at("error");
    if (e.is_object()) {
      c.error_code = e.contains("code") && e.at("code").is_string() ? e.at("code").get<std::string>() : "";
      if (c.error_code.empty() && e.contains("type") && e.at("type").is_string()) c.error_code = e.at("type").get<std::string>();
      c.error_message = e.contains("message") && e.at("message").is_string() ? e.at("message").get<std::string>() : e.dump();
    } else {
      c.error_message = e.is_string() ? e.get<std::string>() : e.dump();
    }
    if (c.error_code.empty()) c.error_code = "stream_error";
    return c;
  }
  if (j.contains("choices") && j.at("choices").is_array() && !j.at("choices").empty()) {
    const nlohmann::json& choice = j.at("choices").at(0);
    if (choice.is_object()) {
      const bool finished = choice.contains("finish_reason") && choice.at("finish_reason").is_string();
      if (finished) c.finish_reason = choice.at("finish_reason").get<std::string>();
      if (choice.contains("text") && choice.at("text").is_string()) {
        // A chunk of a running choice is a token arrival even when its text is
        // empty (text held back mid-character); a closing chunk counts only
        // when it carries text.
        c.has_token = !finished || !choice.at("text").get_ref<const std::string&>().empty();
      }
    }
  }
  if (j.contains("usage") && j.at("usage").is_object()) {
    const nlohmann::json& u = j.at("usage");
    if (u.contains("prompt_tokens") && u.at("prompt_tokens").is_number_integer())
      c.prompt_tokens = u.at("prompt_tokens").get<int64_t>();
    if (u.contains("completion_tokens") && u.at("completion_tokens").is_number_integer())
      c.completion_tokens = u.at("completion_tokens").get<int64_t>();
  }
  return c;
}

}  // namespace tandem::client::bench
