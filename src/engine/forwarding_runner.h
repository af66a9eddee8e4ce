// A ModelRunner that hands everything to another. Wrappers that change one
// thing (PacedRunner's wait before each step; tests' runners that gate,
// poison or count steps) derive from it and override only that.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "engine/model_runner.h"

namespace tandem {

class ForwardingRunner : public ModelRunner {
 public:
  explicit ForwardingRunner(ModelRunner& inner) : inner_(inner) {}

  const ModelConfig& config() const override { return inner_.config(); }
  const std::vector<float>& forward(std::span<const SequenceChunk> chunks) override { return inner_.forward(chunks); }
  std::span<const int32_t> row_tokens() const override { return inner_.row_tokens(); }
  bool samples_rows() const override { return inner_.samples_rows(); }
  void idle() override { inner_.idle(); }
  int64_t max_context() const override { return inner_.max_context(); }
  BlockAllocator& block_allocator() override { return inner_.block_allocator(); }
  int64_t block_size() const override { return inner_.block_size(); }
  uint64_t weight_bytes_per_step() const override { return inner_.weight_bytes_per_step(); }

 protected:
  ModelRunner& inner_;
};

}  // namespace tandem
