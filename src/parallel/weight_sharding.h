// Tensor-parallel weight sharding (Megatron style). For y = W x with
// W [n_out, n_in]:
//   - q/k/v, gate, up split by output rows (q/k/v in whole heads): each GPU
//     computes its own slice of y, no communication;
//   - attn_output and ffn_down split by input columns, matching the slice of
//     x the GPU already holds: each GPU computes a partial y, and an
//     all-reduce (sum) over the GPUs completes it;
//   - the LM head splits by vocabulary rows (logits gathered at the end);
//   - norms, the token embedding and qwen3's per-head q/k norms are
//     replicated; qwen2's q/k/v biases split with their rows.
// A row shard is a view into the mapped file; a column shard is a copy, row
// by row (Q8_0: whole 32-value blocks, so the shard width must be a multiple
// of 32).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "formats/tensor_ref.h"
#include "models/model_config.h"

namespace tandem::parallel {

// [begin, end) of a split dimension.
struct Range {
  int64_t begin = 0;
  int64_t end = 0;
  int64_t size() const { return end - begin; }
  bool operator==(const Range&) const = default;
};

// Splits n items into `parts` contiguous ranges as evenly as possible; the
// first n % parts ranges hold one item more. Part `index` of them.
// PRECONDITIONS: parts >= 1, 0 <= index < parts, n >= 0.
Range split_evenly(int64_t n, int64_t parts, int64_t index);

enum class ShardAxis {
  Replicated,  // every GPU holds the whole tensor
  Rows,        // split along dimension 0 (output rows of a matrix, or a 1-D bias)
  Columns,     // split along dimension 1 (input columns of a matrix)
};
const char* shard_axis_name(ShardAxis axis);  // "replicated", "rows", "columns"

struct ShardRule {
  ShardAxis axis = ShardAxis::Replicated;
  // The split dimension is cut only at multiples of `unit` (head_dim for the
  // per-head q/k/v rows and attn_output columns; 1 otherwise).
  int64_t unit = 1;
  // Whether the units may split unevenly (the LM head's vocabulary rows).
  // Otherwise they must divide by the number of GPUs.
  bool uneven_ok = false;
  // What a unit is, for error messages: "attention heads", "KV heads", ...
  const char* unit_name = "rows";
  // Why, for the sharding table in docs and plans.
  const char* reason = "";
};

// The rule for a canonical tensor name (models/tensor_names.h). Throws
// tandem::Error for a name that is not a known weight.
ShardRule shard_rule(std::string_view canonical_name, const ModelConfig& config);
// The LM head's rule, also for a tied model's token_embd used as the head.
ShardRule lm_head_rule();

// The slice of the split dimension (in elements) that `rank` holds.
// Replicated: the whole dimension 0.
Range shard_range(const TensorRef& t, const ShardRule& rule, int64_t rank, int64_t world);

// Throws tandem::Error, naming the tensor and the numbers, when `t` cannot be
// split over `world` GPUs by `rule`: units that do not divide, or a column
// shard whose width is not a whole number of the dtype's blocks.
void check_shardable(const TensorRef& t, const ShardRule& rule, int64_t world);

// Bytes rank `rank` holds of `t`.
uint64_t shard_bytes(const TensorRef& t, const ShardRule& rule, int64_t rank, int64_t world);

// One GPU's part of a tensor: a view into the mapped file (rows, replicated)
// or an owned copy (columns). `ref.data` stays valid while the shard and the
// source mapping live; moving a shard keeps it valid.
struct TensorShard {
  TensorRef ref;               // shape of the shard, e.g. [hidden, q_dim / world] for attn_output
  std::vector<uint8_t> owned;  // the bytes of a copied shard; empty for a view
  Range range;                 // the slice of the split dimension it holds

  TensorShard() = default;
  TensorShard(TensorShard&&) = default;
  TensorShard& operator=(TensorShard&&) = default;
  TensorShard(const TensorShard&) = delete;
  TensorShard& operator=(const TensorShard&) = delete;
  bool is_view() const { return owned.empty(); }
};

// PRECONDITIONS: check_shardable(t, rule, world) passed; 0 <= rank < world.
TensorShard shard_tensor(const TensorRef& t, const ShardRule& rule, int64_t rank, int64_t world);

}  // namespace tandem::parallel
