// The CUDA backend's model runner for the llama family (llama, qwen2, qwen3):
// weights in GPU memory in their file's type (Q8_0 repacked), f32
// activations, a paged f16 KV cache in GPU memory whose blocks the
// scheduler's BlockAllocator hands out. No CUDA types appear here, so CPU-only
// code can hold one.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "engine/kv_cache.h"
#include "engine/model_runner.h"
#include "models/model_file.h"

namespace tandem {
namespace parallel {
class Communicator;
struct RankModel;
}  // namespace parallel
namespace cuda {
class TensorReduce;
}  // namespace cuda

// Weights quantized at load time (from any file type): int8 or FP8 E4M3,
// one f32 scale per output row (W8A16: activations stay 16/32-bit).
enum class GpuQuantization { None, Int8, Fp8 };

// The paged KV cache's element type: f16, or FP8 E4M3 of the values
// themselves (no scales; saturated at +-448), half the bytes: twice the
// tokens in flight, and half the bytes a decoded token's attention reads.
enum class GpuKvCache { F16, Fp8 };
const char* gpu_kv_cache_name(GpuKvCache kv);  // "f16", "fp8"

struct CudaRunnerOptions {
  int device = 0;
  int64_t block_size = 16;
  int64_t max_context = 0;       // 0: the model's context length
  int64_t kv_blocks = 0;         // 0: as many as fit the GPU budget after the weights
  uint64_t gpu_memory_bytes = 0; // 0: 90% of the GPU's memory
  bool cuda_graphs = true;       // replay decode steps as captured CUDA graphs
  GpuQuantization quantize = GpuQuantization::None;
  GpuKvCache kv_cache = GpuKvCache::F16;
  // Every generated token through the batch-invariant GEMV, and attention
  // in one block per (token, head). Off: decode steps of more than 4
  // sequences with 16/32-bit weights use the tensor-core GEMM, and small
  // batches split long contexts across blocks (faster; a sequence's bits may
  // then depend on its batch).
  bool batch_invariant = false;
  // Tensor parallelism with one stage: the residual stream, which the
  // all-reduces sum, in the group's shared memory (an NCCL symmetric window)
  // where the communicator has some. Off: ordinary device memory.
  bool shared_all_reduce = true;
  // Tensor parallelism over two GPUs with one stage, in one process, where
  // they reach each other's memory: steps of up to 256 tokens end each attention
  // and FFN block with one kernel that sums the ranks' parts and applies the
  // next norm (parallel::NcclTensorReduce over NCCL's device API), instead
  // of an NCCL all-reduce and a norm kernel. On by default; off, or where
  // it cannot be used: as shared_all_reduce says. Read by
  // ParallelCudaRunner.
  bool fused_all_reduce = true;
  // Time cuBLAS's and cuBLASLt's GEMM algorithms on the model's 16-bit
  // matrices at load (about 2 s for an 8B shape) and take the fastest for
  // each token-count bucket (cuda::Gemm::tune). Not with batch_invariant,
  // whose answers must not depend on a timing.
  bool tune_gemm = true;
  // The largest step the caller will run (tokens, and rows that want
  // logits): the memory plan reserves their scratch (activations, logits,
  // GEMM inputs) before it gives the rest to the KV cache. 0: 1024 tokens,
  // and as many rows. Larger steps still run; their scratch then grows into
  // memory outside the plan, if there is any.
  int64_t max_step_tokens = 0;
  int64_t max_logit_rows = 0;
  // Called while weights upload: (bytes done, bytes total).
  std::function<void(uint64_t, uint64_t)> on_load_progress;
};

// Decode steps of up to this many sequences replay captured CUDA graphs.
inline constexpr int64_t kCudaGraphMaxTokens = 64;

// What the runner will place on the GPU, computed before any allocation.
struct CudaMemoryPlan {
  uint64_t budget_bytes = 0;
  uint64_t weight_bytes = 0;
  uint64_t scratch_bytes = 0;  // step buffers for step_tokens / logit_rows, cuBLAS workspace (step_scratch_bytes)
  int64_t step_tokens = 0;     // the largest step planned for
  int64_t logit_rows = 0;
  uint64_t kv_bytes_per_block = 0;
  GpuKvCache kv_cache = GpuKvCache::F16;
  int64_t kv_blocks = 0;
  int64_t block_size = 0;
  int64_t max_context = 0;
  std::string describe() const;  // one line per item, for start-up logs
};

// Plans memory for `model` under `options` on a GPU with `gpu_total_bytes`.
// Throws tandem::Error with the numbers when the weights plus the KV cache of
// one full-context sequence do not fit the budget.
CudaMemoryPlan plan_cuda_memory(const ModelFile& model, const CudaRunnerOptions& options, uint64_t gpu_total_bytes);
// GPU scratch of steps of up to `tokens` tokens and `logit_rows` rows of
// logits for a model of this shape (one GPU's share of it in a parallel
// plan), with its fixed workspaces: what the memory plan reserves.
// tp_size: the tensor-parallel group of the rank (logits are gathered).
uint64_t step_scratch_bytes(const ModelConfig& config, GpuQuantization quantize, int64_t tokens, int64_t logit_rows,
                            int tp_size = 1);

// The same for a model given as its config and canonical tensors (one GPU's
// part of a parallel plan: parallel::RankModel).
CudaMemoryPlan plan_cuda_memory(const ModelConfig& config, const std::vector<TensorRef>& tensors,
                                const CudaRunnerOptions& options, uint64_t gpu_total_bytes, int tp_size = 1);

// How one GPU of a parallel plan reaches the others. The communicators queue
// their operations on `stream` (a cudaStream_t on options.device that the
// caller owns and keeps alive), which the runner adopts for all its work, so
// the all-reduces sit in stream order between the kernels (and inside the
// captured decode graphs).
struct CudaRankLinks {
  parallel::Communicator* tensor = nullptr;    // the stage's tensor-parallel group; rank = tensor rank
  parallel::Communicator* pipeline = nullptr;  // this tensor rank across stages; rank = stage (unused with one stage)
  void* stream = nullptr;
  // Tensor parallelism with one stage: the group's all-reduce fused with the
  // norm after it (cuda/tensor_reduce.h), for steps of up to
  // reduce->max_tokens() tokens; larger steps all-reduce on `tensor`. Null:
  // every step does. Queues on `stream` too.
  cuda::TensorReduce* reduce = nullptr;
  // Waits until `stream` is idle (for the logits copy and synchronize());
  // throws to give up (a failed peer). Null: cudaStreamSynchronize.
  std::function<void()> wait;
};

class CudaModelRunner : public ModelRunner {
 public:
  // Uploads the weights; keeps no reference to `model` afterwards.
  // Throws tandem::Error when there is no usable GPU, a weight's dtype has
  // no CUDA kernel, or the plan does not fit.
  CudaModelRunner(const ModelFile& model, const CudaRunnerOptions& options);
  // One GPU of a parallel plan: uploads the rank's shards (`rank` may be
  // dropped afterwards, but the source model's mapping must outlive the
  // constructor). Run steps with forward_shard.
  CudaModelRunner(const parallel::RankModel& rank, const CudaRunnerOptions& options, const CudaRankLinks& links);
  ~CudaModelRunner() override;

