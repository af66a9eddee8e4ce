// prefetch_weights on the demo model: it covers every tensor byte once,
// reports progress per chunk, stops when asked, and honours the test throttle.
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>

#include "models/weight_prefetch.h"

namespace tandem {
namespace {

const std::string kDemo = std::string(TANDEM_SOURCE_DIR) + "/models/demo/demo-q8_0.gguf";

TEST(WeightPrefetch, TouchesEveryTensorByteOnce) {
  auto model = ModelFile::open(kDemo);
  uint64_t tensor_sum = 0;
  for (const TensorRef& t : model->tensors()) tensor_sum += t.n_bytes;
  // GGUF tensors do not overlap, so the merged ranges add up to the tensors.
  EXPECT_EQ(weight_bytes(*model), tensor_sum);
  EXPECT_LE(tensor_sum, std::filesystem::file_size(kDemo));

  LoadProgress progress;
  std::vector<uint64_t> seen;  // bytes_done at each stop check
  PrefetchOptions options;
  options.chunk_bytes = 1 << 20;
  const bool finished = prefetch_weights(*model, progress, [&] {
    seen.push_back(progress.bytes_done.load());
    return false;
  }, options);
  EXPECT_TRUE(finished);
  EXPECT_EQ(progress.bytes_total.load(), tensor_sum);
  EXPECT_EQ(progress.bytes_done.load(), tensor_sum);
  // Checked once per chunk, progress rising: a 13 MB model in 1 MiB chunks.
  ASSERT_GE(seen.size(), tensor_sum >> 20);
  EXPECT_EQ(seen.front(), 0u);
  for (size_t i = 1; i < seen.size(); ++i) EXPECT_GT(seen[i], seen[i - 1]);
}

TEST(WeightPrefetch, StopsWhenAsked) {
  auto model = ModelFile::open(kDemo);
  LoadProgress progress;
  PrefetchOptions options;
  options.chunk_bytes = 1 << 20;
  int checks = 0;
  EXPECT_FALSE(prefetch_weights(*model, progress, [&] { return ++checks > 3; }, options));
  EXPECT_EQ(checks, 4);
  EXPECT_GT(progress.bytes_done.load(), 0u);
  EXPECT_LE(progress.bytes_done.load(), uint64_t{3} << 20);
  EXPECT_LT(progress.bytes_done.load(), progress.bytes_total.load());
}

TEST(WeightPrefetch, ThrottleSlowsItDown) {
  auto model = ModelFile::open(kDemo);
  LoadProgress progress;
  PrefetchOptions options;
  options.chunk_bytes = 1 << 20;
  options.max_bytes_per_s = static_cast<double>(weight_bytes(*model)) / 0.4;  // about 0.4 s in all
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_TRUE(prefetch_weights(*model, progress, nullptr, options));
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_GE(s, 0.39);
}

}  // namespace
}  // namespace tandem
