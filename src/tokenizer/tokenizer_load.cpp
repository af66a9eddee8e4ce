// Tokenizer::load: pick the source by what `path` is.
#include <cstring>
#include <filesystem>
#include <fstream>

#include "common/error.h"
#include "formats/gguf.h"
#include "tokenizer/tokenizer.h"

namespace tandem {

namespace {

bool has_gguf_magic(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  char magic[4] = {};
  in.read(magic, 4);
  return in.gcount() == 4 && std::memcmp(magic, "GGUF", 4) == 0;
}

}  // namespace

std::unique_ptr<Tokenizer> Tokenizer::load(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::path p(path);
  if (fs::is_directory(p, ec)) {
    const fs::path json = p / "tokenizer.json";
    if (!fs::is_regular_file(json, ec))
      throw Error("no tokenizer.json in " + path + " and it is not a GGUF file");
    const fs::path config = p / "tokenizer_config.json";
    return from_hf_files(json.string(), fs::is_regular_file(config, ec) ? config.string() : std::string());
  }
  if (!fs::exists(p, ec)) throw Error("tokenizer path " + path + " does not exist");
  if (has_gguf_magic(p)) {
    const auto file = gguf::GgufFile::open(path);
    return from_gguf(*file);
  }
  if (p.filename() == "tokenizer.json") {
    const fs::path config = p.parent_path() / "tokenizer_config.json";
    return from_hf_files(path, fs::is_regular_file(config, ec) ? config.string() : std::string());
  }
  throw Error(path + " is neither a GGUF file, a tokenizer.json, nor a folder holding tokenizer.json");
}

}  // namespace tandem
