// tandem-server serve's settings: a JSON config file (the keys of the design
// document) overridden by command-line flags. Every value is checked at
// start-up; an error names the key and says what is allowed.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "parallel/parallel_config.h"

namespace tandem::server {

struct MemoryBudget {
  uint64_t cpu_bytes = 0;  // 0: no limit given
  uint64_t gpu_bytes = 0;
};

struct ServerConfig {
  std::string model_path;
  // "auto": the GPU when there is one, with as many layers as fit its budget
  // (the rest on the CPU); "cpu"; "gpu": every layer on the GPU, or an error;
  // "layers": the config gave a list, one "gpu" or "cpu" per layer, GPU
  // layers first, counted below.
  std::string device_map = "auto";
  int64_t device_map_gpu_layers = 0, device_map_cpu_layers = 0;
  MemoryBudget max_memory;
  int64_t context_window = 4096;
  int64_t batch_size = 4;
  // Tokens per engine step (decodes plus prompt chunks); 0: 1024 on the GPU,
  // 256 on the CPU (see docs/SERVER.md).
  int64_t step_tokens = 0;
  std::string host = "127.0.0.1";
  int port = 8765;
  int64_t max_queued_requests = 64;
  std::string api_key;       // empty: no authentication
  std::string api_key_file;  // read at validation; its first line is the key
  double request_timeout_s = 0;  // 0: no per-request timeout
  int threads = 0;               // engine CPU threads; 0: all cores
  int http_threads = 2;          // io_context threads
  parallel::ParallelConfig parallel;  // tensor_parallel, pipeline_stages, micro_batch_size
};

// "16GB", "512MiB", "1.5 GiB", "1024" (bytes). Decimal units (KB, MB, GB, TB)
// are powers of 1000, binary units (KiB, MiB, GiB, TiB) of 1024. Throws
// tandem::Error naming `key` when the text is not a size.
uint64_t parse_memory_size(const std::string& text, const std::string& key);

// Applies the keys of a config document onto `config`. Throws tandem::Error
// naming the key on an unknown key, a wrong type or an impossible value.
void apply_config_json(const nlohmann::json& doc, ServerConfig& config);
// Reads and applies a config file; errors name the file too.
void apply_config_file(const std::string& path, ServerConfig& config);

// Final checks after flags are applied (ranges, device_map, key file).
// Reads api_key_file into api_key. Throws tandem::Error naming the key.
void validate_config(ServerConfig& config);

}  // namespace tandem::server
