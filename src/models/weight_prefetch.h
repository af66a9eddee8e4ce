// Brings a model's mapped weights into memory before it serves, so that the
// first requests do not pay for page faults (and disk reads) one page at a
// time. Progress is counted in bytes as the pages are actually touched.
#pragma once

#include <cstdint>
#include <functional>

#include "common/load_progress.h"
#include "models/model_file.h"

namespace tandem {

struct PrefetchOptions {
  uint64_t chunk_bytes = uint64_t{16} << 20;  // progress and stop checks happen per chunk
  // Tests only: at most this many bytes per second (0 = as fast as the
  // machine goes), so that a small model takes long enough to observe.
  double max_bytes_per_s = 0;
};

// The bytes prefetch_weights() touches: every tensor's bytes, overlaps and
// shared ranges counted once.
uint64_t weight_bytes(const ModelFile& model);

// Reads through every tensor's bytes in chunks (one load per page; the
// kernel is asked to read ahead one chunk), adding each chunk's bytes to
// progress.bytes_done. Sets progress.bytes_total first. Returns false when
// `should_stop` answered true between chunks, leaving the rest untouched.
// PRECONDITIONS: the model outlives the call; `should_stop` is cheap.
bool prefetch_weights(const ModelFile& model, LoadProgress& progress, const std::function<bool()>& should_stop,
                      const PrefetchOptions& options = {});

}  // namespace tandem
