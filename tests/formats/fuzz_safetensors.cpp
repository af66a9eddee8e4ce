// libFuzzer target for the safetensors reader. Built when TANDEM_FUZZ=ON with
// clang; see docs/FORMATS.md for how to run it.
#include <cstddef>
#include <cstdint>

#include "common/error.h"
#include "formats/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const auto f = tandem::SafetensorsFile::parse(data, size, "fuzz.safetensors");
    uint64_t sum = 0;
    for (const auto& t : f->tensors())
      if (t.n_bytes > 0) sum += t.data[0] + t.data[t.n_bytes - 1];
    volatile uint64_t sink = sum;
    (void)sink;
  } catch (const tandem::Error&) {
  }
  return 0;
}
