#include "cli/model_resources.h"

#include <filesystem>
#include <fstream>

#include "common/error.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/chat_template_source.h"
#include "tokenizer/tokenizer.h"

#ifndef TANDEM_DEFAULT_MODEL
#define TANDEM_DEFAULT_MODEL ""
#endif

namespace tandem::cli {

std::string default_model_path() {
  const std::string path = TANDEM_DEFAULT_MODEL;
  std::error_code ec;
  return !path.empty() && std::filesystem::exists(path, ec) ? path : std::string();
}

std::string resolve_model_path(const std::string& given) {
  if (!given.empty()) return given;
  const std::string path = default_model_path();
  check(!path.empty(), "no --model given and the built-in demo model was not found; pass --model PATH");
  return path;
}

std::unique_ptr<ChatTemplate> load_chat_template(const std::string& path, const Tokenizer& tokenizer) {
  const std::string source = chat_template_source(path);
  check(!source.empty(), "the model at '" + path + "' has no chat template");
  return std::make_unique<ChatTemplate>(source, tokenizer.bos_text(), tokenizer.eos_text());
}

}  // namespace tandem::cli
