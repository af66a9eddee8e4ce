// Parallel plans: config keys, pipeline layer ranges, tensor-parallel
// divisibility (heads, FFN, quantization blocks) and per-GPU weight bytes.
#include "parallel/parallel_plan.h"

#include <gtest/gtest.h>

#include "common/error.h"
#include "parallel/parallel_config.h"
#include "parallel_test_util.h"

namespace tandem::parallel {
namespace {

using testing::small_config;
using testing::tensors_of;

std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

ParallelConfig pc(int64_t tp, int64_t pp) {
  ParallelConfig c;
  c.tensor_parallel = tp;
  c.pipeline_stages = pp;
  return c;
}

TEST(ParallelConfig, AppliesKeysAndChecksRanges) {
  ParallelConfig c;
  apply_parallel_config_key("tensor_parallel", 4, c);
  apply_parallel_config_key("pipeline_stages", 2, c);
  apply_parallel_config_key("micro_batch_size", 3, c);
  EXPECT_EQ(c.tensor_parallel, 4);
  EXPECT_EQ(c.pipeline_stages, 2);
  EXPECT_EQ(c.micro_batch_size, 3);
  EXPECT_EQ(c.world_size(), 8);
  EXPECT_EQ(describe(c), "tensor_parallel 4 x pipeline_stages 2 = 8 GPUs");
  EXPECT_TRUE(is_parallel_config_key("pipeline_stages"));
  EXPECT_FALSE(is_parallel_config_key("batch_size"));
  EXPECT_NE(error_of([&] { apply_parallel_config_key("tensor_parallel", 0, c); }).find("'tensor_parallel' must be in [1, 64], got 0"),
            std::string::npos);
  EXPECT_NE(error_of([&] { apply_parallel_config_key("pipeline_stages", "2", c); }).find("must be an integer"),
            std::string::npos);
  EXPECT_NE(error_of([&] { apply_parallel_config_key("micro_batch_size", -1, c); }).find("micro_batch_size"),
            std::string::npos);
  EXPECT_NE(error_of([&] { validate_parallel_config(c, 2); }).find("[0, batch_size = 2]"), std::string::npos);
  EXPECT_NO_THROW(validate_parallel_config(c, 8));
}

TEST(PipelinePlan, SplitsLayersContiguouslyAsEvenlyAsPossible) {
  EXPECT_EQ(split_evenly(10, 3, 0), (Range{0, 4}));
  EXPECT_EQ(split_evenly(10, 3, 1), (Range{4, 7}));
  EXPECT_EQ(split_evenly(10, 3, 2), (Range{7, 10}));
  EXPECT_EQ(split_evenly(4, 4, 3), (Range{3, 4}));

  const ModelConfig m = small_config(8, 8, 32, 512, 32);
  for (int64_t pp : {1, 2, 3, 5, 7, 32}) {
    const ParallelPlan plan = plan_parallel(m, tensors_of(m, DType::F16), pc(1, pp));
    ASSERT_EQ(static_cast<int64_t>(plan.stages.size()), pp);
    int64_t next = 0, smallest = m.n_layers, largest = 0;
    for (const StagePlan& st : plan.stages) {
      EXPECT_EQ(st.layers.begin, next);
      next = st.layers.end;
      smallest = std::min(smallest, st.layers.size());
      largest = std::max(largest, st.layers.size());
      EXPECT_EQ(st.has_embedding, st.stage == 0);
      EXPECT_EQ(st.has_lm_head, st.stage == pp - 1);
    }
    EXPECT_EQ(next, m.n_layers);
    EXPECT_LE(largest - smallest, 1) << pp << " stages";
  }
  const ParallelPlan three = plan_parallel(m, tensors_of(m, DType::F16), pc(1, 3));
  EXPECT_EQ(three.stages[0].layers, (Range{0, 11}));
  EXPECT_EQ(three.stages[1].layers, (Range{11, 22}));
  EXPECT_EQ(three.stages[2].layers, (Range{22, 32}));
  EXPECT_NE(three.describe().find("stage 2: layers 22-31 (10), LM head"), std::string::npos) << three.describe();
}

TEST(PipelinePlan, RefusesMoreStagesThanLayers) {
  const ModelConfig m = small_config(8, 8, 32, 512, 2);
  const std::string e = error_of([&] { plan_parallel(m, tensors_of(m, DType::F16), pc(1, 3)); });
  EXPECT_NE(e.find("3 pipeline stages for a model of 2 layers"), std::string::npos) << e;
  EXPECT_NO_THROW(plan_parallel(m, tensors_of(m, DType::F16), pc(1, 2)));
}

TEST(PipelinePlan, StageBytesAddUpToTheModel) {
  const ModelConfig m = small_config(8, 8, 32, 512, 6);
  const std::vector<TensorRef> tensors = tensors_of(m, DType::BF16);
  uint64_t total = 0;
  for (const TensorRef& t : tensors) total += t.n_bytes;
  uint64_t sum = 0;
  const ParallelPlan plan = plan_parallel(m, tensors, pc(1, 4));
  for (const StagePlan& st : plan.stages) {
    sum += st.weight_bytes;
    EXPECT_EQ(st.weight_bytes, st.max_gpu_bytes);
  }
  EXPECT_EQ(sum, total);
  // Stage 0 holds the embedding beside its layers; the last stage the LM head.
  const uint64_t embd = static_cast<uint64_t>(m.vocab_size * m.hidden_size * 2);
  EXPECT_GT(plan.stages[0].weight_bytes, embd);
  EXPECT_GT(plan.stages[3].weight_bytes, embd);
}

TEST(PipelinePlan, TiedHeadOnALaterStageHoldsItsVocabularyRows) {
  ModelConfig m = small_config(8, 8, 32, 512, 4);
  m.tied_embeddings = true;
  const std::vector<TensorRef> tensors = tensors_of(m, DType::F32);
  const ParallelPlan one = plan_parallel(m, tensors, pc(1, 1));
  const ParallelPlan two = plan_parallel(m, tensors, pc(1, 2));
  const uint64_t embd = static_cast<uint64_t>(m.vocab_size * m.hidden_size * 4);
  // Split over two stages, the table is needed twice: lookup and LM head.
  EXPECT_EQ(two.stages[0].weight_bytes + two.stages[1].weight_bytes, one.stages[0].weight_bytes + embd);
}

TEST(LayerSplitPlan, SplitsWhereAskedAndRefusesAnEmptySide) {
  const ModelConfig m = small_config(8, 8, 32, 512, 6);
  const std::vector<TensorRef> tensors = tensors_of(m, DType::BF16);
  uint64_t total = 0;
  for (const TensorRef& t : tensors) total += t.n_bytes;
  for (int64_t k = 1; k < m.n_layers; ++k) {
    const ParallelPlan plan = plan_layer_split(m, tensors, k);
    ASSERT_EQ(plan.stages.size(), 2u);
    EXPECT_EQ(plan.stages[0].layers, (Range{0, k}));
    EXPECT_EQ(plan.stages[1].layers, (Range{k, m.n_layers}));
    EXPECT_TRUE(plan.stages[0].has_embedding && !plan.stages[0].has_lm_head);
    EXPECT_TRUE(!plan.stages[1].has_embedding && plan.stages[1].has_lm_head);
    EXPECT_EQ(plan.stages[0].weight_bytes + plan.stages[1].weight_bytes, total);
  }
  // More layers on the first side, more bytes there.
  EXPECT_LT(plan_layer_split(m, tensors, 1).stages[0].weight_bytes, plan_layer_split(m, tensors, 5).stages[0].weight_bytes);
  for (int64_t bad : {0, 6, -1}) {
    const std::string e = error_of([&] { plan_layer_split(m, tensors, bad); });
    EXPECT_NE(e.find("each side needs at least one layer"), std::string::npos) << e;
  }
}

TEST(TensorParallelPlan, SplitsHeadsFfnAndVocabulary) {
  const ModelConfig m = small_config(32, 8, 128, 1024, 4);
  const std::vector<TensorRef> tensors = tensors_of(m, DType::Q8_0);
  const ParallelPlan plan = plan_parallel(m, tensors, pc(4, 2));
  EXPECT_EQ(plan.heads_per_gpu, 8);
  EXPECT_EQ(plan.kv_heads_per_gpu, 2);
  EXPECT_EQ(plan.ffn_per_gpu, 256);
  EXPECT_EQ(plan.max_vocab_per_gpu, 250);
  ASSERT_EQ(plan.stages.size(), 2u);

  // Replicated tensors are held by every GPU; split ones once in total.
  uint64_t split = 0, replicated = 0;
  for (const TensorRef& t : tensors) {
    (shard_rule(t.name, m).axis == ShardAxis::Replicated ? replicated : split) += t.n_bytes;
  }
  const ParallelPlan flat = plan_parallel(m, tensors, pc(4, 1));
  EXPECT_EQ(flat.stages[0].weight_bytes, split + 4 * replicated);
  EXPECT_EQ(flat.stages[0].max_gpu_bytes * 4, flat.stages[0].weight_bytes);
  EXPECT_NE(flat.describe().find("8 attention heads, 2 KV heads, 256 FFN columns"), std::string::npos)
      << flat.describe();
}

TEST(TensorParallelPlan, RefusesKvHeadsThatDoNotDivide) {
  const ModelConfig m = small_config(32, 8, 128, 1536, 4);
  const std::string e = error_of([&] { plan_parallel(m, tensors_of(m, DType::F16), pc(3, 1)); });
  EXPECT_NE(e.find("8 KV heads cannot be split over 3 GPUs"), std::string::npos) << e;
  EXPECT_NE(e.find("this model allows tensor_parallel 1, 2, 4 or 8"), std::string::npos) << e;
  EXPECT_EQ(valid_tensor_parallel_sizes(m, tensors_of(m, DType::F16)), (std::vector<int64_t>{1, 2, 4, 8}));
}

TEST(TensorParallelPlan, RefusesQueryHeadsAndFfnThatDoNotDivide) {
  const ModelConfig heads = small_config(6, 2, 64, 1024, 2);
  EXPECT_NE(error_of([&] { plan_parallel(heads, tensors_of(heads, DType::F16), pc(4, 1)); })
                .find("2 KV heads cannot be split over 4 GPUs"),
            std::string::npos);
  const ModelConfig mha = small_config(6, 6, 64, 1024, 2);
  EXPECT_NE(error_of([&] { plan_parallel(mha, tensors_of(mha, DType::F16), pc(4, 1)); })
                .find("6 KV heads cannot be split over 4 GPUs"),
            std::string::npos);
  const ModelConfig ffn = small_config(4, 4, 64, 1026, 2);
  EXPECT_NE(error_of([&] { plan_parallel(ffn, tensors_of(ffn, DType::F16), pc(4, 1)); })
                .find("an FFN of 1026 columns cannot be split over 4 GPUs"),
            std::string::npos);
}

TEST(TensorParallelPlan, Q8_0ColumnShardsMustBeWholeBlocks) {
  // head_dim 48: attn_output's input columns split per head; 48 columns per
  // GPU is not whole 32-value blocks. bf16 has no blocks, so it splits.
  const ModelConfig m = small_config(4, 4, 48, 512, 2);
  EXPECT_NO_THROW(plan_parallel(m, tensors_of(m, DType::BF16), pc(4, 1)));
  EXPECT_NO_THROW(plan_parallel(m, tensors_of(m, DType::Q8_0), pc(2, 1)));  // 96 columns = 3 blocks
  const std::string e = error_of([&] { plan_parallel(m, tensors_of(m, DType::Q8_0), pc(4, 1)); });
  EXPECT_NE(e.find("blk.0.attn_output.weight' is q8_0: over 4 GPUs each would hold 48 of its 192 input columns, not "
                   "a whole number of 32-value q8_0 blocks"),
            std::string::npos)
      << e;
  EXPECT_NE(e.find("this model allows tensor_parallel 1 or 2"), std::string::npos) << e;

  // ffn_down: 320 intermediate columns over 4 = 80 per GPU.
  const ModelConfig f = small_config(4, 4, 64, 320, 2);
  const std::string d = error_of([&] { plan_parallel(f, tensors_of(f, DType::Q8_0), pc(4, 1)); });
  EXPECT_NE(d.find("blk.0.ffn_down.weight' is q8_0: over 4 GPUs each would hold 80 of its 320"), std::string::npos)
      << d;
}

}  // namespace
}  // namespace tandem::parallel
