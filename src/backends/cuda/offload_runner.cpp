#include "backends/cuda/offload_runner.h"

#include <cuda_runtime.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>

#include "backends/cuda/cuda_check.h"
#include "backends/cuda/device_buffer.h"
#include "common/error.h"
#include "engine/cpu_model_runner.h"
#include "parallel/communicator.h"
#include "parallel/parallel_plan.h"
#include "parallel/rank_model.h"

namespace tandem {
namespace {

constexpr uint64_t kGiB = uint64_t{1} << 30;

std::string gib(uint64_t bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f GiB", static_cast<double>(bytes) / static_cast<double>(kGiB));
  return buf;
}

uint64_t physical_memory_bytes() {
  const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
  return pages > 0 && page > 0 ? static_cast<uint64_t>(pages) * static_cast<uint64_t>(page) : 0;
}

// The GPU part's "send to the next stage": a copy of the hidden states into
// pinned host memory, queued on the part's stream (and so captured in its
// decode graphs). Steps of up to kCudaGraphMaxTokens tokens use one fixed buffer,
// so that the captured copies stay valid; larger steps use a second one that
// grows. Nothing else of a Communicator is used.
class HostHandoff : public parallel::Communicator {
 public:
  HostHandoff(cudaStream_t stream, int64_t hidden) : stream_(stream) {
    small_.resize(static_cast<size_t>(kCudaGraphMaxTokens * hidden) * sizeof(float));
  }
  int rank() const override { return 0; }
  int world_size() const override { return 2; }
  void all_reduce_sum(float*, int64_t) override { throw Error("internal: an offloaded model has no tensor ranks"); }
  void all_gather(const float*, int64_t, float*) override {
    throw Error("internal: an offloaded model has no tensor ranks");
  }
  void recv(float*, int64_t, int) override { throw Error("internal: the GPU part of an offloaded model comes first"); }
  void send(const float* data, int64_t n, int peer) override {
    check(peer == 1, "internal: the GPU part hands over to part 1");
    TANDEM_CUDA_CHECK(cudaMemcpyAsync(buffer_for(n), data, static_cast<size_t>(n) * sizeof(float),
                                      cudaMemcpyDeviceToHost, stream_));
  }
  // Where a step of n floats lands; grows the large buffer (call before the
  // step is queued).
  float* buffer_for(int64_t n) {
    const size_t bytes = static_cast<size_t>(n) * sizeof(float);
    if (bytes <= small_.bytes()) return small_.get<float>();
    large_.resize(bytes);
    return large_.get<float>();
  }

