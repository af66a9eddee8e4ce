// A view of one tensor's bytes inside a mapped model file.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/dtype.h"

namespace tandem {

struct TensorRef {
  std::string name;
  DType dtype = DType::F32;
  // Row-major, outermost dimension first: a weight matrix of a linear layer
  // y = W x is [n_out, n_in], its rows contiguous. (GGUF stores dimensions
  // innermost first; the GGUF reader reverses them.)
  std::vector<int64_t> shape;
  const uint8_t* data = nullptr;  // points into the mapped file; valid while the file lives
  uint64_t n_bytes = 0;

  int64_t n_elements() const {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return n;
  }
};

}  // namespace tandem
