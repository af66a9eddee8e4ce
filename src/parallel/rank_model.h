// What one GPU of a parallel plan holds, presented as a model of its own: a
// local config (the stage's layers, numbered from 0; n_heads, n_kv_heads and
// intermediate_size divided by tensor_parallel) and the rank's shards under
// canonical names. A backend loads it like a whole model; the rank's place in
// the plan (stage, tensor rank, vocabulary slice) says where it must talk to
// the others.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "formats/tensor_ref.h"
#include "models/model_config.h"
#include "parallel/parallel_plan.h"
#include "parallel/weight_sharding.h"

namespace tandem::parallel {

struct RankModel {
  std::string path;        // the source model's path, for error messages
  ModelConfig config;      // local shape (see above); vocab_size stays the whole vocabulary
  ModelConfig full_config; // the source model's
  int64_t stage = 0;
  int64_t tp_rank = 0;
  int64_t tensor_parallel = 1;
  int64_t pipeline_stages = 1;
  Range layers;               // the source layers this rank runs
  bool has_embedding = false; // "token_embd.weight" present (first stage)
  bool has_lm_head = false;   // "output.weight" (this rank's vocabulary rows) and "output_norm.weight" present (last stage)
  Range vocab;                // the LM head rows held (last stage)
  int64_t max_vocab_rows = 0; // the most LM head rows any tensor rank holds: the width of gathered logits

  // Canonical names, layers renumbered from 0. Views point into the source
  // mapping, which must outlive this; copies point into `shards`.
  std::vector<TensorRef> tensors;
  std::vector<TensorShard> shards;

  bool is_first_stage() const { return stage == 0; }
  bool is_last_stage() const { return stage + 1 == pipeline_stages; }
  // Throws tandem::Error naming the tensor when absent.
  const TensorRef& tensor(std::string_view name) const;
  const TensorRef* find(std::string_view name) const;
};

// The part of `model` (its config and canonical tensors) that (stage,
// tp_rank) of `plan` holds. PRECONDITIONS: `plan` came from plan_parallel
// for this model (it checked that every tensor shards).
RankModel make_rank_model(const std::string& path, const ModelConfig& model, const std::vector<TensorRef>& tensors,
                          const ParallelPlan& plan, int64_t stage, int64_t tp_rank);

}  // namespace tandem::parallel
