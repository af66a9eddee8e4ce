// Loader errors, hand-built tokenizers that pin down single rules, the public
// API on the real vocabularies, NFC, and concurrent encoding.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <thread>

#include "common/error.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/tokenizer_json.h"
#include "tokenizer/bpe_tokenizer.h"
#include "tokenizer/unicode_nfc.h"
#include "tokenizer/utf8.h"
#include "tokenizer_test_util.h"

namespace tandem {
namespace {

namespace fs = std::filesystem;

std::unique_ptr<Tokenizer> from_json(const std::string& json, const std::string& config = "") {
  return std::make_unique<tok::BpeTokenizer>(tok::spec_from_tokenizer_json_text(json, config, "test.json"));
}

// Expects `fn` to throw tandem::Error whose message contains `needle`.
template <typename Fn>
void expect_error(Fn fn, const std::string& needle) {
  try {
    fn();
    ADD_FAILURE() << "no error; expected one mentioning '" << needle << "'";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

// A tiny byte-level tokenizer: vocabulary of single bytes a..e plus merges.
std::string tiny_byte_level(const std::string& merges, bool ignore_merges = false,
                            const std::string& added = "[]") {
  return R"({"added_tokens": )" + added + R"(,
    "normalizer": null,
    "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "use_regex": true},
    "post_processor": null, "decoder": {"type": "ByteLevel"},
    "model": {"type": "BPE", "ignore_merges": )" + (ignore_merges ? "true" : "false") + R"(,
      "vocab": {"a": 0, "b": 1, "c": 2, "Ġ": 3, "ab": 4, "abc": 5, "Ġa": 6, "bc": 7, "<x>": 8},
      "merges": )" + merges + "}}";
}

TEST(TokenizerLoad, MissingFilesAreErrors) {
  expect_error([] { Tokenizer::from_hf_files("/nonexistent/tokenizer.json", ""); }, "/nonexistent/tokenizer.json");
  expect_error([] { Tokenizer::load("/nonexistent/model"); }, "/nonexistent/model");
  const fs::path dir = fs::temp_directory_path() / "tandem_tokenizer_empty_dir";
  fs::create_directories(dir);
  expect_error([&] { Tokenizer::load(dir.string()); },
               "no tokenizer.json in " + dir.string() + " and it is not a GGUF file");
  fs::remove_all(dir);
}

TEST(TokenizerLoad, MalformedJsonIsAnError) {
  expect_error([] { from_json("{\"model\": "); }, "not valid JSON");
  expect_error([] { from_json("[1, 2]"); }, "expected a JSON object");
  expect_error([] { from_json("{}"); }, "missing field 'model'");
  expect_error([] { from_json(R"({"model": {"type": "BPE", "vocab": [], "merges": []}})"); }, "model.vocab");
  expect_error([] { from_json(R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": [3]}})"); }, "model.merges");
  expect_error([] { from_json(R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": ["a b"]}})"); },
               "not in the vocabulary");
  expect_error([] { from_json(R"({"model": {"type": "BPE", "vocab": {"a": -4}, "merges": []}})"); }, "not a valid id");
}

TEST(TokenizerLoad, UnknownComponentTypesAreNamed) {
  expect_error([] { from_json(R"({"model": {"type": "Unigram", "vocab": []}})"); }, "'Unigram'");
  expect_error([] { from_json(R"({"model": {"type": "WordPiece", "vocab": {}}})"); }, "'WordPiece'");
  const std::string model = R"("model": {"type": "BPE", "vocab": {"a": 0}, "merges": []})";
  expect_error([&] { from_json(R"({"normalizer": {"type": "NFKD"}, )" + model + "}"); }, "'NFKD'");
  expect_error([&] { from_json(R"({"normalizer": {"type": "Precompiled"}, )" + model + "}"); }, "'Precompiled'");
  expect_error([&] { from_json(R"({"pre_tokenizer": {"type": "BertPreTokenizer"}, )" + model + "}"); },
               "'BertPreTokenizer'");
  expect_error([&] { from_json(R"({"decoder": {"type": "WordPiece"}, )" + model + "}"); }, "'WordPiece'");
  expect_error([&] { from_json(R"({"post_processor": {"type": "Mystery"}, )" + model + "}"); }, "'Mystery'");
  expect_error([&] {
    from_json(R"({"pre_tokenizer": {"type": "Split", "pattern": {"Regex": "(unclosed"}, "behavior": "Isolated"}, )" +
              model + "}");
  }, "(unclosed");
}

TEST(TokenizerBpe, MergesAsStringsAndPairsAgree) {
  const auto strings = from_json(tiny_byte_level(R"(["a b", "ab c", "Ġ a", "b c"])"));
  const auto pairs = from_json(tiny_byte_level(R"([["a", "b"], ["ab", "c"], ["Ġ", "a"], ["b", "c"]])"));
  for (const char* text : {"abc", " abc", "bcab", "cba"}) {
    EXPECT_EQ(strings->encode(text), pairs->encode(text)) << text;
  }
  EXPECT_EQ(strings->encode("abc"), (std::vector<int32_t>{5}));
  // "bc" ranks below "ab": a+b merges first, then ab+c.
  EXPECT_EQ(strings->encode("bcab"), (std::vector<int32_t>{7, 4}));
  EXPECT_EQ(strings->kind_name(), "byte-level BPE");
}

TEST(TokenizerBpe, MergeRankDecidesOverPosition) {
  // With "b c" ranked first, "abc" becomes a + bc (no merge makes "abc" from those).
  const auto t = from_json(tiny_byte_level(R"(["b c", "a b", "ab c"])"));
  EXPECT_EQ(t->encode("abc"), (std::vector<int32_t>{0, 7}));
}

TEST(TokenizerBpe, IgnoreMergesTakesWholeWords) {
  // "abc" is in the vocabulary but no merge reaches it.
  EXPECT_EQ(from_json(tiny_byte_level(R"(["b c"])", false))->encode("abc"), (std::vector<int32_t>{0, 7}));
  EXPECT_EQ(from_json(tiny_byte_level(R"(["b c"])", true))->encode("abc"), (std::vector<int32_t>{5}));
}

TEST(TokenizerBpe, AddedTokenStripFlags) {
  const std::string added_plain = R"([{"id": 8, "content": "<x>", "special": true, "lstrip": false, "rstrip": false}])";
  const std::string added_strip = R"([{"id": 8, "content": "<x>", "special": true, "lstrip": true, "rstrip": true}])";
  const auto plain = from_json(tiny_byte_level(R"(["a b"])", false, added_plain));
  const auto strip = from_json(tiny_byte_level(R"(["a b"])", false, added_strip));
  EXPECT_EQ(plain->encode("a <x> b"), (std::vector<int32_t>{0, 3, 8, 3, 1}));
  EXPECT_EQ(strip->encode("a <x> b"), (std::vector<int32_t>{0, 8, 1}));
  EXPECT_TRUE(plain->is_special(8));
  EXPECT_FALSE(plain->is_special(0));
  EXPECT_EQ(plain->decode(std::vector<int32_t>{0, 8, 1}, true), "ab");
  EXPECT_EQ(plain->decode(std::vector<int32_t>{0, 8, 1}, false), "a<x>b");
}

TEST(TokenizerBpe, BadIdsInDecodeAreErrors) {
  const auto t = from_json(tiny_byte_level(R"(["a b"])"));
  expect_error([&] { t->decode(std::vector<int32_t>{0, 999}); }, "999");
  expect_error([&] { t->decode(std::vector<int32_t>{-1}); }, "-1");
  expect_error([&] { t->token_text(42); }, "42");
}

TEST(TokenizerBpe, MetaspacePreTokenizerAndDecoder) {
  const auto t = from_json(R"({
    "pre_tokenizer": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always", "split": true},
    "decoder": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always"},
    "model": {"type": "BPE", "vocab": {"▁": 0, "a": 1, "b": 2, "▁a": 3, "▁ab": 4}, "merges": ["▁ a", "▁a b"]}})");
  EXPECT_EQ(t->kind_name(), "SentencePiece BPE");
  EXPECT_EQ(t->encode("ab a"), (std::vector<int32_t>{4, 3}));
  EXPECT_EQ(t->decode(std::vector<int32_t>{4, 3}), "ab a");
}

TEST(TokenizerNfc, ComposesAndReorders) {
  EXPECT_EQ(tok::nfc_normalize("e\xCC\x81"), "\xC3\xA9");                       // e + acute -> é
  EXPECT_EQ(tok::nfc_normalize("\xE1\x84\x80\xE1\x85\xA1\xE1\x86\xA8"), "각");   // Hangul L V T
  EXPECT_EQ(tok::nfc_normalize("\xE2\x84\xAB"), "\xC3\x85");                    // Angstrom sign -> Å
  // q + dot below (220) + dot above (230) in either order: same NFC (no composite for q).
  EXPECT_EQ(tok::nfc_normalize("q\xCC\x87\xCC\xA3"), "q\xCC\xA3\xCC\x87");
  // s + dot below + dot above composes fully to ṩ.
  EXPECT_EQ(tok::nfc_normalize("s\xCC\x87\xCC\xA3"), "\xE1\xB9\xA9");
  EXPECT_EQ(tok::nfc_normalize("\xCC\x81"), "\xCC\x81");  // lone mark unchanged
  EXPECT_EQ(tok::nfc_normalize("abc\xFF" "e\xCC\x81"), "abc\xFF\xC3\xA9");  // bad byte passes through
}

// NFC as the JavaScript runtime of the reference computes it
// (tokenizer_reference_nfc.jsonl, written by reference_ids.mjs).
TEST(TokenizerNfc, MatchesReferenceRuntime) {
  const auto cases = test::read_jsonl(test::tokenizer_test_dir() / "tokenizer_reference_nfc.jsonl");
  ASSERT_GE(cases.size(), 300u);
  size_t changed = 0;
  for (const auto& c : cases) {
    const std::string text = c.at("text"), nfc = c.at("nfc");
    EXPECT_EQ(tok::nfc_normalize(text), nfc) << nlohmann::json(text).dump();
    changed += text != nfc;
  }
  EXPECT_GT(changed, 30u);  // the cases exercise composition, not just pass-through
}

TEST(TokenizerUtf8, RepairAndTail) {
  EXPECT_TRUE(tok::is_valid_utf8("héllo 😀"));
  EXPECT_FALSE(tok::is_valid_utf8("\xC0\xAF"));
  EXPECT_FALSE(tok::is_valid_utf8("\xED\xA0\x80"));  // surrogate
  EXPECT_EQ(tok::repair_utf8("a\xF0\x9F\x98" "b"), "a\xEF\xBF\xBD" "b");  // one U+FFFD per maximal subpart
  EXPECT_EQ(tok::incomplete_utf8_tail("a\xF0\x9F\x98"), 3u);
  EXPECT_EQ(tok::incomplete_utf8_tail("a\xF0\x9F\x98\x80"), 0u);
  EXPECT_EQ(tok::incomplete_utf8_tail("a\x80"), 0u);
}

class RealTokenizer : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (!test::reference_available(GetParam())) GTEST_SKIP() << "reference tokenizer files missing";
    tokenizer_ = Tokenizer::load(test::reference_models_dir(GetParam()).string());
  }
  std::unique_ptr<Tokenizer> tokenizer_;
};

