#include "parallel/rank_model.h"

#include <algorithm>
#include <map>

#include "common/error.h"

namespace tandem::parallel {

const TensorRef* RankModel::find(std::string_view name) const {
  for (const TensorRef& t : tensors)
    if (t.name == name) return &t;
  return nullptr;
}

const TensorRef& RankModel::tensor(std::string_view name) const {
  const TensorRef* t = find(name);
  check(t != nullptr, path + ": rank (stage " + std::to_string(stage) + ", tensor rank " + std::to_string(tp_rank) +
                          ") holds no tensor '" + std::string(name) + "'");
  return *t;
}

RankModel make_rank_model(const std::string& path, const ModelConfig& model, const std::vector<TensorRef>& tensors,
                          const ParallelPlan& plan, int64_t stage, int64_t tp_rank) {
  const int64_t tp = plan.config.tensor_parallel;
  check(stage >= 0 && stage < static_cast<int64_t>(plan.stages.size()) && tp_rank >= 0 && tp_rank < tp,
        "internal: rank (stage " + std::to_string(stage) + ", tensor rank " + std::to_string(tp_rank) +
            ") is outside the plan");
  const StagePlan& st = plan.stages[static_cast<size_t>(stage)];
  RankModel r;
  r.path = path;
  r.full_config = model;
  r.stage = stage;
  r.tp_rank = tp_rank;
  r.tensor_parallel = tp;
  r.pipeline_stages = plan.config.pipeline_stages;
  r.layers = st.layers;
  r.has_embedding = st.has_embedding;
  r.has_lm_head = st.has_lm_head;

  r.config = model;
  r.config.n_layers = st.layers.size();
  r.config.n_heads = model.n_heads / tp;
  r.config.n_kv_heads = model.n_kv_heads / tp;
  r.config.intermediate_size = model.intermediate_size / tp;
  r.config.tied_embeddings = false;  // the head, when held, is "output.weight" (a row view of the table if tied)
  r.config.layer_kinds.assign(model.layer_kinds.begin() + st.layers.begin, model.layer_kinds.begin() + st.layers.end);

  std::map<std::string, const TensorRef*, std::less<>> by_name;
  for (const TensorRef& t : tensors) by_name[t.name] = &t;
  auto source = [&](const std::string& name) -> const TensorRef& {
    auto it = by_name.find(name);
    check(it != by_name.end(), path + ": tensor '" + name + "' is missing");
    return *it->second;
  };
  // Shards are kept in `r.shards` (stable TensorRef data pointers: a moved
  // shard keeps its bytes), their refs renamed into `r.tensors`.
  auto add = [&](TensorShard shard, const std::string& local_name) {
    shard.ref.name = local_name;
    r.shards.push_back(std::move(shard));
  };

  if (r.has_embedding) {
    const TensorRef& e = source("token_embd.weight");
    add(shard_tensor(e, ShardRule{}, tp_rank, tp), "token_embd.weight");
  }
  for (int64_t l = st.layers.begin; l < st.layers.end; ++l) {
    const std::string from = "blk." + std::to_string(l) + ".";
    const std::string to = "blk." + std::to_string(l - st.layers.begin) + ".";
    for (const TensorRef& t : tensors) {
      if (t.name.rfind(from, 0) != 0) continue;
      add(shard_tensor(t, shard_rule(t.name, model), tp_rank, tp), to + t.name.substr(from.size()));
    }
  }
  if (r.has_lm_head) {
    const TensorRef& head = model.tied_embeddings ? source("token_embd.weight") : source("output.weight");
    TensorShard s = shard_tensor(head, lm_head_rule(), tp_rank, tp);
    r.vocab = s.range;
    for (int64_t k = 0; k < tp; ++k)
      r.max_vocab_rows = std::max(r.max_vocab_rows, shard_range(head, lm_head_rule(), k, tp).size());
    add(std::move(s), "output.weight");
    add(shard_tensor(source("output_norm.weight"), ShardRule{}, tp_rank, tp), "output_norm.weight");
  }
  if (const auto it = by_name.find("rope_freqs.weight"); it != by_name.end())
    add(shard_tensor(*it->second, ShardRule{}, tp_rank, tp), "rope_freqs.weight");
  for (const TensorShard& s : r.shards) r.tensors.push_back(s.ref);
  return r;
}

}  // namespace tandem::parallel
