// What `tandem chat` remembers: the messages so far and the sampling
// parameters, with /params parsing and the /save, /load file format:
//   {"messages": [{"role": "system", "content": "..."}, ...], "params": {"temperature": 0.7}}
// Everything here is plain data (no network), so it is unit-tested directly.
#pragma once

#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <string_view>

namespace tandem::client::chat {

// A user mistake (a bad /params value, a file that is not a saved chat); the
// message says what to fix.
class ChatInputError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// The /params keys and what each accepts, for /help and errors.
std::string describe_params();

// Applies "temperature=0.7 top_p=0.9 stop=\n\n" to `params` (a JSON object).
// Values are JSON ("0.7", "[\"a\",\"b\"]") or, for `stop`, a bare string;
// "key=default" removes the key. All or nothing: on any error `params` is
// unchanged and ChatInputError names the key and the accepted range.
void apply_param_assignments(nlohmann::json& params, std::string_view assignments);

// Throws ChatInputError unless every key of `params` is known and in range.
void validate_params(const nlohmann::json& params);

class Conversation {
 public:
  // `system` (may be empty) becomes the first message and survives reset().
  explicit Conversation(std::string system = {});

  void add(std::string role, std::string content);
  // Drops the last message (a user turn the backend never answered).
  void drop_last();
  // Back to just the system message; params stay.
  void reset();

  const nlohmann::json& messages() const { return messages_; }
  nlohmann::json& params() { return params_; }
  const nlohmann::json& params() const { return params_; }
  size_t turns() const;  // user messages so far

  nlohmann::json to_json() const;
  // Throws ChatInputError naming the first thing wrong with `file`.
  static Conversation from_json(const nlohmann::json& file);

  // Throw ChatInputError with the path and the reason.
  void save(const std::string& path) const;
  static Conversation load(const std::string& path);

 private:
  nlohmann::json messages_ = nlohmann::json::array();
  nlohmann::json params_ = nlohmann::json::object();
};

}  // namespace tandem::client::chat
