#include "engine/model_runner.h"

#include <string>

#include "common/error.h"

namespace tandem {

void check_step(std::span<const SequenceChunk> chunks, int64_t max_context, int64_t block_size,
                int64_t vocab_size) {
  for (const SequenceChunk& ch : chunks) {
    check(ch.kv != nullptr && !ch.tokens.empty(), "internal: empty chunk in a forward step");
    const int64_t end = ch.kv->n_tokens + static_cast<int64_t>(ch.tokens.size());
    // Messages are built only on failure: these run for every chunk and token of every step.
    if (end > max_context)
      throw Error("sequence of " + std::to_string(end) + " tokens exceeds the context window of " +
                  std::to_string(max_context));
    check(ch.kv->capacity(block_size) >= end, "internal: KV blocks not reserved for a forward step");
    if (vocab_size > 0)
      for (const int32_t id : ch.tokens)
        if (id < 0 || id >= vocab_size)
          throw Error("token id " + std::to_string(id) + " is outside the vocabulary of " + std::to_string(vocab_size));
  }
}

}  // namespace tandem
