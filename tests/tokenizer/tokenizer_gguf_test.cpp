// Tokenizer -> GGUF metadata -> file -> Tokenizer gives the same ids for the
// whole corpus, for all three reference vocabularies; and GGUF metadata that
// Tandem cannot honour is an error.
#include <gtest/gtest.h>

#include <iostream>

#include <unistd.h>

#include <filesystem>
#include <functional>

#include "common/error.h"
#include "formats/gguf.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer_test_util.h"

namespace tandem {
namespace {

namespace fs = std::filesystem;

fs::path temp_path(const std::string& name) {
  return fs::temp_directory_path() / ("tandem_tokenizer_" + name + "_" + std::to_string(::getpid()) + ".gguf");
}

class GgufRoundTrip : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (!test::reference_available(GetParam())) GTEST_SKIP() << "reference tokenizer files missing";
    original_ = Tokenizer::load(test::reference_models_dir(GetParam()).string());
  }
  std::unique_ptr<Tokenizer> original_;
};

TEST_P(GgufRoundTrip, SameIdsOnWholeCorpus) {
  gguf::GgufWriter writer;
  original_->write_gguf_metadata(writer);
  const fs::path path = temp_path(GetParam());
  writer.write(path.string());
  const auto reloaded = Tokenizer::load(path.string());  // detects GGUF by its magic
  fs::remove(path);

  EXPECT_EQ(reloaded->kind_name(), original_->kind_name());
  EXPECT_EQ(reloaded->vocab_size(), original_->vocab_size());
  EXPECT_EQ(reloaded->bos_id(), original_->bos_id());
  EXPECT_EQ(reloaded->eos_id(), original_->eos_id());
  EXPECT_EQ(reloaded->stop_ids(), original_->stop_ids());
  for (int32_t id = 0; id < static_cast<int32_t>(original_->vocab_size()); id += 97) {
    EXPECT_EQ(reloaded->token_text(id), original_->token_text(id));
    EXPECT_EQ(reloaded->is_special(id), original_->is_special(id)) << id;
  }
  const auto corpus = test::read_corpus();
  size_t mismatches = 0;
  for (size_t i = 0; i < corpus.size(); ++i) {
    const auto ids = original_->encode(corpus[i], true);
    if (reloaded->encode(corpus[i], true) != ids) {
      ++mismatches;
      ADD_FAILURE() << "line " << i + 1 << " " << nlohmann::json(corpus[i]).dump();
    }
    EXPECT_EQ(reloaded->decode(ids, false), original_->decode(ids, false)) << "line " << i + 1;
  }
  EXPECT_EQ(mismatches, 0u);
}

// A "llama" GGUF without tokenizer.ggml.merges (as older converters wrote
// them) ranks merges by token score instead.
TEST(TokenizerGguf, SentencePieceFromScoresOnly) {
  if (!test::reference_available("llama2")) GTEST_SKIP() << "reference tokenizer files missing";
  const auto original = Tokenizer::load(test::reference_models_dir("llama2").string());
  gguf::GgufWriter full;
  original->write_gguf_metadata(full);
  const fs::path full_path = temp_path("full"), scores_path = temp_path("scores");
  full.write(full_path.string());
  const auto file = gguf::GgufFile::open(full_path.string());
  gguf::GgufWriter scores_only;
  for (const auto& kv : file->metadata())
    if (kv.key != "tokenizer.ggml.merges") scores_only.set(kv.key, kv.value);
  scores_only.write(scores_path.string());
  const auto reloaded = Tokenizer::load(scores_path.string());
  fs::remove(full_path);
  fs::remove(scores_path);
  const auto corpus = test::read_corpus();
  size_t same = 0;
  for (const auto& text : corpus) same += reloaded->encode(text) == original->encode(text);
  std::cout << "scores-only SentencePiece: " << same << " / " << corpus.size() << " strings id-identical\n";
  EXPECT_EQ(same, corpus.size());
}

INSTANTIATE_TEST_SUITE_P(Reference, GgufRoundTrip, ::testing::ValuesIn(test::reference_tokenizer_names()),
                         [](const auto& info) { return info.param; });

// Minimal GGUF tokenizer metadata; `edit` changes it before writing.
std::unique_ptr<Tokenizer> load_small_gguf(const std::function<void(gguf::GgufWriter&)>& edit) {
  gguf::GgufWriter writer;
  writer.set("tokenizer.ggml.model", gguf::Value::string("gpt2"));
  writer.set("tokenizer.ggml.pre", gguf::Value::string("qwen2"));
  writer.set("tokenizer.ggml.tokens", gguf::Value::string_array({"a", "b", "ab", "<|end|>"}));
  writer.set("tokenizer.ggml.token_type", gguf::Value::i32_array({1, 1, 1, 3}));
  writer.set("tokenizer.ggml.merges", gguf::Value::string_array({"a b"}));
  writer.set("tokenizer.ggml.eos_token_id", gguf::Value::u32(3));
  edit(writer);
  const fs::path path = temp_path("small");
  writer.write(path.string());
  struct Cleanup {
    fs::path p;
    ~Cleanup() { fs::remove(p); }
  } cleanup{path};
  return Tokenizer::load(path.string());
}

template <typename Fn>
void expect_error(Fn fn, const std::string& needle) {
  try {
    fn();
    ADD_FAILURE() << "no error; expected one mentioning '" << needle << "'";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

TEST(TokenizerGguf, SmallVocabulary) {
  const auto t = load_small_gguf([](gguf::GgufWriter&) {});
  EXPECT_EQ(t->encode("abab<|end|>"), (std::vector<int32_t>{2, 2, 3}));
  EXPECT_EQ(t->eos_id(), 3);
  EXPECT_TRUE(t->is_special(3));
  EXPECT_EQ(t->decode(std::vector<int32_t>{2, 0, 3}, true), "aba");
}

TEST(TokenizerGguf, UnknownModelOrPreTokenizerIsAnError) {
  expect_error([] { load_small_gguf([](gguf::GgufWriter& w) { w.set("tokenizer.ggml.model", gguf::Value::string("bert")); }); },
               "'bert'");
  expect_error([] { load_small_gguf([](gguf::GgufWriter& w) { w.set("tokenizer.ggml.pre", gguf::Value::string("mystery-9")); }); },
               "'mystery-9'");
  expect_error([] {
    load_small_gguf([](gguf::GgufWriter& w) { w.set("tokenizer.ggml.token_type", gguf::Value::i32_array({1})); });
  }, "token_type");
  expect_error([] {
    load_small_gguf([](gguf::GgufWriter& w) { w.set("tokenizer.ggml.merges", gguf::Value::string_array({"a zz"})); });
  }, "not in the vocabulary");
  expect_error([] {
    load_small_gguf([](gguf::GgufWriter& w) { w.set("tokenizer.ggml.eos_token_id", gguf::Value::u32(400)); });
  }, "eos");
}

TEST(TokenizerGguf, MissingTokenizerKeysAreAnError) {
  gguf::GgufWriter writer;
  writer.set("general.architecture", gguf::Value::string("llama"));
  const fs::path path = temp_path("nokeys");
  writer.write(path.string());
  expect_error([&] { Tokenizer::load(path.string()); }, "tokenizer.ggml.model");
  fs::remove(path);
}

}  // namespace
}  // namespace tandem
