// The all-reduce that ends a tensor-parallel attention or FFN block, fused
// with the RMSNorm that follows it (and the 8-bit GEMV's input
// quantization): one kernel where the plain path takes a collective and a
// norm. Implemented over NCCL's symmetric memory (NcclTensorReduce,
// nccl_tensor_reduce.h); the runner sees only this interface.
//
// Each rank writes its part of the block's output (its heads' o
// projection, its columns' down projection) into part(slot), then every
// rank calls reduce_norm(slot) at the same point of its step: it waits for
// the other ranks' parts, adds them all to its residual stream x in rank
// order (so that every rank holds the same bits), and normalizes the
// result. Reductions alternate the two slots (attention 0, FFN 1): a
// rank's next write into a slot comes after a later reduction that every
// rank has reached, so no rank still reads it.
//
// Peer rows (one token): the product that ends the block may instead store
// its row straight into every other rank's memory as its blocks finish
// (peer_rows(slot): each value with the reduction's epoch in one 8-byte
// word), besides its own part(slot); the reduction, told so
// (ReduceNormArgs::from_peer_rows), then waits for those words in its own
// memory rather than meeting the others at a barrier and reading their
// parts across the link. The sums are the same: x + part 0 + part 1 + ...
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace tandem::cuda {

struct ReduceNormArgs {
  // [T, width] f32, ordinary memory. Without `rows`: rows i < n_rows +=
  // the sum over ranks of part(slot)'s row i, and are normalized into out.
  float* x = nullptr;
  // With `rows` (the last reduction of a step, before the LM head): out row
  // i is the norm of x's row rows[i] plus its parts, i < n_rows, and x is
  // not written (a row listed twice would otherwise be summed twice).
  const int32_t* rows = nullptr;
  int64_t n_rows = 0;
  const float* weight = nullptr;  // [width] norm weight
  float eps = 0.0f;
  float* out = nullptr;  // [n_rows, width] f32: rmsnorm of the reduced rows
  // With q and d, out rows i < n_quantized are also quantized for gemv_q8,
  // as cuda::rmsnorm does it.
  int8_t* q = nullptr;  // [n_quantized, width]
  float* d = nullptr;   // [n_quantized, width / 32]
  int64_t n_quantized = 0;
  // One row (n_rows 1, row 0 of the parts), whose product also stored it
  // with peer_rows(slot) on every rank.
  bool from_peer_rows = false;
};

// Where a one-token product stores its row into the other ranks' memory
// (TensorReduce::peer_rows). Word c of row[p] takes column c as
// (f32 bits) | (epoch << 32), one 8-byte store, with epoch = *epoch + 1
// read after the product's wait for its predecessor.
struct PeerRows {
  static constexpr int kMaxPeers = 7;
  uint64_t* row[kMaxPeers] = {};  // for each other rank: this rank's row in that rank's memory, [width] words
  int n_peers = 0;                // 0: the reduction takes no peer rows
  const uint32_t* epoch = nullptr;  // the slot's last epoch, on this GPU
};

class TensorReduce {
 public:
  virtual ~TensorReduce() = default;
  // The most rows of x a reduction takes (its parts' capacity).
  virtual int64_t max_tokens() const = 0;
  // The row width the parts hold (the model's hidden size).
  virtual int64_t width() const = 0;
  // This rank's part for reductions on `slot` (0 or 1): [max_tokens, width] f32.
  virtual float* part(int slot) const = 0;
  // Queues the reduction and norm on `stream` (see above). Every rank of the
  // group calls it with the same slot and row count (at least one). x's rows beyond the
  // listed ones are not read; `rows` may index up to max_tokens.
  virtual void reduce_norm(int slot, const ReduceNormArgs& args, cudaStream_t stream) = 0;
  // Where a one-token product stores its row for a reduction on `slot` with
  // from_peer_rows (see above); n_peers 0 where this reduction takes none.
  virtual PeerRows peer_rows(int slot) const {
    (void)slot;
    return {};
  }
};

}  // namespace tandem::cuda
