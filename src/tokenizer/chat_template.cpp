#include "tokenizer/chat_template.h"

#include "common/error.h"
#include "tokenizer/jinja_interpreter.h"
#include "tokenizer/jinja_parser.h"

namespace tandem {

struct ChatTemplate::Impl {
  std::string source;
  std::string bos_token;
  std::string eos_token;
  jinja::Program program;
};

ChatTemplate::ChatTemplate(const std::string& source, std::string bos_token, std::string eos_token)
    : impl_(std::make_unique<Impl>()) {
  impl_->source = source;
  impl_->bos_token = std::move(bos_token);
  impl_->eos_token = std::move(eos_token);
  impl_->program = jinja::parse(source);
}

ChatTemplate::~ChatTemplate() = default;
ChatTemplate::ChatTemplate(ChatTemplate&&) noexcept = default;
ChatTemplate& ChatTemplate::operator=(ChatTemplate&&) noexcept = default;

namespace {

// The variables a chat template sees. Templated on the JSON type so that
// ordered input keeps its key order (tool schemas print as the client sent them).
template <typename Json>
jinja::Object template_variables(const Json& messages, const Json& tools, bool add_generation_prompt, const Json& extra,
                                 const std::string& bos_token, const std::string& eos_token) {
  check(messages.is_array(), "chat template: messages must be a JSON array of {role, content} objects");
  check(tools.is_null() || tools.is_array(), "chat template: tools must be a JSON array or null");
  check(extra.is_object() || extra.is_null(), "chat template: extra variables must be a JSON object");
  jinja::Object vars;
  vars.set("messages", jinja::Value::from_json(messages));
  vars.set("tools", jinja::Value::from_json(tools));
  vars.set("add_generation_prompt", jinja::Value::boolean(add_generation_prompt));
  vars.set("bos_token", jinja::Value::string(bos_token));
  vars.set("eos_token", jinja::Value::string(eos_token));
  if (extra.is_object())
    for (auto it = extra.begin(); it != extra.end(); ++it) vars.set(it.key(), jinja::Value::from_json(it.value()));
  return vars;
}

}  // namespace

std::string ChatTemplate::render(const nlohmann::json& messages, const nlohmann::json& tools,
                                 bool add_generation_prompt, const nlohmann::json& extra) const {
  jinja::Interpreter interpreter(impl_->program, jinja::RenderOptions{});
  return interpreter.render(
      template_variables(messages, tools, add_generation_prompt, extra, impl_->bos_token, impl_->eos_token));
}

std::string ChatTemplate::render_ordered(const nlohmann::ordered_json& messages, const nlohmann::ordered_json& tools,
                                         bool add_generation_prompt, const nlohmann::ordered_json& extra) const {
  jinja::Interpreter interpreter(impl_->program, jinja::RenderOptions{});
  return interpreter.render(
      template_variables(messages, tools, add_generation_prompt, extra, impl_->bos_token, impl_->eos_token));
}

const std::string& ChatTemplate::source() const { return impl_->source; }

std::string chat_template_from_tokenizer_config(const nlohmann::json& config) {
  if (!config.is_object() || !config.contains("chat_template")) return "";
  const nlohmann::json& t = config["chat_template"];
  if (t.is_null()) return "";
  if (t.is_string()) return t.get<std::string>();
  if (t.is_array()) {
    std::string names;
    for (const auto& entry : t) {
      if (!entry.is_object() || !entry.contains("name") || !entry.contains("template") || !entry["name"].is_string() ||
          !entry["template"].is_string())
        throw Error("tokenizer_config.json: chat_template list entries must be {\"name\": ..., \"template\": ...}");
      if (entry["name"] == "default") return entry["template"].get<std::string>();
      names += (names.empty() ? "" : ", ") + entry["name"].get<std::string>();
    }
    throw Error("tokenizer_config.json: chat_template list has no \"default\" entry (it has: " + names + ")");
  }
  throw Error("tokenizer_config.json: chat_template must be a string or a list of {name, template}");
}

}  // namespace tandem
