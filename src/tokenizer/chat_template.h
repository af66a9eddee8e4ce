// Chat templates: a Jinja-subset interpreter that renders the templates models
// ship (tokenizer_config.json "chat_template", GGUF tokenizer.chat_template)
// exactly as the reference renderer does. A construct it does not support is
// an error naming the construct and its line, never silently wrong output.
#pragma once

#include <memory>
#include <nlohmann/json.hpp>
#include <string>

namespace tandem {

class ChatTemplate {
 public:
  // Parses `source` once. Throws tandem::Error with line and column on a
  // syntax error or an unsupported construct.
  ChatTemplate(const std::string& source, std::string bos_token, std::string eos_token);
  ~ChatTemplate();
  ChatTemplate(ChatTemplate&&) noexcept;
  ChatTemplate& operator=(ChatTemplate&&) noexcept;

  // messages: array of {role, content, ...}; tools: array or null.
  // extra: more variables for the template (e.g. {"enable_thinking": false}).
  // Throws tandem::Error on a runtime error (raise_exception, bad types).
  std::string render(const nlohmann::json& messages, const nlohmann::json& tools, bool add_generation_prompt,
                     const nlohmann::json& extra = nlohmann::json::object()) const;

  // The same with key order kept: objects render (e.g. through tojson) in the
  // order the client wrote them, as the reference renderer does. Use this for
  // request bodies; render() sorts keys (nlohmann::json is ordered by key).
  std::string render_ordered(const nlohmann::ordered_json& messages, const nlohmann::ordered_json& tools,
                             bool add_generation_prompt,
                             const nlohmann::ordered_json& extra = nlohmann::ordered_json::object()) const;

  const std::string& source() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Reads the chat template out of a tokenizer_config.json document: a string,
// or a list of {name, template} where "default" is taken. Empty if absent.
std::string chat_template_from_tokenizer_config(const nlohmann::json& config);

}  // namespace tandem