 private:
  cudaStream_t stream_;
  cuda::PinnedBuffer small_, large_;
};

}  // namespace

uint64_t cuda_device_memory_bytes(int device) {
  cudaDeviceProp prop{};
  TANDEM_CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
  return prop.totalGlobalMem;
}

std::string OffloadPlan::describe() const {
  const uint64_t cpu_kv = cpu_kv_bytes_per_block * static_cast<uint64_t>(gpu.kv_blocks);
  return "offload: layers 0-" + std::to_string(gpu_layers - 1) + " (" + std::to_string(gpu_layers) +
         ") and the embedding on the GPU, layers " + std::to_string(gpu_layers) + "-" + std::to_string(n_layers - 1) +
         " (" + std::to_string(n_layers - gpu_layers) + "), the final norm and the LM head on the CPU\n  gpu: " +
         gpu.describe() + "\n  cpu budget " + gib(cpu_budget_bytes) + ": weights " + gib(cpu_weight_bytes) +
         " (mapped from the file), KV cache " + gib(cpu_kv) + " (f32, the same " + std::to_string(gpu.kv_blocks) +
         " blocks)";
}

OffloadPlan plan_offload(const ModelFile& model, const OffloadOptions& options, uint64_t gpu_total_bytes) {
  const ModelConfig& c = model.config();
  check(c.n_layers >= 2, "a model of one layer cannot be split between the GPU and the CPU");
  OffloadPlan plan;
  plan.n_layers = c.n_layers;
  plan.cpu_budget_bytes = options.cpu_memory_bytes > 0 ? options.cpu_memory_bytes : physical_memory_bytes() / 2;

  auto plan_for = [&](int64_t gpu_layers) {
    const parallel::ParallelPlan split = parallel::plan_layer_split(c, model.tensors(), gpu_layers);
    const parallel::RankModel gpu_part = parallel::make_rank_model(model.path(), c, model.tensors(), split, 0, 0);
    const parallel::RankModel cpu_part = parallel::make_rank_model(model.path(), c, model.tensors(), split, 1, 0);
    OffloadPlan p = plan;
    p.gpu_layers = gpu_layers;
    CudaRunnerOptions o = options.gpu;
    o.kv_blocks = 0;
    p.gpu = plan_cuda_memory(gpu_part.config, gpu_part.tensors, o, gpu_total_bytes);
    p.cpu_weight_bytes = split.stages[1].weight_bytes;
    p.cpu_kv_bytes_per_block = static_cast<uint64_t>(KvCache::bytes_per_token(cpu_part.config) * p.gpu.block_size);
    return p;
  };

  if (options.gpu_layers > 0) {
    check(options.gpu_layers < c.n_layers,
          "--gpu-layers " + std::to_string(options.gpu_layers) + ": the model has " + std::to_string(c.n_layers) +
              " layers; offloading needs at least one on the CPU (all " + std::to_string(c.n_layers) +
              " on the GPU is the ordinary GPU engine)");
    plan = plan_for(options.gpu_layers);
  } else {
    // The most layers whose weights, scratch and one full-context sequence's
    // KV cache fit the GPU budget.
    int64_t k = c.n_layers - 1;
    for (; k >= 1; --k) {
      try {
        plan = plan_for(k);
        break;
      } catch (const Error&) {
      }
    }
    if (k < 1) {
      try {
        plan_for(1);
      } catch (const Error& e) {
        throw Error(std::string("not even one layer fits the GPU beside the embedding: ") + e.what());
      }
    }
  }

  // KV blocks: what the GPU budget leaves, within what the CPU budget leaves.
  check(plan.cpu_weight_bytes < plan.cpu_budget_bytes,
        "the CPU part (layers " + std::to_string(plan.gpu_layers) + "-" + std::to_string(c.n_layers - 1) +
            ", LM head) needs " + gib(plan.cpu_weight_bytes) + " of weights; the CPU budget is " +
            gib(plan.cpu_budget_bytes) + " (raise max_memory.cpu, or max_memory.gpu to keep more layers on the GPU)");
  const int64_t cpu_blocks =
      static_cast<int64_t>((plan.cpu_budget_bytes - plan.cpu_weight_bytes) / plan.cpu_kv_bytes_per_block);
  const int64_t min_blocks = (plan.gpu.max_context + plan.gpu.block_size - 1) / plan.gpu.block_size;
  int64_t blocks = std::min(plan.gpu.kv_blocks, cpu_blocks);
  if (options.gpu.kv_blocks > 0) {
    check(options.gpu.kv_blocks <= blocks, std::to_string(options.gpu.kv_blocks) + " KV blocks do not fit: " +
                                               std::to_string(plan.gpu.kv_blocks) + " fit the GPU budget and " +
                                               std::to_string(cpu_blocks) + " the CPU budget");
    blocks = options.gpu.kv_blocks;
  }
  check(blocks >= min_blocks,
        "the CPU part's KV cache for one sequence of " + std::to_string(plan.gpu.max_context) + " tokens needs " +
            gib(plan.cpu_kv_bytes_per_block * static_cast<uint64_t>(min_blocks)) + " beyond its " +
            gib(plan.cpu_weight_bytes) + " of weights; the CPU budget is " + gib(plan.cpu_budget_bytes) +
            " (lower the context, or raise max_memory.cpu)");
  plan.gpu.kv_blocks = blocks;
  return plan;
}

struct OffloadRunner::Impl {
  ModelConfig config;
  OffloadPlan plan;
  parallel::ParallelPlan split;
  parallel::RankModel gpu_part, cpu_part;
  cudaStream_t stream = nullptr;
  std::unique_ptr<HostHandoff> handoff;
  std::unique_ptr<CudaModelRunner> gpu;
  std::unique_ptr<CpuModelRunner> cpu;
  Timing timing;

