#include "client/chat/conversation.h"

#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <sstream>
#include <vector>

namespace tandem::client::chat {

using nlohmann::json;

namespace {

struct ParamRule {
  const char* key;
  const char* accepts;                      // for messages
  std::function<bool(const json&)> valid;   // the value's type and range
};

bool number_in(const json& v, double lo, double hi, bool lo_open = false) {
  if (!v.is_number()) return false;
  const double d = v.get<double>();
  return std::isfinite(d) && (lo_open ? d > lo : d >= lo) && d <= hi;
}
bool integer_in(const json& v, int64_t lo, int64_t hi) {
  if (v.is_number_unsigned()) {
    const uint64_t u = v.get<uint64_t>();
    return u <= static_cast<uint64_t>(hi) && (lo <= 0 || u >= static_cast<uint64_t>(lo));
  }
  if (!v.is_number_integer()) return false;
  const int64_t i = v.get<int64_t>();
  return i >= lo && i <= hi;
}

const std::vector<ParamRule>& rules() {
  static const std::vector<ParamRule> r = {
      {"temperature", "a number >= 0 (0 = greedy)", [](const json& v) { return number_in(v, 0, 1e6); }},
      {"top_p", "a number in (0, 1]", [](const json& v) { return number_in(v, 0, 1, true); }},
      {"top_k", "an integer >= 0 (0 = off)", [](const json& v) { return integer_in(v, 0, 1 << 24); }},
      {"min_p", "a number in [0, 1]", [](const json& v) { return number_in(v, 0, 1); }},
      {"max_tokens", "an integer >= 1", [](const json& v) { return integer_in(v, 1, INT32_MAX); }},
      {"repetition_penalty", "a number > 0 (1 = off)", [](const json& v) { return number_in(v, 0, 1e6, true); }},
      {"presence_penalty", "a number in [-2, 2]", [](const json& v) { return number_in(v, -2, 2); }},
      {"frequency_penalty", "a number in [-2, 2]", [](const json& v) { return number_in(v, -2, 2); }},
      {"seed", "an integer >= 0", [](const json& v) { return integer_in(v, 0, INT64_MAX); }},
      {"ignore_eos", "true or false (true: do not stop at end-of-sequence)", [](const json& v) { return v.is_boolean(); }},
      {"stop", "a string or a JSON array of up to 16 non-empty strings",
       [](const json& v) {
         if (v.is_string()) return !v.get_ref<const std::string&>().empty();
         if (!v.is_array() || v.size() > 16) return false;
         for (const json& e : v)
           if (!e.is_string() || e.get_ref<const std::string&>().empty()) return false;
         return true;
       }},
  };
  return r;
}

const ParamRule* find_rule(const std::string& key) {
  for (const ParamRule& r : rules())
    if (key == r.key) return &r;
  return nullptr;
}

std::string known_keys() {
  std::string s;
  for (const ParamRule& r : rules()) s += (s.empty() ? "" : ", ") + std::string(r.key);
  return s;
}

// Splits on spaces and tabs; a value may be quoted with " to hold spaces.
std::vector<std::string> split_words(std::string_view text) {
  std::vector<std::string> words;
  std::string current;
  bool in_quotes = false, have = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (c == '"' ) {
      in_quotes = !in_quotes;
      current += c;
      have = true;
    } else if (c == '\\' && in_quotes && i + 1 < text.size()) {
      current += c;
      current += text[++i];
    } else if ((c == ' ' || c == '\t') && !in_quotes) {
      if (have) words.push_back(current);
      current.clear();
      have = false;
    } else {
      current += c;
      have = true;
    }
  }
  if (in_quotes) throw ChatInputError("a value has an opening \" without a closing one");
  if (have) words.push_back(current);
  return words;
}

void check_messages(const json& messages) {
  if (!messages.is_array()) throw ChatInputError("'messages' must be an array");
  for (size_t i = 0; i < messages.size(); ++i) {
    const json& m = messages[i];
    const std::string at = "messages[" + std::to_string(i) + "]";
    if (!m.is_object()) throw ChatInputError(at + " must be an object with 'role' and 'content'");
    if (!m.contains("role") || !m.at("role").is_string()) throw ChatInputError(at + ".role must be a string");
    const std::string role = m.at("role").get<std::string>();
    if (role != "system" && role != "user" && role != "assistant")
      throw ChatInputError(at + ".role must be system, user or assistant, not '" + role + "'");
    if (!m.contains("content") || !m.at("content").is_string()) throw ChatInputError(at + ".content must be a string");
  }
}

}  // namespace

