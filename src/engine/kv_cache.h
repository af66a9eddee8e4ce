// Paged KV cache: fixed-size blocks of `block_size` token positions, handed to
// sequences by a BlockAllocator. A sequence's block table maps position p to
// block table[p / block_size], slot p % block_size. The scheduler and the
// attention kernels share this layout.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "models/model_config.h"

namespace tandem {

class BlockAllocator {
 public:
  explicit BlockAllocator(int64_t n_blocks);
  int64_t n_blocks() const { return static_cast<int64_t>(in_use_.size()); }
  int64_t n_free() const { return static_cast<int64_t>(free_.size()); }
  bool can_allocate(int64_t n) const { return n <= n_free(); }
  // nullopt when none is free.
  std::optional<int32_t> allocate();
  // PRECONDITIONS: `block` came from allocate() and was not freed since.
  void free(int32_t block);

 private:
  std::vector<int32_t> free_;  // LIFO: recently freed blocks are warm in cache
  std::vector<bool> in_use_;
};

// Storage for the attention layers' keys and values, f32.
class KvCache {
 public:
  // PRECONDITIONS: config validated; n_blocks, block_size > 0.
  KvCache(const ModelConfig& config, int64_t n_blocks, int64_t block_size);

  int64_t n_blocks() const { return n_blocks_; }
  int64_t block_size() const { return block_size_; }
  int64_t kv_dim() const { return kv_dim_; }
  size_t bytes() const { return (keys_.size() + values_.size()) * sizeof(float); }

  // Row of one position: [n_kv_heads * head_dim].
  float* key(int64_t layer, int32_t block, int64_t slot) { return keys_.data() + offset(layer, block, slot); }
  float* value(int64_t layer, int32_t block, int64_t slot) { return values_.data() + offset(layer, block, slot); }
  const float* key(int64_t layer, int32_t block, int64_t slot) const { return keys_.data() + offset(layer, block, slot); }
  const float* value(int64_t layer, int32_t block, int64_t slot) const {
    return values_.data() + offset(layer, block, slot);
  }

  // Bytes per token position across all layers (keys and values).
  static int64_t bytes_per_token(const ModelConfig& config);

 private:
  size_t offset(int64_t layer, int32_t block, int64_t slot) const {
    return static_cast<size_t>(((layer * n_blocks_ + block) * block_size_ + slot) * kv_dim_);
  }
  int64_t n_layers_;
  int64_t n_blocks_;
  int64_t block_size_;
  int64_t kv_dim_;
  std::vector<float> keys_;    // [n_layers, n_blocks, block_size, kv_dim]
  std::vector<float> values_;  // [n_layers, n_blocks, block_size, kv_dim]
};

// One sequence's view of the cache.
struct SequenceKv {
  std::vector<int32_t> block_table;
  int64_t n_tokens = 0;  // positions [0, n_tokens) hold valid keys/values

  int64_t capacity(int64_t block_size) const { return static_cast<int64_t>(block_table.size()) * block_size; }
  // Grows the table to hold `n_tokens` positions. Returns false (and leaves
  // the table as it was) when the allocator runs out.
  bool reserve(int64_t n_tokens, int64_t block_size, BlockAllocator& allocator);
  void release(BlockAllocator& allocator);
};

}  // namespace tandem
