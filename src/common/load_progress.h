// How far model loading has got, in bytes of weights. The loader writes it
// (on the loading thread); servers and progress bars read it from any thread.
#pragma once

#include <atomic>
#include <cstdint>

namespace tandem {

struct LoadProgress {
  // Bytes of weights brought into memory so far, and in all (0 until the
  // model file has been opened and its tensors counted).
  std::atomic<uint64_t> bytes_done{0};
  std::atomic<uint64_t> bytes_total{0};
};

}  // namespace tandem
