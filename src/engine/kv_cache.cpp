#include "engine/kv_cache.h"

#include "common/error.h"

namespace tandem {

BlockAllocator::BlockAllocator(int64_t n_blocks) : in_use_(static_cast<size_t>(n_blocks), false) {
  free_.reserve(static_cast<size_t>(n_blocks));
  for (int64_t b = n_blocks - 1; b >= 0; --b) free_.push_back(static_cast<int32_t>(b));
}

std::optional<int32_t> BlockAllocator::allocate() {
  if (free_.empty()) return std::nullopt;
  const int32_t b = free_.back();
  free_.pop_back();
  in_use_[static_cast<size_t>(b)] = true;
  return b;
}

void BlockAllocator::free(int32_t block) {
  check(block >= 0 && block < n_blocks() && in_use_[static_cast<size_t>(block)],
        "internal: freeing KV block " + std::to_string(block) + " that is not in use");
  in_use_[static_cast<size_t>(block)] = false;
  free_.push_back(block);
}

KvCache::KvCache(const ModelConfig& config, int64_t n_blocks, int64_t block_size)
    : n_layers_(config.n_layers), n_blocks_(n_blocks), block_size_(block_size), kv_dim_(config.kv_dim()) {
  check(n_blocks > 0 && block_size > 0, "KV cache needs at least one block");
  const size_t n = static_cast<size_t>(n_layers_ * n_blocks_ * block_size_ * kv_dim_);
  keys_.assign(n, 0.0f);
  values_.assign(n, 0.0f);
}

int64_t KvCache::bytes_per_token(const ModelConfig& config) {
  return 2 * config.n_layers * config.kv_dim() * static_cast<int64_t>(sizeof(float));
}

bool SequenceKv::reserve(int64_t n, int64_t block_size, BlockAllocator& allocator) {
  const int64_t needed = (n + block_size - 1) / block_size - static_cast<int64_t>(block_table.size());
  if (needed <= 0) return true;
  if (!allocator.can_allocate(needed)) return false;
  for (int64_t i = 0; i < needed; ++i) block_table.push_back(*allocator.allocate());
  return true;
}

void SequenceKv::release(BlockAllocator& allocator) {
  for (int32_t b : block_table) allocator.free(b);
  block_table.clear();
  n_tokens = 0;
}

}  // namespace tandem
