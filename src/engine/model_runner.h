// The engine's contract with a backend: one step runs a batch of sequence
// chunks {sequence -> new tokens} and returns logits. That one shape covers
// prefill, chunked prefill and decode; the scheduler decides the chunks.
#pragma once

#include <cstdint>
#include <limits>
#include <span>
#include <vector>

#include "engine/kv_cache.h"
#include "engine/row_sampling.h"
#include "models/model_config.h"

namespace tandem {

struct SequenceChunk {
  std::span<const int32_t> tokens;  // new tokens, at positions [kv->n_tokens, kv->n_tokens + tokens.size())
  SequenceKv* kv = nullptr;         // the sequence's cache view; n_tokens advances by tokens.size()
  bool all_logits = false;          // logits for every new token, else only for the last
  // Positions below prompt_len hold the prompt; the rest were generated.
  // Backends compute prompt tokens with prefill kernels and generated tokens
  // with decode kernels, each batch-invariant, so a sequence's answer never
  // depends on what else shares its steps. The default: all prompt.
  int64_t prompt_len = std::numeric_limits<int64_t>::max();
  // The caller needs no more of this chunk's logits row than its argmax
  // (greedy sampling without penalties or logprobs, or a prompt chunk with
  // more to come). A backend that computes row_tokens() may then leave the
  // row out of what it copies back (forward()'s row is unspecified).
  bool argmax_only = false;
  // When the backend samples_rows() and the chunk is neither argmax_only nor
  // all_logits: the backend samples the chunk's row itself by this rule
  // (engine/row_sampling.h; the pointee lives through forward()), returns
  // the token in row_tokens(), and may leave the row out of what it copies
  // back (forward()'s row is unspecified). Ignored by other backends.
  const RowSampling* sampling = nullptr;
};

// The checks every backend makes on a step before computing it: chunks are
// non-empty, no sequence passes `max_context`, blocks are reserved for the
// new positions and, when `vocab_size` > 0, token ids are in the vocabulary.
// Throws tandem::Error ("sequence of N tokens exceeds the context window of
// M", ...).
void check_step(std::span<const SequenceChunk> chunks, int64_t max_context, int64_t block_size,
                int64_t vocab_size = 0);

class ModelRunner {
 public:
  virtual ~ModelRunner() = default;
  virtual const ModelConfig& config() const = 0;

  // Runs the model over all chunks in one step.
  // Returns logits [n_rows, vocab], rows in chunk order: tokens.size() rows
  // for a chunk with all_logits, one row otherwise. The reference stays valid
  // until the next call.
  // PRECONDITIONS: each chunk's kv has blocks reserved for its new positions
  // (SequenceKv::reserve); chunks name distinct sequences; tokens < vocab.
  virtual const std::vector<float>& forward(std::span<const SequenceChunk> chunks) = 0;

  // After forward(): for each returned row, in the same order, the token the
  // backend picked where the logits are (the GPU): for an argmax_only chunk
  // its argmax (NaN counts as -inf, ties go to the lowest id: Sampler's
  // greedy rule), for a chunk with `sampling` the token that rule drew; -1
  // when no logit is above -inf; unspecified for other rows. Empty for
  // backends that compute none. Valid until the next call.
  virtual std::span<const int32_t> row_tokens() const { return {}; }
  // Whether forward() samples chunks that carry a RowSampling.
  virtual bool samples_rows() const { return false; }

  // Called by the thread that calls forward() while it has no step to run,
  // about once a second (EngineService): a backend that keeps other
  // processes in step (several hosts) tells them it is alive.
  virtual void idle() {}

  // The longest sequence (prompt + generated) a step may hold.
  virtual int64_t max_context() const = 0;
  virtual BlockAllocator& block_allocator() = 0;
  virtual int64_t block_size() const = 0;
  // Bytes of weights read once per step (all matrices), for bandwidth figures.
  virtual uint64_t weight_bytes_per_step() const = 0;
};

}  // namespace tandem
