#include "parallel/parallel_plan.h"

#include <algorithm>
#include <cstdio>
#include <optional>

#include "common/error.h"

namespace tandem::parallel {
namespace {

// Layer index of "blk.N.*", or nullopt for the model-level tensors.
std::optional<int64_t> layer_of(const std::string& name) {
  if (name.rfind("blk.", 0) != 0) return std::nullopt;
  const size_t dot = name.find('.', 4);
  check(dot != std::string::npos, "tensor '" + name + "' has no layer number");
  return std::stoll(name.substr(4, dot - 4));
}

std::string join(const std::vector<int64_t>& v) {
  std::string s;
  for (size_t i = 0; i < v.size(); ++i) {
    if (i > 0) s += i + 1 == v.size() ? " or " : ", ";
    s += std::to_string(v[i]);
  }
  return s;
}

std::string gib(uint64_t bytes) {
  char buf[64];
  const double b = static_cast<double>(bytes);
  if (b >= 1024.0 * 1024 * 1024) std::snprintf(buf, sizeof buf, "%.2f GiB", b / (1024.0 * 1024 * 1024));
  else if (b >= 1024.0 * 1024) std::snprintf(buf, sizeof buf, "%.2f MiB", b / (1024.0 * 1024));
  else std::snprintf(buf, sizeof buf, "%.1f KiB", b / 1024.0);
  return buf;
}

// The model-level checks, with messages in the model's own terms; the
// per-tensor checks (dtype blocks) follow in check_tensors.
void check_heads(const ModelConfig& m, int64_t tp, const std::string& hint) {
  const std::string need = " (tensor_parallel must divide n_heads = " + std::to_string(m.n_heads) +
                           ", n_kv_heads = " + std::to_string(m.n_kv_heads) +
                           " and intermediate_size = " + std::to_string(m.intermediate_size) + hint + ")";
  check(m.n_kv_heads % tp == 0,
        std::to_string(m.n_kv_heads) + " KV heads cannot be split over " + std::to_string(tp) + " GPUs" + need);
  check(m.n_heads % tp == 0, std::to_string(m.n_heads) + " attention heads cannot be split over " +
                                 std::to_string(tp) + " GPUs" + need);
  check(m.intermediate_size % tp == 0, "an FFN of " + std::to_string(m.intermediate_size) +
                                           " columns cannot be split over " + std::to_string(tp) + " GPUs" + need);
  check(m.vocab_size >= tp, "a vocabulary of " + std::to_string(m.vocab_size) + " cannot be split over " +
                                std::to_string(tp) + " GPUs");
}


void check_tensors(const ModelConfig& m, const std::vector<TensorRef>& tensors, int64_t tp) {
  for (const TensorRef& t : tensors) check_shardable(t, shard_rule(t.name, m), tp);
  if (m.tied_embeddings)
    for (const TensorRef& t : tensors)
      if (t.name == "token_embd.weight") check_shardable(t, lm_head_rule(), tp);
}

bool splits(const ModelConfig& m, const std::vector<TensorRef>& tensors, int64_t tp) {
  try {
    check_heads(m, tp, "");
    check_tensors(m, tensors, tp);
    return true;
  } catch (const Error&) {
    return false;
  }
}

// Stage s of pp over `layers`: what it holds and its bytes per GPU.
StagePlan plan_stage(const ModelConfig& m, const std::vector<TensorRef>& tensors, int64_t tp, int64_t s, int64_t pp,
                     Range layers) {
  StagePlan st;
  st.stage = s;
  st.layers = layers;
  st.has_embedding = s == 0;
  st.has_lm_head = s == pp - 1;
  std::vector<uint64_t> per_gpu(static_cast<size_t>(tp), 0);
  for (const TensorRef& t : tensors) {
    const std::optional<int64_t> layer = layer_of(t.name);
    bool here = false;
    if (layer) here = *layer >= st.layers.begin && *layer < st.layers.end;
    else if (t.name == "token_embd.weight") here = st.has_embedding;
    else here = st.has_lm_head;  // output_norm, output
    const ShardRule rule = shard_rule(t.name, m);
    for (int64_t r = 0; r < tp; ++r) {
      if (here) per_gpu[static_cast<size_t>(r)] += shard_bytes(t, rule, r, tp);
      // A tied LM head on a stage without the embedding holds its vocabulary rows.
      if (t.name == "token_embd.weight" && m.tied_embeddings && st.has_lm_head && !st.has_embedding)
        per_gpu[static_cast<size_t>(r)] += shard_bytes(t, lm_head_rule(), r, tp);
    }
  }
  for (uint64_t b : per_gpu) {
    st.weight_bytes += b;
    st.max_gpu_bytes = std::max(st.max_gpu_bytes, b);
  }
  return st;
}

}  // namespace

std::vector<int64_t> valid_tensor_parallel_sizes(const ModelConfig& m, const std::vector<TensorRef>& tensors) {
  std::vector<int64_t> out;
  for (int64_t tp = 1; tp <= kMaxTensorParallel; ++tp)
    if (splits(m, tensors, tp)) out.push_back(tp);
  return out;
}

ParallelPlan plan_parallel(const ModelConfig& m, const std::vector<TensorRef>& tensors, const ParallelConfig& config) {
  const int64_t tp = config.tensor_parallel, pp = config.pipeline_stages;
  check(tp >= 1 && pp >= 1, "tensor_parallel and pipeline_stages must be at least 1");
  if (tp > 1) {
    const std::string hint = "; this model allows tensor_parallel " + join(valid_tensor_parallel_sizes(m, tensors));
    check_heads(m, tp, hint);
    try {
      check_tensors(m, tensors, tp);
    } catch (const Error& e) {
      throw Error(std::string(e.what()) + " (this model allows tensor_parallel " +
                  join(valid_tensor_parallel_sizes(m, tensors)) + ")");
    }
  }
  check(pp <= m.n_layers, std::to_string(pp) + " pipeline stages for a model of " + std::to_string(m.n_layers) +
                              " layers: each stage needs at least one layer (pipeline_stages must be at most " +
                              std::to_string(m.n_layers) + ")");

  ParallelPlan plan;
  plan.config = config;
  plan.heads_per_gpu = m.n_heads / tp;
  plan.kv_heads_per_gpu = m.n_kv_heads / tp;
  plan.ffn_per_gpu = m.intermediate_size / tp;
  plan.max_vocab_per_gpu = split_evenly(m.vocab_size, tp, 0).size();

  for (int64_t s = 0; s < pp; ++s) plan.stages.push_back(plan_stage(m, tensors, tp, s, pp, split_evenly(m.n_layers, pp, s)));
  return plan;
}

ParallelPlan plan_layer_split(const ModelConfig& m, const std::vector<TensorRef>& tensors, int64_t first_stage_layers) {
  check(first_stage_layers >= 1 && first_stage_layers < m.n_layers,
        "a split of a model of " + std::to_string(m.n_layers) + " layers after layer " +
            std::to_string(first_stage_layers) + ": each side needs at least one layer (1 to " +
            std::to_string(m.n_layers - 1) + " layers in the first part)");
  ParallelPlan plan;
  plan.config.pipeline_stages = 2;
  plan.heads_per_gpu = m.n_heads;
  plan.kv_heads_per_gpu = m.n_kv_heads;
  plan.ffn_per_gpu = m.intermediate_size;
  plan.max_vocab_per_gpu = m.vocab_size;
  plan.stages.push_back(plan_stage(m, tensors, 1, 0, 2, Range{0, first_stage_layers}));
  plan.stages.push_back(plan_stage(m, tensors, 1, 1, 2, Range{first_stage_layers, m.n_layers}));
  return plan;
}

std::string ParallelPlan::describe() const {
  std::string s = parallel::describe(config);
  if (config.tensor_parallel > 1)
    s += "; per GPU: " + std::to_string(heads_per_gpu) + " attention heads, " + std::to_string(kv_heads_per_gpu) +
         " KV heads, " + std::to_string(ffn_per_gpu) + " FFN columns, LM head split by vocabulary rows (up to " +
         std::to_string(max_vocab_per_gpu) + " rows), embedding and norms replicated";
  for (const StagePlan& st : stages) {
    s += "\n  stage " + std::to_string(st.stage) + ": layers " + std::to_string(st.layers.begin) + "-" +
         std::to_string(st.layers.end - 1) + " (" + std::to_string(st.layers.size()) + ")";
    if (st.has_embedding) s += ", embedding";
    if (st.has_lm_head) s += ", LM head";
    s += "; weights " + gib(st.weight_bytes) + " (" + gib(st.max_gpu_bytes) + " per GPU)";
  }
  return s;
}

std::vector<Range> split_micro_batches(int64_t n_sequences, int64_t micro_batch_size, int64_t stages) {
  std::vector<Range> out;
  if (n_sequences <= 0) return out;
  if (micro_batch_size > 0) {
    for (int64_t b = 0; b < n_sequences; b += micro_batch_size) out.push_back({b, std::min(n_sequences, b + micro_batch_size)});
    return out;
  }
  const int64_t parts = std::max<int64_t>(1, std::min(stages, n_sequences));
  for (int64_t k = 0; k < parts; ++k) out.push_back(split_evenly(n_sequences, parts, k));
  return out;
}

}  // namespace tandem::parallel
