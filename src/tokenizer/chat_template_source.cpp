#include "tokenizer/chat_template_source.h"

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "formats/gguf.h"
#include "tokenizer/chat_template.h"

namespace tandem {

std::string chat_template_source(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (fs::is_directory(path, ec)) {
    std::string tmpl;
    const fs::path cfg_path = fs::path(path) / "tokenizer_config.json";
    if (fs::exists(cfg_path, ec)) {
      std::ifstream in(cfg_path);
      nlohmann::json cfg = nlohmann::json::parse(in, nullptr, false);
      check(!cfg.is_discarded(), cfg_path.string() + ": malformed JSON");
      tmpl = chat_template_from_tokenizer_config(cfg);
    }
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

}  // namespace tandem