  ~Impl() {
    gpu.reset();  // it synchronizes the stream
    handoff.reset();
    if (stream) cudaStreamDestroy(stream);
  }
};

OffloadRunner::OffloadRunner(const ModelFile& model, ThreadPool& pool, const OffloadOptions& options)
    : impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  m.config = model.config();
  TANDEM_CUDA_CHECK(cudaSetDevice(options.gpu.device));
  m.plan = plan_offload(model, options, cuda_device_memory_bytes(options.gpu.device));
  m.split = parallel::plan_layer_split(m.config, model.tensors(), m.plan.gpu_layers);
  m.gpu_part = parallel::make_rank_model(model.path(), m.config, model.tensors(), m.split, 0, 0);
  m.cpu_part = parallel::make_rank_model(model.path(), m.config, model.tensors(), m.split, 1, 0);

  TANDEM_CUDA_CHECK(cudaStreamCreateWithFlags(&m.stream, cudaStreamNonBlocking));
  m.handoff = std::make_unique<HostHandoff>(m.stream, m.config.hidden_size);
  CudaRunnerOptions g = options.gpu;
  g.kv_blocks = m.plan.gpu.kv_blocks;
  g.max_context = m.plan.gpu.max_context;
  CudaRankLinks links;
  links.pipeline = m.handoff.get();
  links.stream = m.stream;
  m.gpu = std::make_unique<CudaModelRunner>(m.gpu_part, g, links);

  CpuRunnerOptions c;
  c.kv_blocks = m.plan.gpu.kv_blocks;
  c.block_size = m.plan.gpu.block_size;
  c.max_context = m.plan.gpu.max_context;
  m.cpu = std::make_unique<CpuModelRunner>(m.cpu_part, pool, c);
}

OffloadRunner::~OffloadRunner() = default;

const ModelConfig& OffloadRunner::config() const { return impl_->config; }

const std::vector<float>& OffloadRunner::forward(std::span<const SequenceChunk> chunks) {
  Impl& m = *impl_;
  check_step(chunks, max_context(), block_size(), m.config.vocab_size);
  int64_t T = 0;
  for (const SequenceChunk& ch : chunks) T += static_cast<int64_t>(ch.tokens.size());
  // The GPU part's last layer lands here (its rows in compute order, which
  // the CPU part shares); the CPU part then advances each sequence.
  const float* hidden = m.handoff->buffer_for(T * m.config.hidden_size);
  using Clock = std::chrono::steady_clock;
  const auto t0 = Clock::now();
  m.gpu->forward_shard(chunks);
  m.gpu->synchronize();
  const auto t1 = Clock::now();
  const std::vector<float>& logits = m.cpu->forward_hidden(chunks, hidden);
  m.timing.gpu_ms += std::chrono::duration<double, std::milli>(t1 - t0).count();
  m.timing.cpu_ms += std::chrono::duration<double, std::milli>(Clock::now() - t1).count();
  ++m.timing.steps;
  return logits;
}

int64_t OffloadRunner::max_context() const { return impl_->plan.gpu.max_context; }
BlockAllocator& OffloadRunner::block_allocator() { return impl_->gpu->block_allocator(); }
int64_t OffloadRunner::block_size() const { return impl_->plan.gpu.block_size; }
uint64_t OffloadRunner::weight_bytes_per_step() const {
  return impl_->gpu->weight_bytes_per_step() + impl_->cpu->weight_bytes_per_step();
}
const OffloadPlan& OffloadRunner::plan() const { return impl_->plan; }
const OffloadRunner::Timing& OffloadRunner::timing() const { return impl_->timing; }
void OffloadRunner::reset_timing() { impl_->timing = Timing{}; }

}  // namespace tandem
