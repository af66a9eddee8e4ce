// Picks the backend a subcommand runs on: `--device auto|cpu|cuda[:N]`.
// auto takes the GPU when this build has the CUDA engine and a GPU is
// visible, else the CPU.
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "common/thread_pool.h"
#include "engine/model_runner.h"
#include "models/model_file.h"
#include "parallel/node_link.h"
#include "parallel/parallel_config.h"

namespace tandem::cli {

// RunnerRequest::gpu_layers: all layers on the GPU when they fit its budget,
// else as many as fit and the rest on the CPU; or all, or an error.
inline constexpr int64_t kGpuLayersAuto = -1;
inline constexpr int64_t kGpuLayersAll = std::numeric_limits<int64_t>::max();

struct RunnerRequest {
  std::string device = "auto";
  int64_t max_context = 0;        // 0: the model's
  int64_t block_size = 16;
  int64_t kv_blocks = 0;          // 0: CPU one full sequence; GPU what fits
  uint64_t gpu_memory_bytes = 0;  // 0: 90% of the GPU
  bool batch_invariant = false;   // GPU: every decode batch through the GEMV
  bool fused_all_reduce = true;  // tensor parallel: CudaRunnerOptions::fused_all_reduce
  bool cuda_graphs = true;        // GPU: replay decode steps as CUDA graphs (CudaRunnerOptions::cuda_graphs)
  bool tune_gemm = true;          // GPU: time GEMM algorithms at load (CudaRunnerOptions::tune_gemm)
  // Several GPUs of one host: a step not done in this long is given up
  // (ParallelRunnerOptions::step_limit; 0: none). Several hosts take
  // nodes.node0_silence instead.
  int64_t step_timeout_s = 0;
  int64_t max_step_tokens = 0;    // GPU: the largest engine step, planned for (0: 1024)
  int64_t max_logit_rows = 0;     // GPU: rows of logits a step may want (0: max_step_tokens)
  // One GPU: capture the CUDA graphs of decode steps of 1..N sequences at
  // load (CudaModelRunner::capture_decode_graphs; at most 64), for callers
  // that decode batches (serve: its batch size; perf: -b). 0: as steps come.
  int64_t capture_decode_graphs = 0;
  std::string quantize = "none";  // GPU: none, int8 or fp8 (weights quantized at load time)
  std::string kv_cache = "f16";   // GPU: the KV cache's element type, f16 or fp8 (E4M3)
  // GPU: layers [0, gpu_layers) on the GPU, the rest with the final norm and
  // LM head on the CPU engine (offload; see OffloadRunner), or one of the
  // constants above.
  int64_t gpu_layers = kGpuLayersAuto;
  uint64_t cpu_memory_bytes = 0;  // offload: host budget of the CPU part (0: half the machine's memory)
  std::function<void(uint64_t, uint64_t)> on_load_progress;  // GPU weight upload
  // More than one GPU: the model split over tensor_parallel x
  // pipeline_stages GPUs of this host (GPUs 0..world-1, or from cuda:N on).
  parallel::ParallelConfig parallel;
  // Several hosts (--nnodes ...): this node runs its share of the ranks.
  parallel::NodeConfig nodes;
};

struct Runner {
  std::unique_ptr<ModelRunner> runner;
  std::string device;       // "cpu", "cuda:0", or "cuda:0-3" for a parallel plan
  std::string description;  // e.g. "NVIDIA H100 80GB HBM3 (sm_90, 79.1 GiB)" or "cpu: 2 threads, avx2"
  std::string memory_plan;  // GPU plan, a line per GPU; empty on the CPU
  std::vector<std::string> gemm_tuning;  // one GPU: what the GEMM tuning chose, a line per matrix shape
  std::string decode_graphs;  // one GPU: the decode steps' CUDA graphs captured at load; empty when none
};

// Throws tandem::Error for an unknown device, or `cuda` in a build or on a
// machine without it.
Runner make_runner(const ModelFile& model, ThreadPool& pool, const RunnerRequest& request);

// On a node other than 0 of a multi-node plan: loads this node's ranks, then
// runs node 0's steps until node 0 stops. Throws tandem::Error as
// make_runner does, when the link to node 0 breaks, or when node 0 goes
// silent (NodeConfig::node0_silence). After a failure in the steps the
// runner is not torn down (its NCCL teardown would wait for the peers): the
// caller should exit the process.
void follow_node(const ModelFile& model, ThreadPool& pool, const RunnerRequest& request);

// Registers --quantize on a subcommand (none, int8, fp8).
void add_quantize_option(CLI::App& cmd, std::string& quantize);
// Registers --kv-cache-dtype on a subcommand (f16, fp8).
void add_kv_cache_option(CLI::App& cmd, std::string& kv_cache);
// Registers --gpu-layers on a subcommand.
void add_gpu_layers_option(CLI::App& cmd, int64_t& gpu_layers);

// Whether `auto` would pick the GPU.
bool gpu_engine_available();

}  // namespace tandem::cli
