#include "parallel/weight_sharding.h"

#include <algorithm>
#include <cstring>

#include "common/error.h"

namespace tandem::parallel {
namespace {

// "blk.12.attn_q.weight" -> "attn_q.weight"; other names unchanged.
std::string_view layer_suffix(std::string_view name) {
  if (name.rfind("blk.", 0) != 0) return name;
  const size_t dot = name.find('.', 4);
  return dot == std::string_view::npos ? name : name.substr(dot + 1);
}

// Elements of one row along dimension 0 (1 for a 1-D tensor).
int64_t row_elems(const TensorRef& t) {
  int64_t n = 1;
  for (size_t i = 1; i < t.shape.size(); ++i) n *= t.shape[i];
  return n;
}

int64_t split_dim_size(const TensorRef& t, const ShardRule& rule) {
  if (rule.axis == ShardAxis::Columns) return t.shape.size() == 2 ? t.shape[1] : 0;
  return t.shape.empty() ? 1 : t.shape[0];
}

}  // namespace

Range split_evenly(int64_t n, int64_t parts, int64_t index) {
  const int64_t base = n / parts, extra = n % parts;
  const int64_t begin = index * base + std::min(index, extra);
  return Range{begin, begin + base + (index < extra ? 1 : 0)};
}

const char* shard_axis_name(ShardAxis axis) {
  switch (axis) {
    case ShardAxis::Replicated: return "replicated";
    case ShardAxis::Rows: return "rows";
    case ShardAxis::Columns: return "columns";
  }
  return "?";
}

ShardRule lm_head_rule() {
  return ShardRule{ShardAxis::Rows, 1, true, "vocabulary rows",
                   "each GPU computes the logits of its vocabulary slice; the slices are gathered"};
}

ShardRule shard_rule(std::string_view name, const ModelConfig& c) {
  const std::string_view s = layer_suffix(name);
  const int64_t hd = c.head_dim;
  if (name == "token_embd.weight")
    return {ShardAxis::Replicated, 1, false, "rows", "embedding lookup needs every row (a tied LM head uses a row view)"};
  if (name == "output.weight") return lm_head_rule();
  if (name == "output_norm.weight" || name == "rope_freqs.weight")
    return {ShardAxis::Replicated, 1, false, "rows", "applied to the whole hidden vector"};
  if (s == "attn_norm.weight" || s == "ffn_norm.weight")
    return {ShardAxis::Replicated, 1, false, "rows", "applied to the whole hidden vector before the split matmuls"};
  if (s == "attn_q.weight" || s == "attn_q.bias")
    return {ShardAxis::Rows, hd, false, "attention heads", "whole query heads per GPU"};
  if (s == "attn_k.weight" || s == "attn_k.bias" || s == "attn_v.weight" || s == "attn_v.bias")
    return {ShardAxis::Rows, hd, false, "KV heads", "whole KV heads per GPU, beside the query heads that read them"};
  if (s == "attn_q_norm.weight" || s == "attn_k_norm.weight")
    return {ShardAxis::Replicated, 1, false, "rows", "one [head_dim] weight shared by every head"};
  if (s == "attn_output.weight")
    return {ShardAxis::Columns, hd, false, "attention heads",
            "input columns of the GPU's heads; partial outputs summed by all-reduce"};
  if (s == "attn_output.bias")
    return {ShardAxis::Replicated, 1, false, "rows", "added once, after the all-reduce"};
  if (s == "ffn_gate.weight" || s == "ffn_up.weight")
    return {ShardAxis::Rows, 1, false, "FFN rows", "a slice of the intermediate vector per GPU"};
  if (s == "ffn_down.weight")
    return {ShardAxis::Columns, 1, false, "FFN columns",
            "input columns of the GPU's intermediate slice; partial outputs summed by all-reduce"};
  throw Error("no tensor-parallel rule for tensor '" + std::string(name) + "'");
}

Range shard_range(const TensorRef& t, const ShardRule& rule, int64_t rank, int64_t world) {
  const int64_t dim = split_dim_size(t, rule);
  if (rule.axis == ShardAxis::Replicated) return Range{0, dim};
  const Range units = split_evenly(dim / rule.unit, world, rank);
  return Range{units.begin * rule.unit, units.end * rule.unit};
}

void check_shardable(const TensorRef& t, const ShardRule& rule, int64_t world) {
  check(world >= 1, "internal: tensor-parallel world size must be positive");
  if (rule.axis == ShardAxis::Replicated || world == 1) return;
  const std::string where = "tensor '" + t.name + "'";
  check(rule.axis == ShardAxis::Rows || t.shape.size() == 2, where + " is not a matrix; it cannot split by columns");
  const int64_t dim = split_dim_size(t, rule);
  check(dim % rule.unit == 0, where + ": dimension " + std::to_string(dim) + " is not a whole number of " +
                                  rule.unit_name + " of " + std::to_string(rule.unit));
  const int64_t units = dim / rule.unit;
  if (rule.uneven_ok) {
    check(units >= world, where + ": its " + std::to_string(units) + " " + rule.unit_name + " cannot be split over " +
                              std::to_string(world) + " GPUs");
  } else {
    check(units % world == 0, where + ": its " + std::to_string(units) + " " + rule.unit_name +
                                  " cannot be split over " + std::to_string(world) + " GPUs");
  }
  const DTypeInfo info = dtype_info(t.dtype);
  if (rule.axis == ShardAxis::Columns) {
    const int64_t width = dim / world;
    check(width % info.block_elems == 0,
          where + " is " + info.name + ": over " + std::to_string(world) + " GPUs each would hold " +
              std::to_string(width) + " of its " + std::to_string(dim) + " input columns, not a whole number of " +
              std::to_string(info.block_elems) + "-value " + info.name + " blocks");
  } else {
    check(row_elems(t) % info.block_elems == 0,
          where + ": rows of " + std::to_string(row_elems(t)) + " values are not whole " + info.name + " blocks");
  }
}

uint64_t shard_bytes(const TensorRef& t, const ShardRule& rule, int64_t rank, int64_t world) {
  if (rule.axis == ShardAxis::Replicated || world == 1) return t.n_bytes;
  const Range r = shard_range(t, rule, rank, world);
  if (rule.axis == ShardAxis::Rows) return static_cast<uint64_t>(r.size() * dtype_row_bytes(t.dtype, row_elems(t)));
  return static_cast<uint64_t>(t.shape[0] * dtype_row_bytes(t.dtype, r.size()));
}

TensorShard shard_tensor(const TensorRef& t, const ShardRule& rule, int64_t rank, int64_t world) {
  check(rank >= 0 && rank < world, "internal: rank " + std::to_string(rank) + " outside a world of " +
                                       std::to_string(world));
  check_shardable(t, rule, world);
  TensorShard s;
  s.ref = t;
  s.range = shard_range(t, rule, rank, world);
  if (rule.axis == ShardAxis::Replicated || world == 1) return s;
  s.ref.name = t.name + "#tp" + std::to_string(rank) + "/" + std::to_string(world);
  if (rule.axis == ShardAxis::Rows) {
    // [rows, ...] -> [range, ...]: contiguous, a view.
    const int64_t row_bytes = dtype_row_bytes(t.dtype, row_elems(t));
    s.ref.shape[0] = s.range.size();
    s.ref.data = t.data + s.range.begin * row_bytes;
    s.ref.n_bytes = static_cast<uint64_t>(s.range.size() * row_bytes);
    return s;
  }
  // [rows, cols] -> [rows, range]: a strided slice of every row, copied.
  // Column offsets are multiples of the block size (check_shardable), so a
  // Q8_0 row slice is whole blocks with their scales.
  const int64_t rows = t.shape[0];
  const int64_t src_row = dtype_row_bytes(t.dtype, t.shape[1]);
  const int64_t dst_row = dtype_row_bytes(t.dtype, s.range.size());
  const int64_t offset = dtype_row_bytes(t.dtype, s.range.begin);
  s.owned.resize(static_cast<size_t>(rows * dst_row));
  for (int64_t r = 0; r < rows; ++r)
    std::memcpy(s.owned.data() + r * dst_row, t.data + r * src_row + offset, static_cast<size_t>(dst_row));
  s.ref.shape[1] = s.range.size();
  s.ref.data = s.owned.data();
  s.ref.n_bytes = s.owned.size();
  return s;
}

}  // namespace tandem::parallel
