// What the subcommands need from a model path besides its weights: the chat
// template and the default model location.
#pragma once

#include <memory>
#include <string>

#include "tokenizer/chat_template_source.h"  // chat_template_source(path), used with these

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

// The model's chat template, ready to render. Throws when the model has none.
std::unique_ptr<ChatTemplate> load_chat_template(const std::string& path, const Tokenizer& tokenizer);

}  // namespace tandem::cli
