// `tandem-server tokenize` and `template`: the model's tokenizer and chat
// template, on their own.
#include <cstdio>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/model_resources.h"
#include "common/error.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/tokenizer.h"

namespace tandem::cli {
namespace {

struct TokenizeOptions {
  std::string model, text;
  bool json = false;
  bool no_special = false;
};

struct TemplateOptions {
  std::string model, messages;
  bool add_generation_prompt = false;
};

int tokenize(const TokenizeOptions& o) {
  std::unique_ptr<Tokenizer> tok = Tokenizer::load(resolve_model_path(o.model));
  const std::vector<int32_t> ids = tok->encode(o.text, !o.no_special);
  if (o.json) {
    std::printf("%s\n", nlohmann::json({{"ids", ids}}).dump().c_str());
  } else {
    for (size_t i = 0; i < ids.size(); ++i) std::printf("%s%d", i ? " " : "", ids[i]);
    std::printf("\n");
  }
  return 0;
}

int render_template(const TemplateOptions& o) {
  const std::string path = resolve_model_path(o.model);
  std::ifstream in(o.messages);
  check(in.good(), "cannot read messages file '" + o.messages + "'");
  // Ordered: tool schemas render in the order the file gives their keys.
  nlohmann::ordered_json doc = nlohmann::ordered_json::parse(in, nullptr, false);
  check(!doc.is_discarded(), o.messages + ": malformed JSON");
  nlohmann::ordered_json messages, tools;
  nlohmann::ordered_json extra = nlohmann::ordered_json::object();
  if (doc.is_array()) {
    messages = doc;
  } else {
    check(doc.is_object() && doc.contains("messages") && doc["messages"].is_array(),
          o.messages + ": expected an array of messages or an object with a \"messages\" array");
    messages = doc["messages"];
    if (doc.contains("tools")) tools = doc["tools"];
    // Chat-template variables a request body may carry (e.g. enable_thinking).
    if (doc.contains("chat_template_kwargs")) {
      check(doc["chat_template_kwargs"].is_object(), o.messages + ": chat_template_kwargs must be an object");
      extra = doc["chat_template_kwargs"];
    }
  }
  std::unique_ptr<Tokenizer> tok = Tokenizer::load(path);
  const std::string out = load_chat_template(path, *tok)->render_ordered(messages, tools, o.add_generation_prompt, extra);
  std::fwrite(out.data(), 1, out.size(), stdout);
  return 0;
}

}  // namespace

Action add_tokenize_command(CLI::App& app) {
  auto o = std::make_shared<TokenizeOptions>();
  CLI::App* cmd = app.add_subcommand("tokenize", "Print the token ids of a text");
  cmd->add_option("-m,--model", o->model, "GGUF file, Hugging Face folder, or folder with tokenizer.json");
  cmd->add_option("--text", o->text, "Text to tokenize")->required();
  cmd->add_flag("--json", o->json, "Print {\"ids\": [...]}");
  cmd->add_flag("--no-special", o->no_special, "Do not add BOS/EOS tokens");
  return [o] { return tokenize(*o); };
}

Action add_template_command(CLI::App& app) {
  auto o = std::make_shared<TemplateOptions>();
  CLI::App* cmd = app.add_subcommand("template", "Render the model's chat template");
  cmd->add_option("-m,--model", o->model, "GGUF file, Hugging Face folder, or folder with tokenizer files");
  cmd->add_option("--messages", o->messages, "JSON file: messages array or an OpenAI-style request body")->required();
  cmd->add_flag("--add-generation-prompt", o->add_generation_prompt, "End with the assistant turn's opening");
  return [o] { return render_template(*o); };
}

}  // namespace tandem::cli