TEST_P(RealTokenizer, SpecialTokensAndIds) {
  const Tokenizer& t = *tokenizer_;
  const std::string name = GetParam();
  if (name == "qwen3") {
    EXPECT_EQ(t.kind_name(), "byte-level BPE");
    EXPECT_FALSE(t.bos_id().has_value());
    EXPECT_EQ(t.eos_text(), "<|im_end|>");
    EXPECT_EQ(t.vocab_size(), 151669u);
    const auto stops = t.stop_ids();
    EXPECT_NE(std::find(stops.begin(), stops.end(), *t.token_id("<|endoftext|>")), stops.end());
    EXPECT_TRUE(t.is_special(*t.token_id("<|im_start|>")));
    EXPECT_FALSE(t.is_special(*t.token_id("<think>")));
    EXPECT_EQ(t.token_text(*t.token_id("Ġthe")), "Ġthe");
  } else if (name == "llama3") {
    EXPECT_EQ(t.kind_name(), "byte-level BPE");
    EXPECT_EQ(t.bos_text(), "<|begin_of_text|>");
    EXPECT_EQ(t.bos_id(), 128000);
    const auto stops = t.stop_ids();
    EXPECT_NE(std::find(stops.begin(), stops.end(), 128009), stops.end());  // <|eot_id|>
  } else {
    EXPECT_EQ(t.kind_name(), "SentencePiece BPE");
    EXPECT_EQ(t.bos_id(), 1);
    EXPECT_EQ(t.eos_id(), 2);
    EXPECT_EQ(t.bos_text(), "<s>");
    EXPECT_EQ(t.encode("hi").front(), 1);
    EXPECT_EQ(t.token_text(*t.token_id("<0x0A>")), "<0x0A>");
  }
  EXPECT_FALSE(t.token_id("definitely not a token \x01").has_value());
}

TEST_P(RealTokenizer, ConcurrentEncodeMatchesSerial) {
  const auto corpus = test::read_corpus();
  std::vector<std::vector<int32_t>> serial;
  for (const auto& s : corpus) serial.push_back(tokenizer_->encode(s));
  std::vector<std::thread> threads;
  std::vector<int> mismatches(4, 0);
  for (int k = 0; k < 4; ++k) {
    threads.emplace_back([&, k] {
      for (size_t i = 0; i < corpus.size(); ++i) {
        const size_t j = (i * 7 + k * 13) % corpus.size();  // each thread in its own order
        if (tokenizer_->encode(corpus[j]) != serial[j]) ++mismatches[k];
      }
    });
  }
  for (auto& th : threads) th.join();
  for (int k = 0; k < 4; ++k) EXPECT_EQ(mismatches[k], 0) << "thread " << k;
}

INSTANTIATE_TEST_SUITE_P(Reference, RealTokenizer, ::testing::ValuesIn(test::reference_tokenizer_names()),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace tandem
