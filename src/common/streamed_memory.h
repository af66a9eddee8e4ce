// Memory for large, long-lived buffers that every token streams through
// (weights the engine repacks at load).
#pragma once

#include <cstddef>

namespace tandem {

// `bytes` of memory, freed with std::free; null when out of memory. From
// 2 MiB up it is aligned to 2 MiB and, on Linux, marked for transparent huge
// pages (MADV_HUGEPAGE; the system default is often "madvise", which gives
// them only to memory so marked): streaming it then takes one TLB entry per
// 2 MiB instead of one per 4 KiB. Smaller buffers are 64-byte aligned.
void* allocate_streamed(size_t bytes);

}  // namespace tandem
