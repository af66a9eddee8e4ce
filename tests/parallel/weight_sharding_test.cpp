// Weight sharding: the rule of every canonical tensor, row shards as views,
// column shards as copies (f32, f16, bf16 and whole Q8_0 blocks), and the
// reassembly of outputs: concatenated row-shard outputs and summed
// column-shard partial outputs equal the unsharded matmul.
#include "parallel/weight_sharding.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>

#include "backends/cpu/cpu_kernels.h"
#include "common/error.h"
#include "common/half.h"
#include "models/tensor_names.h"
#include "parallel_test_util.h"

namespace tandem::parallel {
namespace {

// A [rows, cols] matrix of random values stored as `dtype`.
struct Matrix {
  std::vector<uint8_t> bytes;
  TensorRef ref;
};

Matrix random_matrix(DType dtype, int64_t rows, int64_t cols, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> f(static_cast<size_t>(rows * cols));
  for (float& v : f) v = dist(rng);
  Matrix m;
  const int64_t row_bytes = dtype_row_bytes(dtype, cols);
  m.bytes.resize(static_cast<size_t>(rows * row_bytes));
  for (int64_t r = 0; r < rows; ++r) {
    const float* src = f.data() + r * cols;
    uint8_t* dst = m.bytes.data() + r * row_bytes;
    for (int64_t c = 0; c < cols; ++c) {
      if (dtype == DType::F32) std::memcpy(dst + 4 * c, src + c, 4);
      if (dtype == DType::F16 || dtype == DType::BF16) {
        const uint16_t h = dtype == DType::F16 ? f32_to_f16(src[c]) : f32_to_bf16(src[c]);
        std::memcpy(dst + 2 * c, &h, 2);
      }
    }
    if (dtype == DType::Q8_0) cpu::quantize_row_q8_0(src, reinterpret_cast<BlockQ8_0*>(dst), cols);
  }
  m.ref.name = "blk.0.test.weight";
  m.ref.dtype = dtype;
  m.ref.shape = {rows, cols};
  m.ref.data = m.bytes.data();
  m.ref.n_bytes = m.bytes.size();
  return m;
}

std::vector<float> to_f32(const TensorRef& t) {
  std::vector<float> out(static_cast<size_t>(t.n_elements()));
  const int64_t cols = t.shape.size() == 2 ? t.shape[1] : t.shape[0];
  const int64_t rows = t.n_elements() / cols;
  const int64_t row_bytes = dtype_row_bytes(t.dtype, cols);
  for (int64_t r = 0; r < rows; ++r) cpu::dequantize_row(t.dtype, t.data + r * row_bytes, out.data() + r * cols, cols);
  return out;
}

cpu::WeightMatrix matrix_of(const TensorRef& t) { return {t.dtype, t.shape[0], t.shape[1], t.data}; }

const ShardRule kRows{ShardAxis::Rows, 1, false, "rows", ""};
const ShardRule kColumns{ShardAxis::Columns, 1, false, "columns", ""};

TEST(ShardRule, EveryCanonicalTensorHasARule) {
  ModelConfig c = testing::small_config(8, 2, 64, 512, 2);
  for (Architecture arch : {Architecture::Llama, Architecture::Qwen2, Architecture::Qwen3}) {
    c.arch = arch;
    c.qkv_bias = arch == Architecture::Qwen2;
    c.qk_norm = arch == Architecture::Qwen3;
    c.tied_embeddings = arch == Architecture::Qwen2;
    for (const ExpectedTensor& e : expected_tensors(c)) {
      const ShardRule r = shard_rule(e.name, c);
      const std::string s = e.name.substr(e.name.rfind('.', e.name.size() - 8) + 1);
      SCOPED_TRACE(e.name);
      if (e.name.find("attn_q.") != std::string::npos || e.name.find("attn_k.") != std::string::npos ||
          e.name.find("attn_v.") != std::string::npos) {
        EXPECT_EQ(r.axis, ShardAxis::Rows);  // weights and qwen2 biases alike, whole heads
        EXPECT_EQ(r.unit, c.head_dim);
      } else if (e.name.find("attn_output.weight") != std::string::npos) {
        EXPECT_EQ(r.axis, ShardAxis::Columns);
        EXPECT_EQ(r.unit, c.head_dim);
      } else if (e.name.find("ffn_gate") != std::string::npos || e.name.find("ffn_up") != std::string::npos) {
        EXPECT_EQ(r.axis, ShardAxis::Rows);
        EXPECT_EQ(r.unit, 1);
      } else if (e.name.find("ffn_down") != std::string::npos) {
        EXPECT_EQ(r.axis, ShardAxis::Columns);
      } else if (e.name == "output.weight") {
        EXPECT_EQ(r.axis, ShardAxis::Rows);
        EXPECT_TRUE(r.uneven_ok);
      } else {
        // token_embd, every norm (qwen3 q/k norms included).
        EXPECT_EQ(r.axis, ShardAxis::Replicated);
      }
    }
  }
  EXPECT_THROW(shard_rule("blk.0.ffn_gate_exps.weight", c), Error);
}

TEST(WeightSharding, RowShardsAreViewsInWholeHeads) {
  const Matrix m = random_matrix(DType::Q8_0, 8 * 16, 64, 1);  // 8 heads of head_dim 16
  const ShardRule per_head{ShardAxis::Rows, 16, false, "KV heads", ""};
  for (int64_t world : {1, 2, 4, 8}) {
    int64_t next = 0;
    for (int64_t r = 0; r < world; ++r) {
      const TensorShard s = shard_tensor(m.ref, per_head, r, world);
      EXPECT_TRUE(s.is_view());
      EXPECT_EQ(s.range.begin, next);
      EXPECT_EQ(s.range.size(), 8 * 16 / world);
      EXPECT_EQ(s.range.begin % 16, 0);
      EXPECT_EQ(s.ref.shape, (std::vector<int64_t>{8 * 16 / world, 64}));
      EXPECT_EQ(s.ref.data, m.ref.data + s.range.begin * dtype_row_bytes(DType::Q8_0, 64));
      EXPECT_EQ(s.ref.n_bytes, shard_bytes(m.ref, per_head, r, world));
      next = s.range.end;
    }
    EXPECT_EQ(next, 8 * 16);
  }
  const std::string e = [&] {
    try {
      shard_tensor(m.ref, per_head, 0, 3);
    } catch (const Error& err) {
      return std::string(err.what());
    }
    return std::string();
  }();
  EXPECT_NE(e.find("its 8 KV heads cannot be split over 3 GPUs"), std::string::npos) << e;
}

TEST(WeightSharding, BiasesSplitWithTheirRows) {
  std::vector<float> bias(4 * 8);
  for (size_t i = 0; i < bias.size(); ++i) bias[i] = static_cast<float>(i);
  TensorRef t{"blk.0.attn_k.bias", DType::F32, {32}, reinterpret_cast<const uint8_t*>(bias.data()), 128};
  ModelConfig c = testing::small_config(8, 4, 8, 64, 1);
  const TensorShard s = shard_tensor(t, shard_rule(t.name, c), 1, 2);
  ASSERT_EQ(s.ref.shape, std::vector<int64_t>{16});
  EXPECT_TRUE(s.is_view());
  EXPECT_EQ(reinterpret_cast<const float*>(s.ref.data)[0], 16.0f);
}

class ColumnSharding : public ::testing::TestWithParam<DType> {};

TEST_P(ColumnSharding, CopiesReassembleToTheOriginalBytes) {
  const DType dtype = GetParam();
  const Matrix m = random_matrix(dtype, 48, 256, 7);
  const std::vector<float> full = to_f32(m.ref);
  for (int64_t world : {2, 4, 8}) {
    std::vector<uint8_t> rebuilt(m.bytes.size());
    int64_t offset_bytes = 0;
    for (int64_t r = 0; r < world; ++r) {
      const TensorShard s = shard_tensor(m.ref, kColumns, r, world);
      ASSERT_FALSE(s.is_view());
      ASSERT_EQ(s.ref.shape, (std::vector<int64_t>{48, 256 / world}));
      EXPECT_EQ(s.ref.n_bytes, shard_bytes(m.ref, kColumns, r, world));
      // Values: the shard's column c is the full matrix's column begin + c.
      const std::vector<float> part = to_f32(s.ref);
      for (int64_t row = 0; row < 48; ++row)
        for (int64_t col = 0; col < s.range.size(); ++col)
          ASSERT_EQ(part[static_cast<size_t>(row * s.range.size() + col)],
                    full[static_cast<size_t>(row * 256 + s.range.begin + col)]);
      // Bytes: the shards' row pieces side by side are the original rows.
      const int64_t piece = dtype_row_bytes(dtype, s.range.size());
      const int64_t full_row = dtype_row_bytes(dtype, 256);
      for (int64_t row = 0; row < 48; ++row)
        std::memcpy(rebuilt.data() + row * full_row + offset_bytes, s.ref.data + row * piece,
                    static_cast<size_t>(piece));
      offset_bytes += piece;
    }
    EXPECT_EQ(rebuilt, m.bytes) << "world " << world;
  }
}

// y = W x: row shards give slices of y exactly; column shards give partial
// sums that add up to y (the all-reduce).
TEST_P(ColumnSharding, PartialOutputsSumToTheUnshardedMatmul) {
  const DType dtype = GetParam();
  const Matrix w = random_matrix(dtype, 96, 256, 11);
  const int64_t T = 3;
  std::vector<float> x(static_cast<size_t>(T * 256));
  std::mt19937 rng(5);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  for (float& v : x) v = dist(rng);
  std::vector<float> want(static_cast<size_t>(T * 96));
  cpu::matmul_ref(matrix_of(w.ref), x.data(), T, want.data());

  for (int64_t world : {2, 4}) {
    std::vector<float> sum(want.size(), 0.0f), rows(want.size(), 0.0f);
    for (int64_t r = 0; r < world; ++r) {
      const TensorShard col = shard_tensor(w.ref, kColumns, r, world);
      const int64_t width = col.range.size();
      std::vector<float> xs(static_cast<size_t>(T * width));
      for (int64_t t = 0; t < T; ++t)
        std::copy_n(x.data() + t * 256 + col.range.begin, width, xs.data() + t * width);
      std::vector<float> partial(want.size());
      cpu::matmul_ref(matrix_of(col.ref), xs.data(), T, partial.data());
      for (size_t i = 0; i < sum.size(); ++i) sum[i] += partial[i];

      const TensorShard row = shard_tensor(w.ref, kRows, r, world);
      std::vector<float> ys(static_cast<size_t>(T * row.range.size()));
      cpu::matmul_ref(matrix_of(row.ref), x.data(), T, ys.data());
      for (int64_t t = 0; t < T; ++t)
        std::copy_n(ys.data() + t * row.range.size(), row.range.size(), rows.data() + t * 96 + row.range.begin);
    }
    for (size_t i = 0; i < want.size(); ++i) {
      EXPECT_NEAR(sum[i], want[i], 1e-4 * (1 + std::fabs(want[i]))) << "world " << world << " index " << i;
      EXPECT_EQ(rows[i], want[i]) << "world " << world << " index " << i;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Dtypes, ColumnSharding, ::testing::Values(DType::F32, DType::F16, DType::BF16, DType::Q8_0),
                         [](const auto& info) { return std::string(dtype_name(info.param)); });

TEST(WeightSharding, Q8_0ColumnShardsOfPartialBlocksAreRefused) {
  const Matrix m = random_matrix(DType::Q8_0, 4, 96, 3);
  EXPECT_NO_THROW(shard_tensor(m.ref, kColumns, 0, 3));  // 32 columns each
  try {
    shard_tensor(m.ref, kColumns, 0, 2);  // 48 columns each
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("not a whole number of 32-value q8_0 blocks"), std::string::npos) << e.what();
  }
  // The same split of bf16 values is fine.
  const Matrix b = random_matrix(DType::BF16, 4, 96, 3);
  EXPECT_NO_THROW(shard_tensor(b.ref, kColumns, 1, 2));
}

TEST(WeightSharding, LmHeadSplitsVocabularyUnevenly) {
  const Matrix m = random_matrix(DType::F16, 10, 32, 2);
  const ShardRule head = lm_head_rule();
  EXPECT_EQ(shard_tensor(m.ref, head, 0, 3).range, (Range{0, 4}));
  EXPECT_EQ(shard_tensor(m.ref, head, 1, 3).range, (Range{4, 7}));
  EXPECT_EQ(shard_tensor(m.ref, head, 2, 3).range, (Range{7, 10}));
  EXPECT_THROW(check_shardable(m.ref, head, 11), Error);
}

}  // namespace
}  // namespace tandem::parallel