std::string describe_params() {
  std::ostringstream out;
  for (const ParamRule& r : rules()) out << "  " << r.key << ": " << r.accepts << "\n";
  return out.str();
}

void validate_params(const json& params) {
  if (!params.is_object()) throw ChatInputError("'params' must be an object");
  for (const auto& [key, value] : params.items()) {
    const ParamRule* rule = find_rule(key);
    if (!rule) throw ChatInputError("unknown parameter '" + key + "'; known: " + known_keys());
    if (!rule->valid(value)) throw ChatInputError(key + " must be " + rule->accepts + ", not " + value.dump());
  }
}

void apply_param_assignments(json& params, std::string_view assignments) {
  json next = params;
  const std::vector<std::string> words = split_words(assignments);
  if (words.empty()) throw ChatInputError("nothing to set; write /params key=value ...");
  for (const std::string& word : words) {
    const size_t eq = word.find('=');
    if (eq == std::string::npos || eq == 0)
      throw ChatInputError("'" + word + "' is not key=value (e.g. temperature=0.7)");
    const std::string key = word.substr(0, eq);
    const std::string text = word.substr(eq + 1);
    const ParamRule* rule = find_rule(key);
    if (!rule) throw ChatInputError("unknown parameter '" + key + "'; known: " + known_keys());
    if (text == "default") {
      next.erase(key);
      continue;
    }
    if (text.empty()) throw ChatInputError(key + " needs a value (" + rule->accepts + "), or 'default' to unset it");
    json value = json::parse(text, nullptr, false);
    if (value.is_discarded() && key == "stop") value = text;  // a bare stop string
    if (value.is_discarded() || !rule->valid(value))
      throw ChatInputError(key + " must be " + rule->accepts + ", not '" + text + "'");
    next[key] = value;
  }
  params = std::move(next);
}

Conversation::Conversation(std::string system) {
  if (!system.empty()) messages_.push_back({{"role", "system"}, {"content", std::move(system)}});
}

void Conversation::add(std::string role, std::string content) {
  messages_.push_back({{"role", std::move(role)}, {"content", std::move(content)}});
}

void Conversation::drop_last() {
  if (!messages_.empty()) messages_.erase(messages_.end() - 1);
}

void Conversation::reset() {
  json kept = json::array();
  if (!messages_.empty() && messages_[0].value("role", "") == "system") kept.push_back(messages_[0]);
  messages_ = std::move(kept);
}

size_t Conversation::turns() const {
  size_t n = 0;
  for (const json& m : messages_) n += m.value("role", "") == "user";
  return n;
}

json Conversation::to_json() const { return {{"messages", messages_}, {"params", params_}}; }

Conversation Conversation::from_json(const json& file) {
  if (!file.is_object()) throw ChatInputError("a saved chat is a JSON object with 'messages' and 'params'");
  if (!file.contains("messages")) throw ChatInputError("'messages' is missing");
  check_messages(file.at("messages"));
  Conversation c;
  c.messages_ = file.at("messages");
  if (file.contains("params")) {
    validate_params(file.at("params"));
    c.params_ = file.at("params");
  }
  return c;
}

void Conversation::save(const std::string& path) const {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) throw ChatInputError("cannot write " + path + ": " + std::strerror(errno));
    out << to_json().dump(2) << "\n";
    if (!out.flush()) throw ChatInputError("cannot write " + path + ": " + std::strerror(errno));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const std::string why = std::strerror(errno);
    std::remove(tmp.c_str());
    throw ChatInputError("cannot write " + path + ": " + why);
  }
}

Conversation Conversation::load(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw ChatInputError("cannot read " + path + ": " + std::strerror(errno));
  std::stringstream text;
  text << in.rdbuf();
  json file = json::parse(text.str(), nullptr, false);
  if (file.is_discarded()) throw ChatInputError(path + " is not JSON");
  try {
    return from_json(file);
  } catch (const ChatInputError& e) {
    throw ChatInputError(path + " is not a saved chat: " + e.what());
  }
}

}  // namespace tandem::client::chat