  // This rank's part of a step; every rank of the plan must call it with the
  // same chunks, each from its own thread. Stage 0 embeds the tokens, later
  // stages receive the hidden states from the stage before, tensor ranks
  // all-reduce after attn_output and ffn_down, the last stage gathers the
  // logits. Returns the logits (as forward does) on the rank that holds them,
  // the last stage's tensor rank 0, and an empty vector elsewhere. Leaves
  // each chunk's kv->n_tokens unchanged (the caller advances it once). The
  // queued work may still run when it returns, except on the logits' rank;
  // synchronize() waits for it.
  const std::vector<float>& forward_shard(std::span<const SequenceChunk> chunks);
  // Grows the step buffers for these chunks now. Growing frees and
  // allocates GPU memory, which waits for the GPU; a parallel rank does it
  // for all of a step's micro-batches before their collectives are queued.
  void reserve_shard(std::span<const SequenceChunk> chunks);
  // What reserve_shard grows the buffers to for these chunks. Every
  // buffer's size is a non-decreasing function of one field (or the larger
  // of such functions; never of a product of fields), so chunks whose
  // needs are all within the field-wise maximum of chunks reserved before
  // grow nothing. A new buffer must keep that so. Host-only.
  struct ShardNeeds {
    int64_t tokens = 0, rows = 0, meta_ints = 0;
    size_t sampling_bytes = 0;
    bool within(const ShardNeeds& o) const {
      return tokens <= o.tokens && rows <= o.rows && meta_ints <= o.meta_ints && sampling_bytes <= o.sampling_bytes;
    }
  };
  static ShardNeeds shard_needs(std::span<const SequenceChunk> chunks);
  void synchronize();
  // Grows the step buffers to the plan's largest step and captures the CUDA
  // graphs of pure decode steps of 1 to `max_sequences` sequences (at most
  // kCudaGraphMaxTokens, the plan's logits rows and the free KV blocks) by
  // running one such step of each size on borrowed KV blocks, given back
  // afterwards. Steps within the plan then replay these graphs instead of
  // capturing one the first time each batch size comes up (5-9 ms each on
  // an 8B model). Returns how many it captured: 0 with cuda_graphs off or on
  // a parallel rank (whose steps go through forward_shard). Resets the host
  // timing.
  int64_t capture_decode_graphs(int64_t max_sequences);
  // Decode graphs captured since load, those of capture_decode_graphs
  // included; a buffer that grows has all of them captured again.
  int64_t decode_graphs_captured() const;
  // Tensor parallel: whether the residual stream, which the all-reduces
  // sum, is in the group's shared memory (Communicator::shared_buffer).
  bool residual_in_shared_memory() const;
  // Tensor parallel: whether decode-sized steps take the fused all-reduce
  // and norm (CudaRankLinks::reduce).
  bool fused_reductions() const;

