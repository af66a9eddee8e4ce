#include "models/weight_prefetch.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <thread>
#include <vector>

namespace tandem {
namespace {

struct ByteRange {
  const uint8_t* begin;
  const uint8_t* end;
};

// Tensor byte ranges sorted by address, overlapping or touching ones merged.
std::vector<ByteRange> weight_ranges(const ModelFile& model) {
  std::vector<ByteRange> ranges;
  for (const TensorRef& t : model.tensors())
    if (t.data != nullptr && t.n_bytes > 0) ranges.push_back({t.data, t.data + t.n_bytes});
  std::sort(ranges.begin(), ranges.end(), [](const ByteRange& a, const ByteRange& b) { return a.begin < b.begin; });
  std::vector<ByteRange> merged;
  for (const ByteRange& r : ranges) {
    if (!merged.empty() && r.begin <= merged.back().end) merged.back().end = std::max(merged.back().end, r.end);
    else merged.push_back(r);
  }
  return merged;
}

// Asks the kernel to start reading [p, p + n) in; a hint, so failures are ignored.
void advise_willneed(const uint8_t* p, size_t n, size_t page) {
  const auto start = reinterpret_cast<uintptr_t>(p) & ~(static_cast<uintptr_t>(page) - 1);
  const auto end = reinterpret_cast<uintptr_t>(p + n);
  ::madvise(reinterpret_cast<void*>(start), end - start, MADV_WILLNEED);
}

}  // namespace

uint64_t weight_bytes(const ModelFile& model) {
  uint64_t total = 0;
  for (const ByteRange& r : weight_ranges(model)) total += static_cast<uint64_t>(r.end - r.begin);
  return total;
}

bool prefetch_weights(const ModelFile& model, LoadProgress& progress, const std::function<bool()>& should_stop,
                      const PrefetchOptions& options) {
  const std::vector<ByteRange> ranges = weight_ranges(model);
  uint64_t total = 0;
  for (const ByteRange& r : ranges) total += static_cast<uint64_t>(r.end - r.begin);
  progress.bytes_total.store(total);
  progress.bytes_done.store(0);

  const long page_size = sysconf(_SC_PAGESIZE);
  const size_t page = page_size > 0 ? static_cast<size_t>(page_size) : 4096;
  const size_t chunk = std::max<size_t>(page, static_cast<size_t>(options.chunk_bytes));
  const auto started = std::chrono::steady_clock::now();
  uint64_t done = 0;
  uint8_t sink = 0;  // the loads' results, kept so they are not optimised away
  for (const ByteRange& r : ranges) {
    for (const uint8_t* p = r.begin; p < r.end; p += chunk) {
      if (should_stop && should_stop()) return false;
      const size_t n = static_cast<size_t>(std::min<ptrdiff_t>(static_cast<ptrdiff_t>(chunk), r.end - p));
      if (options.max_bytes_per_s > 0) {
        // Throttled (tests): wait for this chunk's turn, then touch it, so
        // that bytes_done never runs ahead of the rate.
        const auto due = started + std::chrono::duration<double>(static_cast<double>(done + n) / options.max_bytes_per_s);
        std::this_thread::sleep_until(std::chrono::time_point_cast<std::chrono::steady_clock::duration>(due));
      }
      if (p + n < r.end) advise_willneed(p + n, std::min<size_t>(chunk, static_cast<size_t>(r.end - (p + n))), page);
      // One load per page brings the page in (a fault, and a disk read when
      // it is not cached); the last byte covers a chunk ending mid-page.
      const volatile uint8_t* v = p;
      for (size_t off = 0; off < n; off += page) sink ^= v[off];
      sink ^= v[n - 1];
      done += n;
      progress.bytes_done.store(done);
    }
  }
  asm volatile("" : : "r"(sink));
  return true;
}

}  // namespace tandem
