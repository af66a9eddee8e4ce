// make_rank_model: what one GPU of a plan holds, presented as a model of its
// own (local config, layers renumbered, shards with the right bytes), and
// the micro-batches of a pipeline step.
#include "parallel/rank_model.h"

#include <gtest/gtest.h>

#include <cstring>
#include <map>

#include "parallel/parallel_plan.h"
#include "tests/parallel/parallel_test_util.h"

namespace tandem::parallel {
namespace {

// A model whose f32 tensors hold distinct values: element i of tensor k is
// k * 1e5 + i, so a shard's bytes tell where they came from.
struct ValuedModel {
  ModelConfig config;
  std::vector<TensorRef> tensors;
  std::map<std::string, std::vector<float>> data;

  explicit ValuedModel(ModelConfig c) : config(std::move(c)) {
    tensors = testing::tensors_of(config, DType::F32);
    float k = 0;
    for (TensorRef& t : tensors) {
      std::vector<float>& v = data[t.name];
      v.resize(static_cast<size_t>(t.n_elements()));
      for (size_t i = 0; i < v.size(); ++i) v[i] = k * 1e5f + static_cast<float>(i);
      t.data = reinterpret_cast<const uint8_t*>(v.data());
      k += 1;
    }
  }
  float at(const std::string& name, int64_t row, int64_t col) const {
    const TensorRef* t = nullptr;
    for (const TensorRef& x : tensors)
      if (x.name == name) t = &x;
    return data.at(name)[static_cast<size_t>(row * t->shape.back() + col)];
  }
};

float value(const TensorRef& t, int64_t row, int64_t col) {
  float v;
  std::memcpy(&v, t.data + (row * t.shape.back() + col) * sizeof(float), sizeof v);
  return v;
}

ModelConfig config_with_odd_vocab() {
  ModelConfig c = testing::small_config(/*n_heads=*/8, /*n_kv_heads=*/4, /*head_dim=*/32, /*intermediate=*/512,
                                        /*n_layers=*/3);
  c.vocab_size = 1001;  // splits 501 + 500
  return c;
}

TEST(RankModel, LastStageSecondTensorRankHoldsItsShardsUnderLocalNames) {
  const ValuedModel m(config_with_odd_vocab());
  ParallelConfig pc;
  pc.tensor_parallel = 2;
  pc.pipeline_stages = 2;
  const ParallelPlan plan = plan_parallel(m.config, m.tensors, pc);
  const RankModel r = make_rank_model("m.gguf", m.config, m.tensors, plan, /*stage=*/1, /*tp_rank=*/1);

  // Stage 1 runs layer 2 (stage 0 takes layers 0-1), as its layer 0.
  EXPECT_EQ(r.layers, (Range{2, 3}));
  EXPECT_EQ(r.config.n_layers, 1);
  EXPECT_EQ(r.config.layer_kinds.size(), 1u);
  EXPECT_EQ(r.config.n_heads, 4);
  EXPECT_EQ(r.config.n_kv_heads, 2);
  EXPECT_EQ(r.config.intermediate_size, 256);
  EXPECT_EQ(r.config.vocab_size, 1001);  // token ids stay the whole vocabulary's
  EXPECT_NO_THROW(r.config.validate());
  EXPECT_FALSE(r.has_embedding);
  EXPECT_TRUE(r.has_lm_head);
  EXPECT_EQ(r.find("token_embd.weight"), nullptr);
  EXPECT_EQ(r.find("blk.1.attn_q.weight"), nullptr);

  // Query rows of heads 4-7 of source layer 2.
  const TensorRef& q = r.tensor("blk.0.attn_q.weight");
  EXPECT_EQ(q.shape, (std::vector<int64_t>{128, 256}));
  EXPECT_EQ(value(q, 0, 0), m.at("blk.2.attn_q.weight", 128, 0));
  EXPECT_EQ(value(q, 127, 255), m.at("blk.2.attn_q.weight", 255, 255));
  // KV heads 2-3.
  const TensorRef& k = r.tensor("blk.0.attn_k.weight");
  EXPECT_EQ(k.shape, (std::vector<int64_t>{64, 256}));
  EXPECT_EQ(value(k, 0, 7), m.at("blk.2.attn_k.weight", 64, 7));
  // attn_output: the input columns of heads 4-7; ffn_down: FFN columns 256-511.
  const TensorRef& o = r.tensor("blk.0.attn_output.weight");
  EXPECT_EQ(o.shape, (std::vector<int64_t>{256, 128}));
  EXPECT_EQ(value(o, 3, 0), m.at("blk.2.attn_output.weight", 3, 128));
  EXPECT_EQ(value(o, 255, 127), m.at("blk.2.attn_output.weight", 255, 255));
  const TensorRef& down = r.tensor("blk.0.ffn_down.weight");
  EXPECT_EQ(down.shape, (std::vector<int64_t>{256, 256}));
  EXPECT_EQ(value(down, 1, 0), m.at("blk.2.ffn_down.weight", 1, 256));
  const TensorRef& gate = r.tensor("blk.0.ffn_gate.weight");
  EXPECT_EQ(gate.shape, (std::vector<int64_t>{256, 256}));
  EXPECT_EQ(value(gate, 0, 0), m.at("blk.2.ffn_gate.weight", 256, 0));
  // Norms whole.
  EXPECT_EQ(r.tensor("blk.0.attn_norm.weight").shape, (std::vector<int64_t>{256}));
  EXPECT_EQ(value(r.tensor("output_norm.weight"), 0, 9), m.at("output_norm.weight", 0, 9));

  // The LM head: vocabulary rows 501-1000; gathered logits are 501 wide.
  EXPECT_EQ(r.vocab, (Range{501, 1001}));
  EXPECT_EQ(r.max_vocab_rows, 501);
  const TensorRef& head = r.tensor("output.weight");
  EXPECT_EQ(head.shape, (std::vector<int64_t>{500, 256}));
  EXPECT_EQ(value(head, 0, 0), m.at("output.weight", 501, 0));
}

TEST(RankModel, FirstStageEmbedsAndHoldsNoHead) {
  const ValuedModel m(config_with_odd_vocab());
  ParallelConfig pc;
  pc.tensor_parallel = 2;
  pc.pipeline_stages = 2;
  const ParallelPlan plan = plan_parallel(m.config, m.tensors, pc);
  const RankModel r = make_rank_model("m.gguf", m.config, m.tensors, plan, 0, 0);
  EXPECT_EQ(r.config.n_layers, 2);
  EXPECT_TRUE(r.has_embedding);
  EXPECT_FALSE(r.has_lm_head);
  EXPECT_EQ(r.tensor("token_embd.weight").shape, (std::vector<int64_t>{1001, 256}));  // replicated
  EXPECT_EQ(r.find("output.weight"), nullptr);
  EXPECT_EQ(r.find("output_norm.weight"), nullptr);
  EXPECT_EQ(value(r.tensor("blk.1.attn_v.weight"), 5, 5), m.at("blk.1.attn_v.weight", 5, 5));
  // Every tensor the rank holds is one of the source's, shards counted once.
  uint64_t bytes = 0;
  for (const TensorRef& t : r.tensors) bytes += t.n_bytes;
  EXPECT_EQ(bytes, plan.stages[0].max_gpu_bytes);
}

TEST(RankModel, TiedHeadIsARowSliceOfTheEmbedding) {
  ModelConfig c = config_with_odd_vocab();
  c.tied_embeddings = true;
  const ValuedModel m(c);
  ParallelConfig pc;
  pc.tensor_parallel = 2;
  pc.pipeline_stages = 3;
  const ParallelPlan plan = plan_parallel(m.config, m.tensors, pc);
  const RankModel last = make_rank_model("m", m.config, m.tensors, plan, 2, 0);
  EXPECT_FALSE(last.config.tied_embeddings);
  EXPECT_EQ(last.find("token_embd.weight"), nullptr);
  const TensorRef& head = last.tensor("output.weight");
  EXPECT_EQ(head.shape, (std::vector<int64_t>{501, 256}));
  EXPECT_EQ(value(head, 500, 3), m.at("token_embd.weight", 500, 3));
}

TEST(MicroBatches, SpreadOverStagesOrCutBySize) {
  auto sizes = [](const std::vector<Range>& v) {
    std::vector<int64_t> out;
    for (const Range& r : v) out.push_back(r.size());
    return out;
  };
  EXPECT_TRUE(split_micro_batches(0, 0, 2).empty());
  EXPECT_EQ(sizes(split_micro_batches(1, 0, 4)), (std::vector<int64_t>{1}));
  EXPECT_EQ(sizes(split_micro_batches(5, 0, 2)), (std::vector<int64_t>{3, 2}));
  EXPECT_EQ(sizes(split_micro_batches(7, 0, 1)), (std::vector<int64_t>{7}));
  EXPECT_EQ(sizes(split_micro_batches(7, 3, 2)), (std::vector<int64_t>{3, 3, 1}));
  const std::vector<Range> b = split_micro_batches(10, 0, 4);
  ASSERT_EQ(b.size(), 4u);
  EXPECT_EQ(b.front().begin, 0);
  for (size_t i = 1; i < b.size(); ++i) EXPECT_EQ(b[i].begin, b[i - 1].end);
  EXPECT_EQ(b.back().end, 10);
}

}  // namespace
}  // namespace tandem::parallel
