// The placement of a model over tensor_parallel x pipeline_stages GPUs:
// which layers each pipeline stage runs, what each GPU holds, and whether the
// model can be split that way at all (heads, FFN width and quantization
// blocks must divide). Computed from the model's config and tensors alone,
// before anything is loaded.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "formats/tensor_ref.h"
#include "models/model_config.h"
#include "parallel/parallel_config.h"
#include "parallel/weight_sharding.h"

namespace tandem::parallel {

struct StagePlan {
  int64_t stage = 0;
  Range layers;                  // [first, end) of the model's layers
  bool has_embedding = false;    // the first stage looks tokens up
  bool has_lm_head = false;      // the last stage computes logits
  uint64_t weight_bytes = 0;     // the stage's weights over all its GPUs (replicated ones counted per GPU)
  uint64_t max_gpu_bytes = 0;    // the most any one GPU of the stage holds
};

struct ParallelPlan {
  ParallelConfig config;
  // Per tensor-parallel rank (equal on every rank).
  int64_t heads_per_gpu = 0;
  int64_t kv_heads_per_gpu = 0;
  int64_t ffn_per_gpu = 0;        // intermediate columns
  int64_t max_vocab_per_gpu = 0;  // LM head rows (the vocabulary may split unevenly)
  std::vector<StagePlan> stages;

  // Multi-line text: the split, then one line per stage, e.g.
  //   stage 0: layers 0-15 (16), embedding; 7.52 GiB per GPU
  std::string describe() const;
};

// Global rank of (stage, tensor-parallel rank): stage-major, so the GPUs of
// one stage are neighbours (one NVLink island on one host).
inline int64_t global_rank(const ParallelConfig& c, int64_t stage, int64_t tp_rank) {
  return stage * c.tensor_parallel + tp_rank;
}

// Throws tandem::Error with the numbers when the model cannot be split as
// asked, e.g. "8 KV heads cannot be split over 3 GPUs (tensor_parallel must
// divide n_heads = 32 and n_kv_heads = 8; ...)", or "4 pipeline stages for a
// model of 2 layers: ...". `tensors` are the model's tensors under canonical
// names (ModelFile::tensors()), for dtypes and bytes.
ParallelPlan plan_parallel(const ModelConfig& model, const std::vector<TensorRef>& tensors,
                           const ParallelConfig& config);

// Two stages on one device each, split after `first_stage_layers` layers
// (not evenly): the GPU part and the CPU part of an offloaded model.
// Throws tandem::Error unless 1 <= first_stage_layers < n_layers.
ParallelPlan plan_layer_split(const ModelConfig& model, const std::vector<TensorRef>& tensors,
                              int64_t first_stage_layers);

// The micro-batches of a pipeline step over `n_sequences` sequences: ranges
// of sequence indices, in order, covering all. micro_batch_size > 0: that
// many per micro-batch (the last may hold fewer); 0: the sequences spread
// evenly over the stages (one micro-batch per stage while there are enough
// sequences). Empty for no sequences.
std::vector<Range> split_micro_batches(int64_t n_sequences, int64_t micro_batch_size, int64_t stages);

// The tensor-parallel sizes (1..kMaxTensorParallel) this model allows, e.g.
// {1, 2, 4, 8}: used in error messages.
std::vector<int64_t> valid_tensor_parallel_sizes(const ModelConfig& model, const std::vector<TensorRef>& tensors);

}  // namespace tandem::parallel
