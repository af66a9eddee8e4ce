// How many GPUs a model is spread over: tensor parallelism (each layer's
// matrices split over `tensor_parallel` GPUs) times pipeline parallelism
// (the layers cut into `pipeline_stages` contiguous ranges). Read from the
// serve config keys "tensor_parallel", "pipeline_stages", "micro_batch_size"
// and the flags --tensor-parallel / --pipeline-parallel.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

namespace tandem::parallel {

struct ParallelConfig {
  int64_t tensor_parallel = 1;   // GPUs sharing each layer
  int64_t pipeline_stages = 1;   // contiguous layer ranges, one GPU group each
  int64_t micro_batch_size = 0;  // sequences per pipeline micro-batch; 0: batch split evenly over stages

  int64_t world_size() const { return tensor_parallel * pipeline_stages; }
  bool is_single_device() const { return world_size() == 1; }
};

// Largest values accepted; far beyond any single host, small enough that a
// typo is caught early.
inline constexpr int64_t kMaxTensorParallel = 64;
inline constexpr int64_t kMaxPipelineStages = 256;

// True for "tensor_parallel", "pipeline_stages", "micro_batch_size".
bool is_parallel_config_key(std::string_view key);
// Applies one of those keys. Throws tandem::Error naming the key on a wrong
// type or a value out of range.
void apply_parallel_config_key(const std::string& key, const nlohmann::json& value, ParallelConfig& config);
// Range checks that need no model: tensor_parallel in [1, 64], pipeline_stages
// in [1, 256], micro_batch_size in [0, batch_size]. Throws tandem::Error.
void validate_parallel_config(const ParallelConfig& config, int64_t batch_size);

// "tensor_parallel 2 x pipeline_stages 2 = 4 GPUs"
std::string describe(const ParallelConfig& config);

}  // namespace tandem::parallel
