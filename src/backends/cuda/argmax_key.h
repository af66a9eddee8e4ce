// The key in which argmax_rows (argmax.cu) meets a row's blocks: a (value,
// column) pair as one 64-bit integer whose order is the greedy rule's, the
// larger value first, then the lower column, -0 equal to +0. Key 0 is below
// the key of every value above -inf ("nothing yet"). Host and device code,
// so that a CPU test checks the order (tests/backends/argmax_key_test.cpp).
#pragma once

#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define TANDEM_ARGMAX_KEY_FN __host__ __device__ __forceinline__
#else
#define TANDEM_ARGMAX_KEY_FN inline
#endif

namespace tandem::cuda::argmax_key {

// The value's bits made monotonic in the high word (negative values
// inverted, positive ones above them), the column reversed in the low one.
// Not for NaN, which never takes part.
TANDEM_ARGMAX_KEY_FN unsigned long long key_of(float value, int32_t column) {
  uint32_t b = 0;
  memcpy(&b, &value, sizeof b);
  if (b == 0x80000000u) b = 0u;  // -0 counts as +0
  const uint32_t ordered = (b & 0x80000000u) ? ~b : (b | 0x80000000u);
  return (static_cast<unsigned long long>(ordered) << 32) | (0xffffffffu - static_cast<uint32_t>(column));
}

// The column of a key; -1 for key 0.
TANDEM_ARGMAX_KEY_FN int32_t column_of(unsigned long long key) {
  return key == 0 ? -1 : static_cast<int32_t>(0xffffffffu - static_cast<uint32_t>(key & 0xffffffffu));
}

}  // namespace tandem::cuda::argmax_key
