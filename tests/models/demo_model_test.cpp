// The built-in demo model computes the function that was trained: its
// held-out loss in Tandem matches the loss the training script measured in
// PyTorch (models/demo/training_report.json), and it writes English.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "common/thread_pool.h"
#include "engine/cpu_model_runner.h"
#include "engine/generator.h"
#include "engine/perplexity.h"
#include "models/model_file.h"
#include "tokenizer/tokenizer.h"

namespace tandem {
namespace {

namespace fs = std::filesystem;
const fs::path kDemo = fs::path(TANDEM_SOURCE_DIR) / "models/demo";

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

class DemoModel : public ::testing::Test {
 protected:
  void SetUp() override {
    model_ = ModelFile::open((kDemo / "demo-q8_0.gguf").string());
    tokenizer_ = Tokenizer::load((kDemo / "demo-q8_0.gguf").string());
    report_ = nlohmann::json::parse(slurp(kDemo / "training_report.json"));
  }
  std::unique_ptr<ModelFile> model_;
  std::unique_ptr<Tokenizer> tokenizer_;
  nlohmann::json report_;
};

TEST_F(DemoModel, HeldOutLossMatchesTraining) {
  const std::vector<int32_t> ids = tokenizer_->encode(slurp(kDemo / "heldout.txt"), false);
  ThreadPool pool(2);
  CpuRunnerOptions o;
  o.max_context = report_["context"];
  CpuModelRunner runner(*model_, pool, o);
  const LossResult r = evaluate_loss(runner, ids, report_["context"]);
  // The same tokens were scored: tokenization agrees with the trainer's.
  EXPECT_EQ(r.predicted_tokens, report_["heldout_tokens_predicted"].get<int64_t>());
  const double q8 = report_["heldout_loss_q8_0"], bf16 = report_["heldout_loss_bf16"];
  std::printf("held-out loss: tandem q8_0 %.5f, pytorch q8_0 %.5f, pytorch bf16 %.5f\n", r.mean_nll, q8, bf16);
  EXPECT_LT(std::fabs(r.mean_nll - q8) / q8, 0.01);      // the same weights: within 1%
  EXPECT_LT(std::fabs(r.mean_nll - bf16) / bf16, 0.02);  // Q8_0 against BF16: within 2%
}

// compare_runners: two runners of the same model agree everywhere, and
// max_windows bounds the work.
TEST_F(DemoModel, CompareRunnersReportsAgreement) {
  const std::vector<int32_t> all = tokenizer_->encode(slurp(kDemo / "heldout.txt"), false);
  const std::vector<int32_t> ids(all.begin(), all.begin() + 200);
  ThreadPool pool(2);
  CpuRunnerOptions o;
  o.max_context = 64;
  CpuModelRunner a(*model_, pool, o), b(*model_, pool, o);
  const AgreementResult same = compare_runners(a, b, ids, 64);
  EXPECT_EQ(same.positions, 199);
  EXPECT_DOUBLE_EQ(same.top1_agreement, 1.0);
  EXPECT_EQ(same.max_abs_logit_diff, 0.0);
  const AgreementResult two = compare_runners(a, b, ids, 64, 2);
  EXPECT_EQ(two.positions, 128);  // at most two windows of 64
}

TEST_F(DemoModel, GreedyGenerationIsEnglish) {
  ThreadPool pool(2);
  CpuRunnerOptions o;
  o.max_context = 512;
  CpuModelRunner runner(*model_, pool, o);
  Generator gen(runner, tokenizer_.get());
  GenerateOptions go;
  go.sampling.temperature = 0;
  go.sampling.max_tokens = 48;
  const GenerationResult r = gen.generate(tokenizer_->encode("And the LORD said unto Moses,", false), go);
  std::printf("greedy: %s\n", r.text.c_str());
  std::istringstream words(r.text);
  std::string w;
  int total = 0, alphabetic = 0;
  std::set<std::string> common;
  const std::set<std::string> kCommon = {"the", "and", "of", "to", "a", "is", "unto", "he", "that", "in", "up", "go"};
  while (words >> w) {
    ++total;
    std::string letters;
    for (char c : w)
      if (std::isalpha(static_cast<unsigned char>(c))) letters += static_cast<char>(std::tolower(c));
    if (letters.size() + 2 >= w.size() && !letters.empty()) ++alphabetic;
    if (kCommon.count(letters)) common.insert(letters);
  }
  EXPECT_GE(total, 15);
  EXPECT_GE(alphabetic, total * 9 / 10) << r.text;
  EXPECT_GE(common.size(), 3u) << r.text;
}

}  // namespace
}  // namespace tandem
