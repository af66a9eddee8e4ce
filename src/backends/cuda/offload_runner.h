// A model larger than the GPU budget: its first layers (with the embedding)
// run on the GPU, the rest (with the final norm and LM head) on the CPU
// engine. Each step runs the GPU part, copies the hidden states of its last
// layer to pinned host memory, and hands them to the CPU part. Both parts
// keep the KV cache of their own layers under the same block numbers, so the
// scheduler's one BlockAllocator (the GPU part's) serves both. No CUDA types
// appear here.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "backends/cuda/cuda_model_runner.h"
#include "common/thread_pool.h"
#include "engine/model_runner.h"
#include "models/model_file.h"

namespace tandem {

struct OffloadOptions {
  // The GPU part's options: device, block size, context, quantization, and
  // gpu_memory_bytes, its budget (0: 90% of the GPU). kv_blocks 0: as many
  // as fit both the GPU budget and the CPU budget.
  CudaRunnerOptions gpu;
  // Layers [0, gpu_layers) run on the GPU; 0: as many as fit the budget
  // with the KV cache of one full-context sequence.
  int64_t gpu_layers = 0;
  // Host memory for the CPU part: its weights (mapped from the file) and the
  // KV cache of its layers. 0: half the machine's memory.
  uint64_t cpu_memory_bytes = 0;
};

// Where an offloaded model goes, computed before any allocation.
struct OffloadPlan {
  int64_t n_layers = 0;
  int64_t gpu_layers = 0;
  CudaMemoryPlan gpu;              // the GPU part: embedding + layers [0, gpu_layers)
  uint64_t cpu_budget_bytes = 0;
  uint64_t cpu_weight_bytes = 0;   // layers [gpu_layers, n_layers), final norm, LM head
  uint64_t cpu_kv_bytes_per_block = 0;
  std::string describe() const;    // one line per device
};

// Throws tandem::Error with the numbers when not even one layer fits the
// GPU budget, when an explicit gpu_layers does not fit, or when the CPU part
// does not fit its budget.
OffloadPlan plan_offload(const ModelFile& model, const OffloadOptions& options, uint64_t gpu_total_bytes);

class OffloadRunner : public ModelRunner {
 public:
  // `model` (its mapping) and `pool` must outlive the runner.
  OffloadRunner(const ModelFile& model, ThreadPool& pool, const OffloadOptions& options);
  ~OffloadRunner() override;

  const ModelConfig& config() const override;
  const std::vector<float>& forward(std::span<const SequenceChunk> chunks) override;
  int64_t max_context() const override;
  BlockAllocator& block_allocator() override;
  int64_t block_size() const override;
  uint64_t weight_bytes_per_step() const override;
  const OffloadPlan& plan() const;

  // Wall time spent in each part since construction (or the last reset).
  struct Timing {
    double gpu_ms = 0;  // the GPU part and the hand-over to the host
    double cpu_ms = 0;  // the CPU part
    int64_t steps = 0;
  };
  const Timing& timing() const;
  void reset_timing();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Total memory of GPU `device`, in bytes.
uint64_t cuda_device_memory_bytes(int device);

}  // namespace tandem
