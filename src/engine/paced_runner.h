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

#include "engine/forwarding_runner.h"

namespace tandem {

class PacedRunner : public ForwardingRunner {
 public:
  PacedRunner(ModelRunner& inner, std::chrono::microseconds delay) : ForwardingRunner(inner), delay_(delay) {}

  const std::vector<float>& forward(std::span<const SequenceChunk> chunks) override {
    std::this_thread::sleep_for(delay_);
    return inner_.forward(chunks);
  }

 private:
  std::chrono::microseconds delay_;
};

}  // namespace tandem
