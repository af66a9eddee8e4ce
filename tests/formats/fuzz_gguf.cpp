// libFuzzer target for the GGUF reader. Built when TANDEM_FUZZ=ON with clang;
// see docs/FORMATS.md for how to run it.
#include <cstddef>
#include <cstdint>

#include "common/error.h"
#include "formats/gguf.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const auto f = tandem::gguf::GgufFile::parse(data, size, "fuzz.gguf");
    // Touch what a loader would touch.
    uint64_t sum = 0;
    for (const auto& t : f->tensors()) {
      if (t.n_bytes > 0) sum += t.data[0] + t.data[t.n_bytes - 1];
      sum += static_cast<uint64_t>(t.n_elements());
    }
    for (const auto& kv : f->metadata()) {
      if (kv.value.is_integer() || kv.value.is_float()) sum += kv.value.as_float() > 0.0 ? 1 : 0;
      if (kv.value.type() == tandem::gguf::ValueType::ARRAY) sum += kv.value.as_array().items.size();
    }
    (void)f->get_string_opt("general.architecture");
    volatile uint64_t sink = sum;
    (void)sink;
  } catch (const tandem::Error&) {
  }
  return 0;
}