  const ModelConfig& config() const override;
  const std::vector<float>& forward(std::span<const SequenceChunk> chunks) override;
  // Computed when a chunk is argmax_only or carries a RowSampling
  // (cuda::sample_rows); when all do, the step copies back n_rows token ids
  // and no logits. A parallel rank: on the rank that holds the logits, after
  // forward_shard.
  std::span<const int32_t> row_tokens() const override;
  bool samples_rows() const override;
  int64_t max_context() const override;
  BlockAllocator& block_allocator() override;
  int64_t block_size() const override;
  uint64_t weight_bytes_per_step() const override;
  const CudaMemoryPlan& plan() const;
  // What the GEMM tuning chose, a line per matrix shape (empty when none
  // was tuned): the buckets won by a cuBLASLt algorithm, and the largest gain;
  // on a parallel rank also any shape whose GEMMs could not run ahead at
  // load (cuda::Gemm::warm).
  const std::vector<std::string>& gemm_tuning() const;

  // Where the host's time in forward() went, summed over the steps since
  // the last reset: building the step's metadata, queueing its kernels
  // (launches, or a graph's replay), and waiting for the GPU to finish.
  // Queueing close to the whole step with little waiting means the GPU
  // idles between launches: the step is bound by the host's launches.
  //
  // With time_gpu_steps(true) on one GPU and one stage, events on the
  // stream also give the GPU's side of each step after the first: `idle`
  // from the step before's results reaching the host to this step's start
  // on the stream, `upload` its metadata's copy, `run` from then to its
  // results reaching the host (kernels, token or logits copy). A step of
  // the host's time that is not the GPU's shows up as idle.
  struct HostTiming {
    int64_t steps = 0, graph_steps = 0;
    double prepare_ms = 0, enqueue_ms = 0, finish_ms = 0;
    int64_t timed_steps = 0;
    double gpu_idle_ms = 0, gpu_upload_ms = 0, gpu_run_ms = 0;
  };
  const HostTiming& host_timing() const;
  void reset_host_timing();
  // Records the events above (three a step; off by default).
  void time_gpu_steps(bool on);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// "NVIDIA H100 80GB HBM3 (sm_90, 79.1 GiB)" for each visible GPU; empty when none.
std::vector<std::string> describe_cuda_devices();
bool cuda_available();

}  // namespace tandem
