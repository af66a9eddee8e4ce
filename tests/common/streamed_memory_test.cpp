// allocate_streamed: 64-byte alignment below 2 MiB, 2 MiB alignment from
// there (where transparent huge pages can back it), memory that holds what
// is written to it, freed with std::free.
#include "common/streamed_memory.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>

namespace tandem {
namespace {

TEST(StreamedMemory, AlignsSmallBuffersToLinesAndLargeOnesToHugePages) {
  for (const size_t bytes : {size_t{1}, size_t{100}, (size_t{2} << 20) - 1, size_t{2} << 20, (size_t{5} << 20) + 3}) {
    auto* p = static_cast<unsigned char*>(allocate_streamed(bytes));
    ASSERT_NE(p, nullptr) << bytes;
    const size_t align = bytes >= (size_t{2} << 20) ? (size_t{2} << 20) : 64;
    EXPECT_EQ(reinterpret_cast<uintptr_t>(p) % align, 0u) << bytes;
    std::memset(p, 0x5a, bytes);
    EXPECT_EQ(p[0], 0x5a);
    EXPECT_EQ(p[bytes - 1], 0x5a);
    std::free(p);
  }
}

}  // namespace
}  // namespace tandem
