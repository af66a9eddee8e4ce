// One model over the GPUs of this host: tensor_parallel x pipeline_stages
// ranks, one thread per GPU, each a CudaModelRunner over its shards
// (parallel::RankModel) joined to the others by NCCL (NcclCommunicator).
// Across hosts, node 0 sends each step's plan to the other nodes over TCP
// (parallel::NodeLink) and NCCL joins all ranks.
// The engine sees one ModelRunner: forward() hands the step to every rank,
// pipeline stages take it in micro-batches so that they overlap, and the
// last stage's tensor rank 0 returns the logits. Built only with NCCL
// (TANDEM_HAVE_NCCL); this header holds no CUDA types.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "backends/cuda/cuda_model_runner.h"
#include "engine/model_runner.h"
#include "models/model_file.h"
#include "parallel/node_link.h"
#include "parallel/parallel_config.h"
#include "parallel/parallel_plan.h"

namespace tandem {

struct ParallelRunnerOptions {
  parallel::ParallelConfig parallel;
  // Per GPU. gpu.device is ignored: global rank r runs on devices[r].
  // kv_blocks 0: as many as fit the GPU with the least room.
  CudaRunnerOptions gpu;
  std::vector<int> devices;  // this node's ranks in order -> GPU; empty: GPUs 0, 1, ...
  // Several hosts: the world splits evenly over link->nnodes(), node n
  // running global ranks [n * L, (n + 1) * L) with L = world / nnodes. Node 0
  // runs forward(); the others run follow(). Null: one host.
  std::shared_ptr<parallel::NodeLink> link;
  // One host: a step whose ranks have not all finished within this long is
  // given up (an error naming the ranks still running; the runner then
  // refuses further steps). 0: no limit. Several hosts take
  // NodeConfig::node0_silence instead, and also give a step up at once
  // when a node they wait on closes its link (parallel::StepWatch).
  std::chrono::milliseconds step_limit{0};
};

class ParallelCudaRunner : public ModelRunner {
 public:
  // Plans the split (parallel::plan_parallel: refuses, with the numbers,
  // models that do not divide), then starts one thread per GPU, joins the
  // NCCL cliques and uploads each rank's shards. Throws tandem::Error when
  // there are fewer GPUs than ranks, or a rank fails to load.
  ParallelCudaRunner(const ModelFile& model, const ParallelRunnerOptions& options);
  ~ParallelCudaRunner() override;

  const ModelConfig& config() const override;
  // Every rank runs the step; chunks split into micro-batches of
  // micro_batch_size sequences (0: spread over the stages). Logits as
  // ModelRunner::forward promises.
  const std::vector<float>& forward(std::span<const SequenceChunk> chunks) override;
  // One host: the rank that holds the logits picks greedy and sampled rows'
  // tokens on its GPU (CudaModelRunner::row_tokens); a step of nothing
  // else copies no logits. Across hosts the logits travel to node 0 and
  // the host samples.
  std::span<const int32_t> row_tokens() const override;
  bool samples_rows() const override;
  // Node 0 of several: sends the other nodes a heartbeat when it has sent
  // them nothing for a quarter of NodeConfig::node0_silence.
  void idle() override;
  int64_t max_context() const override;
  BlockAllocator& block_allocator() override;
  int64_t block_size() const override;
  // Weight bytes every GPU reads in one step, summed over the GPUs.
  uint64_t weight_bytes_per_step() const override;

  const parallel::ParallelPlan& plan() const;
  // On a node other than 0: runs node 0's steps as they come (its forward()
  // calls), until node 0's runner is destroyed. Throws tandem::Error when
  // the link to node 0 breaks, when node 0 sends nothing (no step, no
  // heartbeat) for NodeConfig::node0_silence, or when a step runs that
  // long (node 0 or another node hangs mid-step). After such an error the
  // ranks' NCCL communicators may not tear down while node 0 is stopped:
  // a process that follows should exit without destroying the runner
  // (`serve` does).
  void follow();
  // One line per GPU: "rank 1 (stage 0, tensor rank 1) on GPU 1: <memory plan>".
  std::vector<std::string> describe_ranks() const;
  // This node's host time a step since reset_rank_timing(), one line per
  // GPU: from the step's post to the rank's job starting on its thread,
  // then its runner's phases (CudaModelRunner::HostTiming, summed over the
  // step's micro-batches; "after" is the runner's own wait, which only the
  // rank holding the logits makes). `perf` prints it.
  std::vector<std::string> describe_rank_timing() const;
  void reset_rank_timing();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace tandem
