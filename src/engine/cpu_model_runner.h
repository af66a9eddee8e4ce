// The CPU backend's model runner for the llama family (llama, qwen2, qwen3):
// weights used in place from the mapped file, f32 activations, paged f32 KV cache.
#pragma once

#include <initializer_list>
#include <memory>
#include <span>
#include <vector>

#include "backends/cpu/cpu_kernels.h"
#include "backends/cpu/q8_0_rows8.h"
#include "common/thread_pool.h"
#include "engine/kv_cache.h"
#include "engine/model_runner.h"
#include "models/model_file.h"

namespace tandem {
namespace parallel {
struct RankModel;
}  // namespace parallel

struct CpuRunnerOptions {
  int64_t kv_blocks = 0;     // 0: enough for one sequence of max_context tokens
  int64_t block_size = 16;
  int64_t max_context = 0;   // 0: the model's context length
};

class CpuModelRunner : public ModelRunner {
 public:
  // Keeps references to `model` and `pool`; both must outlive the runner.
  // Throws tandem::Error when a weight's dtype has no CPU kernel.
  CpuModelRunner(const ModelFile& model, ThreadPool& pool, const CpuRunnerOptions& options);
  // A contiguous part of a model's layers (one side of an offload split,
  // parallel::plan_layer_split; tensor_parallel 1). `part`, its source
  // model's mapping and `pool` must outlive the runner. A part without the
  // embedding takes its input through forward_hidden; a part without the LM
  // head returns no logits and leaves its output in hidden_states().
  CpuModelRunner(const parallel::RankModel& part, ThreadPool& pool, const CpuRunnerOptions& options);

  // forward with the first layer's input given instead of looked up:
  //   hidden: [T, hidden_size] f32, the step's tokens in compute order
  //   (generated tokens first, then prompt tokens, each in chunk order: the
  //   order every backend computes in).
  const std::vector<float>& forward_hidden(std::span<const SequenceChunk> chunks, const float* hidden);
  // The last step's output of the last layer, [T, hidden_size] in compute
  // order (before the final norm).
  const float* hidden_states() const { return x_.data(); }

  const ModelConfig& config() const override { return config_; }
  const std::vector<float>& forward(std::span<const SequenceChunk> chunks) override;
  BlockAllocator& block_allocator() override { return allocator_; }
  int64_t block_size() const override { return options_.block_size; }
  uint64_t weight_bytes_per_step() const override { return weight_bytes_; }
  int64_t max_context() const override { return options_.max_context; }

 private:
  struct Layer {
    cpu::WeightMatrix wq, wk, wv, wo, gate, up, down;
    std::vector<float> attn_norm, ffn_norm;     // [hidden]
    std::vector<float> q_bias, k_bias, v_bias;  // [q_dim], [kv_dim], [kv_dim] (qwen2)
    std::vector<float> q_norm, k_norm;          // [head_dim] (qwen3)
  };

  // Loads the weights; `tensor(name)` finds a canonical tensor or throws.
  template <typename Lookup>
  void load(const std::string& path, Lookup&& tensor);
  const std::vector<float>& run(std::span<const SequenceChunk> chunks, const float* input);
  void attention(int64_t layer, std::span<const SequenceChunk> chunks, int64_t n_tokens);
  void apply_rope(float* vec, int64_t n_heads, int64_t pos) const;

  ModelConfig config_;
  bool has_embedding_ = true, has_head_ = true;
  ThreadPool& pool_;
  CpuRunnerOptions options_;
  std::vector<Layer> layers_;
  cpu::WeightMatrix token_embd_, output_;
  std::vector<float> output_norm_;
  uint64_t weight_bytes_ = 0;
  // Matrices regrouped at load for the CPU's kernels (Q8_0 in the rows8
  // layout); the layer and output matrices point into these.
  std::vector<cpu::PackedWeights> packed_;
  std::vector<float> rope_cos_, rope_sin_;  // [max_context, head_dim/2]

  BlockAllocator allocator_;
  KvCache kv_;

  // Step scratch, grown as needed.
  // Tokens of a step in compute order: generated tokens first (decode
  // kernels), then prompt tokens (prefill kernels); n_generated_ of them.
  void matmul_split(const cpu::WeightMatrix& w, const float* x, int64_t n_tokens, int64_t n_generated, float* y);
  // The same for several matrices of one input, in one pass of the pool
  // (cpu::matmul_group): q, k and v; gate and up.
  void matmul_split(std::initializer_list<cpu::MatmulProduct> products, const float* x, int64_t n_tokens,
                    int64_t n_generated);
  std::vector<int64_t> positions_;          // [T]
  std::vector<const SequenceChunk*> owner_; // [T] chunk of each token
  int64_t n_generated_ = 0;
  std::vector<int64_t> compute_index_;      // [T] compute position of each token, in chunk order
  std::vector<float> x_, xn_, q_, k_, v_, attn_out_, proj_, gate_, up_;  // [T, *]
  std::vector<float> logits_;               // [n_rows, vocab], rows in chunk order
  std::vector<float> logits_compute_;       // [n_rows, vocab], rows in compute order
  std::vector<float> selected_;             // [n_rows, hidden], rows in compute order
};

}  // namespace tandem
