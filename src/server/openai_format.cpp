#include "server/openai_format.h"

#include <atomic>
#include <chrono>
#include <random>

#include "tokenizer/tokenizer.h"

namespace tandem::server {
namespace {

using nlohmann::json;

std::string random_id(const char* prefix) {
  std::random_device rd;
  std::mt19937_64 rng((static_cast<uint64_t>(rd()) << 32) ^ rd());
  static const char* const digits = "0123456789abcdefghijklmnopqrstuvwxyz";
  std::string id = prefix;
  for (int i = 0; i < 24; ++i) id.push_back(digits[rng() % 36]);
  return id;
}

json bytes_of(const std::string& s) {
  json b = json::array();
  for (unsigned char c : s) b.push_back(static_cast<int>(c));
  return b;
}

}  // namespace

json usage_json(int64_t prompt_tokens, int64_t completion_tokens) {
  return {{"prompt_tokens", prompt_tokens},
          {"completion_tokens", completion_tokens},
          {"total_tokens", prompt_tokens + completion_tokens}};
}

std::string dump_json(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

std::string sse_event(const json& data) { return "data: " + dump_json(data) + "\n\n"; }

OpenAiFormat::OpenAiFormat(bool chat, const ServedModel& model, int top_logprobs)
    : chat_(chat),
      model_(model),
      top_logprobs_(top_logprobs),
      id_(random_id(chat ? "chatcmpl-" : "cmpl-")),
      created_(std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch())
                   .count()) {}

std::string OpenAiFormat::token_text(int32_t id) const {
  const int32_t one[1] = {id};
  return model_.tokenizer->decode(std::span<const int32_t>(one, 1), false);
}

json OpenAiFormat::envelope(const char* object) const {
  return {{"id", id_}, {"object", object}, {"created", created_}, {"model", model_.id}};
}

json OpenAiFormat::logprobs_for(const StreamEvent& ev, size_t text_offset) const {
  if (top_logprobs_ < 0 || ev.logprobs.empty()) return nullptr;
  if (chat_) {
    json content = json::array();
    for (size_t i = 0; i < ev.token_ids.size() && i < ev.logprobs.size(); ++i) {
      const std::string tok = token_text(ev.token_ids[i]);
      json top = json::array();
      if (i < ev.top.size()) {
        for (const TopLogprob& t : ev.top[i]) {
          const std::string tt = token_text(t.id);
          top.push_back({{"token", tt}, {"logprob", t.logprob}, {"bytes", bytes_of(tt)}});
        }
      }
      content.push_back({{"token", tok}, {"logprob", ev.logprobs[i]}, {"bytes", bytes_of(tok)}, {"top_logprobs", top}});
    }
    return {{"content", content}};
  }
  json tokens = json::array(), lps = json::array(), tops = json::array(), offsets = json::array();
  size_t offset = text_offset;
  for (size_t i = 0; i < ev.token_ids.size() && i < ev.logprobs.size(); ++i) {
    const std::string tok = token_text(ev.token_ids[i]);
    tokens.push_back(tok);
    lps.push_back(ev.logprobs[i]);
    json top = json::object();
    if (i < ev.top.size())
      for (const TopLogprob& t : ev.top[i]) top[token_text(t.id)] = t.logprob;
    tops.push_back(top);
    offsets.push_back(offset);
    offset += tok.size();
  }
  return {{"tokens", tokens}, {"token_logprobs", lps}, {"top_logprobs", tops}, {"text_offset", offsets}};
}

json OpenAiFormat::token_chunk(int index, const StreamEvent& ev, bool first) const {
  json chunk = envelope(chat_ ? "chat.completion.chunk" : "text_completion");
  json choice = {{"index", index}, {"finish_reason", nullptr}, {"logprobs", logprobs_for(ev, 0)}};
  if (chat_) {
    json delta = {{"content", ev.text}};
    if (first) delta["role"] = "assistant";
    choice["delta"] = delta;
  } else {
    choice["text"] = ev.text;
  }
  chunk["choices"] = json::array({choice});
  return chunk;
}

json OpenAiFormat::finish_chunk(int index, const std::string& finish_reason) const {
  json chunk = envelope(chat_ ? "chat.completion.chunk" : "text_completion");
  json choice = {{"index", index}, {"finish_reason", finish_reason}, {"logprobs", nullptr}};
  if (chat_) choice["delta"] = json::object();
  else choice["text"] = "";
  chunk["choices"] = json::array({choice});
  return chunk;
}

json OpenAiFormat::usage_chunk(int64_t prompt_tokens, int64_t completion_tokens) const {
  json chunk = envelope(chat_ ? "chat.completion.chunk" : "text_completion");
  chunk["choices"] = json::array();
  chunk["usage"] = usage_json(prompt_tokens, completion_tokens);
  return chunk;
}

void OpenAiFormat::accumulate(ChoiceOutput& c, const StreamEvent& ev) const {
  if (ev.done) {
    c.done = true;
    c.finish_reason = ev.finish_reason;
    c.prompt_tokens = ev.prompt_tokens;
    c.completion_tokens = ev.completion_tokens;
    return;
  }
  const json lp = logprobs_for(ev, c.text.size());
  if (!lp.is_null()) {
    if (chat_) {
      if (c.logprobs.is_null()) c.logprobs = json::array();
      for (const json& e : lp.at("content")) c.logprobs.push_back(e);
    } else {
      if (c.logprobs.is_null())
        c.logprobs = {{"tokens", json::array()}, {"token_logprobs", json::array()}, {"top_logprobs", json::array()},
                      {"text_offset", json::array()}};
      for (const char* k : {"tokens", "token_logprobs", "top_logprobs", "text_offset"})
        for (const json& e : lp.at(k)) c.logprobs[k].push_back(e);
    }
  }
  c.text += ev.text;
  c.token_ids.insert(c.token_ids.end(), ev.token_ids.begin(), ev.token_ids.end());
}

json OpenAiFormat::response(const std::vector<ChoiceOutput>& choices) const {
  json out = envelope(chat_ ? "chat.completion" : "text_completion");
  json list = json::array();
  int64_t prompt = 0, completion = 0;
  for (size_t i = 0; i < choices.size(); ++i) {
    const ChoiceOutput& c = choices[i];
    json choice = {{"index", i}, {"finish_reason", c.finish_reason}};
    if (chat_) {
      choice["message"] = {{"role", "assistant"}, {"content", c.text}};
      choice["logprobs"] = c.logprobs.is_null() ? json(nullptr) : json{{"content", c.logprobs}};
    } else {
      choice["text"] = c.text;
      choice["logprobs"] = c.logprobs;
    }
    list.push_back(choice);
    prompt = c.prompt_tokens;  // every choice shares the prompt
    completion += c.completion_tokens;
  }
  out["choices"] = list;
  out["usage"] = usage_json(prompt, completion);
  return out;
}

}  // namespace tandem::server
