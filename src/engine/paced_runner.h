// A ModelRunner that hands everything to another and waits a fixed time
// before each step. Tests that act on a reply mid-stream (stop, cancel, a
// client or server that goes away) use it to make the small demo model's
// replies last long enough, however loaded the machine; `serve` wraps its
// runner in one when TANDEM_TEST_STEP_DELAY_MS is set.
#pragma once

#include <chrono>
#include <span>
#include <thread>
#include <vector>

#include "engine/model_runner.h"

namespace tandem {

class PacedRunner : public ModelRunner {
 public:
  PacedRunner(ModelRunner& inner, std::chrono::microseconds delay) : inner_(inner), delay_(delay) {}

  const ModelConfig& config() const override { return inner_.config(); }
  const std::vector<float>& forward(std::span<const SequenceChunk> chunks) override {
    std::this_thread::sleep_for(delay_);
    return inner_.forward(chunks);
  }
  std::span<const int32_t> row_tokens() const override { return inner_.row_tokens(); }
  bool samples_rows() const override { return inner_.samples_rows(); }
  void idle() override { inner_.idle(); }
  int64_t max_context() const override { return inner_.max_context(); }
  BlockAllocator& block_allocator() override { return inner_.block_allocator(); }
  int64_t block_size() const override { return inner_.block_size(); }
  uint64_t weight_bytes_per_step() const override { return inner_.weight_bytes_per_step(); }

 private:
  ModelRunner& inner_;
  std::chrono::microseconds delay_;
};

}  // namespace tandem
