#include "cli/model_resources.h"

#include <filesystem>
#include <fstream>

#include "common/error.h"
#include "formats/gguf.h"
#include "tokenizer/chat_template.h"
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

std::string chat_template_source(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (fs::is_directory(path, ec)) {
    const fs::path cfg_path = fs::path(path) / "tokenizer_config.json";
    if (!fs::exists(cfg_path, ec)) return {};
    std::ifstream in(cfg_path);
    nlohmann::json cfg = nlohmann::json::parse(in, nullptr, false);
    check(!cfg.is_discarded(), cfg_path.string() + ": malformed JSON");
    std::string tmpl = chat_template_from_tokenizer_config(cfg);
    // Newer folders keep the template in its own file.
    const fs::path jinja = fs::path(path) / "chat_template.jinja";
    if (tmpl.empty() && fs::exists(jinja, ec)) {
      std::ifstream j(jinja);
      tmpl.assign(std::istreambuf_iterator<char>(j), std::istreambuf_iterator<char>());
    }
    return tmpl;
  }
  std::unique_ptr<gguf::GgufFile> file = gguf::GgufFile::open(path);
  return file->get_string_opt("tokenizer.chat_template").value_or("");
}

std::unique_ptr<ChatTemplate> load_chat_template(const std::string& path, const Tokenizer& tokenizer) {
  const std::string source = chat_template_source(path);
  check(!source.empty(), "the model at '" + path + "' has no chat template");
  return std::make_unique<ChatTemplate>(source, tokenizer.bos_text(), tokenizer.eos_text());
}

}  // namespace tandem::cli
