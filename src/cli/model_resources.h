// What the subcommands need from a model path besides its weights: the chat
// template and the default model location.
#pragma once

#include <memory>
#include <string>

namespace tandem {
class Tokenizer;
class ChatTemplate;
}

namespace tandem::cli {

// The model used when --model is not given: the built-in demo model, found
// beside the executable's source tree. Empty when there is none.
std::string default_model_path();
// Resolves --model: the given path, else the demo model, else an error.
std::string resolve_model_path(const std::string& given);

// The chat template source shipped with the model at `path` (GGUF
// tokenizer.chat_template, or chat_template in tokenizer_config.json). Empty
// when the model has none.
std::string chat_template_source(const std::string& path);

// The model's chat template, ready to render. Throws when the model has none.
std::unique_ptr<ChatTemplate> load_chat_template(const std::string& path, const Tokenizer& tokenizer);

}  // namespace tandem::cli
