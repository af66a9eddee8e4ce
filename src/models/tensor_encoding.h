// Encodes f32 rows into the weight dtypes Tandem writes (f32, f16, bf16, q8_0).
#pragma once

#include <cstdint>
#include <vector>

#include "common/dtype.h"

namespace tandem {

// src: [rows, cols] f32. Returns the bytes of the same matrix in `dtype`.
// Throws when q8_0 is asked for and cols is not a multiple of 32.
std::vector<uint8_t> encode_matrix(const float* src, int64_t rows, int64_t cols, DType dtype);

// The dtype a converter stores a tensor in: 1-D tensors (norms, biases) stay
// f32; matrices take `requested`, except q8_0 for a row length that is not a
// multiple of 32, which falls back to f16.
DType storage_dtype(const std::vector<int64_t>& shape, DType requested);

}  // namespace tandem
