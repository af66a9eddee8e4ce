#include "common/streamed_memory.h"

#include <cstdlib>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace tandem {

void* allocate_streamed(size_t bytes) {
  constexpr size_t kHugePage = size_t{2} << 20;
  constexpr size_t kLine = 64;
  if (bytes < kHugePage) return std::aligned_alloc(kLine, (bytes + kLine - 1) / kLine * kLine);
  void* p = nullptr;
  if (posix_memalign(&p, kHugePage, bytes) != 0) return nullptr;
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  // Advice only: where the kernel has no transparent huge pages the memory
  // stays in ordinary pages, so the result is not checked. The buffer's own
  // pages only: a last part shorter than 2 MiB keeps ordinary pages rather
  // than a huge page that is mostly unused.
  constexpr size_t kPage = 4096;
  ::madvise(p, (bytes + kPage - 1) / kPage * kPage, MADV_HUGEPAGE);
#endif
  return p;
}

}  // namespace tandem
