#include "server/generation_params.h"

#include <cmath>
#include <limits>

#include "server/api_error.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/tokenizer.h"

namespace tandem::server {
namespace {

using nlohmann::json;

double get_number(const json& obj, const char* key) {
  const json& v = obj.at(key);
  if (!v.is_number()) throw bad_field(key, std::string("must be a number, got ") + v.type_name());
  const double d = v.get<double>();
  if (!std::isfinite(d)) throw bad_field(key, "must be finite");
  return d;
}

int64_t get_integer(const json& obj, const char* key, int64_t lo, int64_t hi) {
  const json& v = obj.at(key);
  if (!v.is_number_integer() && !v.is_number_unsigned())
    throw bad_field(key, std::string("must be an integer, got ") + v.type_name());
  if (v.is_number_unsigned() && v.get<uint64_t>() > static_cast<uint64_t>(hi))
    throw bad_field(key, "must be at most " + std::to_string(hi));
  const int64_t i = v.get<int64_t>();
  if (i < lo || i > hi) throw bad_field(key, "must be in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
  return i;
}

bool has(const json& obj, const char* key) { return obj.contains(key) && !obj.at(key).is_null(); }

bool get_bool(const json& obj, const char* key) {
  const json& v = obj.at(key);
  if (!v.is_boolean()) throw bad_field(key, std::string("must be a boolean, got ") + v.type_name());
  return v.get<bool>();
}

void check_text(const std::string& text, const std::string& field) {
  // nlohmann::json accepts only valid UTF-8 when parsing, so this guards the
  // strings built here (never expected to fire for parsed input).
  if (text.size() > (size_t{64} << 20)) throw bad_field(field, "is too long");
}

}  // namespace

void check_model_name(const json& body, const ServedModel& model) {
  if (!has(body, "model")) return;
  const json& m = body.at("model");
  if (!m.is_string()) throw bad_field("model", std::string("must be a string, got ") + m.type_name());
  if (m.get<std::string>() != model.id)
    throw ApiError(404, "model_not_found",
                   "The model '" + m.get<std::string>() + "' does not exist; this server serves '" + model.id + "'",
                   "model");
}

void parse_sampling_fields(const json& obj, SamplingParams& s, size_t prompt_tokens, int64_t context_window) {
  if (has(obj, "temperature")) s.temperature = static_cast<float>(get_number(obj, "temperature"));
  if (has(obj, "top_p")) s.top_p = static_cast<float>(get_number(obj, "top_p"));
  if (has(obj, "top_k")) s.top_k = static_cast<int>(get_integer(obj, "top_k", 0, 1 << 24));
  if (has(obj, "min_p")) s.min_p = static_cast<float>(get_number(obj, "min_p"));
  if (has(obj, "repetition_penalty")) s.repetition_penalty = static_cast<float>(get_number(obj, "repetition_penalty"));
  if (has(obj, "presence_penalty")) s.presence_penalty = static_cast<float>(get_number(obj, "presence_penalty"));
  if (has(obj, "frequency_penalty")) s.frequency_penalty = static_cast<float>(get_number(obj, "frequency_penalty"));
  if (has(obj, "seed")) {
    const json& v = obj.at("seed");
    if (!v.is_number_integer() && !v.is_number_unsigned())
      throw bad_field("seed", std::string("must be an integer, got ") + v.type_name());
    s.seed = v.is_number_unsigned() ? v.get<uint64_t>() : static_cast<uint64_t>(v.get<int64_t>());
  }
  if (has(obj, "stop")) {
    const json& v = obj.at("stop");
    s.stop.clear();
    if (v.is_string()) {
      s.stop.push_back(v.get<std::string>());
    } else if (v.is_array()) {
      if (v.size() > 16) throw bad_field("stop", "may hold at most 16 strings");
      for (const json& e : v) {
        if (!e.is_string()) throw bad_field("stop", "must be a string or an array of strings");
        s.stop.push_back(e.get<std::string>());
      }
    } else {
      throw bad_field("stop", std::string("must be a string or an array of strings, got ") + v.type_name());
    }
    for (const std::string& stop : s.stop)
      if (stop.empty()) throw bad_field("stop", "must not contain empty strings");
  }
  const int64_t room = std::max<int64_t>(0, context_window - static_cast<int64_t>(prompt_tokens));
  s.max_tokens = static_cast<int>(std::min<int64_t>(room, std::numeric_limits<int>::max()));
  for (const char* key : {"max_tokens", "max_completion_tokens"}) {
    if (has(obj, key)) s.max_tokens = static_cast<int>(get_integer(obj, key, 0, std::numeric_limits<int>::max()));
  }
  if (has(obj, "ignore_eos")) s.ignore_eos = get_bool(obj, "ignore_eos");
  try {
    validate(s);
  } catch (const ApiError&) {
    throw;
  } catch (const Error& e) {
    throw ApiError(400, "invalid_request", e.what());
  }
}

std::string render_messages(const json& messages, const ServedModel& model, const std::string& field) {
  if (!messages.is_array()) throw bad_field(field, std::string("must be an array, got ") + messages.type_name());
  if (messages.empty()) throw bad_field(field, "must not be empty");
  for (size_t i = 0; i < messages.size(); ++i) {
    const json& m = messages[i];
    const std::string at = field + "[" + std::to_string(i) + "]";
    if (!m.is_object()) throw bad_field(at, "must be an object with 'role' and 'content'");
    if (!m.contains("role") || !m.at("role").is_string()) throw bad_field(at + ".role", "must be a string");
    if (m.contains("content") && !m.at("content").is_string() && !m.at("content").is_null() &&
        !m.at("content").is_array())
      throw bad_field(at + ".content", "must be a string or an array of content parts");
  }
  if (model.chat_template == nullptr)
    throw ApiError(400, "invalid_request", "the model '" + model.id + "' has no chat template; use /v1/completions");
  try {
    return model.chat_template->render(messages, nullptr, true);
  } catch (const Error& e) {
    throw ApiError(400, "invalid_request", std::string("the chat template failed on these messages: ") + e.what(),
                   field);
  }
}

std::vector<int32_t> tokenize_messages(const json& messages, const ServedModel& model, const std::string& field) {
  const std::string text = render_messages(messages, model, field);
  check_text(text, field);
  return model.tokenizer->encode(text, false);
}

std::vector<int32_t> tokenize_prompt(const json& prompt, const ServedModel& model, const std::string& field) {
  if (prompt.is_string()) {
    check_text(prompt.get_ref<const std::string&>(), field);
    return model.tokenizer->encode(prompt.get<std::string>(), true);
  }
  if (prompt.is_array() && !prompt.empty() && prompt[0].is_number_integer()) {
    std::vector<int32_t> ids;
    const int64_t vocab = static_cast<int64_t>(model.tokenizer->vocab_size());
    for (const json& e : prompt) {
      if (!e.is_number_integer()) throw bad_field(field, "must be a string or an array of token ids");
      const int64_t id = e.get<int64_t>();
      if (id < 0 || id >= vocab) throw bad_field(field, "holds token id " + std::to_string(id) + " outside the vocabulary");
      ids.push_back(static_cast<int32_t>(id));
    }
    return ids;
  }
  if (prompt.is_array() && prompt.size() == 1 && prompt[0].is_string()) return tokenize_prompt(prompt[0], model, field);
  throw bad_field(field, std::string("must be a string or an array of token ids, got ") + prompt.type_name());
}

namespace {

ParsedGeneration parse_common(const json& body, const ServedModel& model, std::vector<int32_t> prompt) {
  ParsedGeneration g;
  g.prompt = std::move(prompt);
  if (g.prompt.empty()) throw ApiError(400, "invalid_request", "the prompt is empty");
  parse_sampling_fields(body, g.sampling, g.prompt.size(), model.context_window);
  if (has(body, "n")) g.n = static_cast<int>(get_integer(body, "n", 1, 16));
  if (has(body, "stream")) g.stream = get_bool(body, "stream");
  if (has(body, "stream_options")) {
    const json& so = body.at("stream_options");
    if (!so.is_object()) throw bad_field("stream_options", "must be an object");
    if (has(so, "include_usage")) {
      if (!so.at("include_usage").is_boolean()) throw bad_field("stream_options.include_usage", "must be a boolean");
      g.include_usage = so.at("include_usage").get<bool>();
    }
  }
  return g;
}

}  // namespace

ParsedGeneration parse_chat_request(const json& body, const ServedModel& model) {
  if (!body.is_object()) throw ApiError(400, "invalid_request", "the request body must be a JSON object");
  check_model_name(body, model);
  if (!body.contains("messages")) throw bad_field("messages", "is required");
  ParsedGeneration g = parse_common(body, model, tokenize_messages(body.at("messages"), model));
  bool logprobs = false;
  if (has(body, "logprobs")) logprobs = get_bool(body, "logprobs");
  if (has(body, "top_logprobs")) {
    const int k = static_cast<int>(get_integer(body, "top_logprobs", 0, 20));
    if (!logprobs && k > 0) throw bad_field("top_logprobs", "needs 'logprobs': true");
    g.top_logprobs = k;
  } else if (logprobs) {
    g.top_logprobs = 0;
  }
  return g;
}

ParsedGeneration parse_completion_request(const json& body, const ServedModel& model) {
  if (!body.is_object()) throw ApiError(400, "invalid_request", "the request body must be a JSON object");
  check_model_name(body, model);
  if (!body.contains("prompt")) throw bad_field("prompt", "is required");
  ParsedGeneration g = parse_common(body, model, tokenize_prompt(body.at("prompt"), model));
  if (has(body, "logprobs")) g.top_logprobs = static_cast<int>(get_integer(body, "logprobs", 0, 20));
  return g;
}

}  // namespace tandem::server
