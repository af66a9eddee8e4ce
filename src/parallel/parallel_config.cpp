#include "parallel/parallel_config.h"

#include <limits>

#include "common/error.h"

namespace tandem::parallel {
namespace {

int64_t get_int(const nlohmann::json& v, const std::string& key) {
  check(v.is_number_integer() || v.is_number_unsigned(),
        "config key '" + key + "' must be an integer, got " + std::string(v.type_name()));
  check(!v.is_number_unsigned() || v.get<uint64_t>() <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max()),
        "config key '" + key + "' is too large");
  return v.get<int64_t>();
}

}  // namespace

bool is_parallel_config_key(std::string_view key) {
  return key == "tensor_parallel" || key == "pipeline_stages" || key == "micro_batch_size";
}

void apply_parallel_config_key(const std::string& key, const nlohmann::json& value, ParallelConfig& config) {
  const int64_t n = get_int(value, key);
  if (key == "tensor_parallel") {
    check(n >= 1 && n <= kMaxTensorParallel, "config key 'tensor_parallel' must be in [1, " +
                                                 std::to_string(kMaxTensorParallel) + "], got " + std::to_string(n));
    config.tensor_parallel = n;
  } else if (key == "pipeline_stages") {
    check(n >= 1 && n <= kMaxPipelineStages, "config key 'pipeline_stages' must be in [1, " +
                                                 std::to_string(kMaxPipelineStages) + "], got " + std::to_string(n));
    config.pipeline_stages = n;
  } else if (key == "micro_batch_size") {
    check(n >= 0, "config key 'micro_batch_size' must be 0 (auto) or positive, got " + std::to_string(n));
    config.micro_batch_size = n;
  } else {
    throw Error("internal: '" + key + "' is not a parallelism key");
  }
}

void validate_parallel_config(const ParallelConfig& c, int64_t batch_size) {
  check(c.tensor_parallel >= 1 && c.tensor_parallel <= kMaxTensorParallel,
        "config key 'tensor_parallel' (--tensor-parallel) must be in [1, " + std::to_string(kMaxTensorParallel) +
            "], got " + std::to_string(c.tensor_parallel));
  check(c.pipeline_stages >= 1 && c.pipeline_stages <= kMaxPipelineStages,
        "config key 'pipeline_stages' (--pipeline-parallel) must be in [1, " + std::to_string(kMaxPipelineStages) +
            "], got " + std::to_string(c.pipeline_stages));
  check(c.micro_batch_size >= 0 && c.micro_batch_size <= batch_size,
        "config key 'micro_batch_size' must be in [0, batch_size = " + std::to_string(batch_size) + "] (0: auto), got " +
            std::to_string(c.micro_batch_size));
}

std::string describe(const ParallelConfig& c) {
  return "tensor_parallel " + std::to_string(c.tensor_parallel) + " x pipeline_stages " +
         std::to_string(c.pipeline_stages) + " = " + std::to_string(c.world_size()) +
         (c.world_size() == 1 ? " GPU" : " GPUs");
}

}  // namespace tandem::parallel
