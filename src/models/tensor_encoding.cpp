#include "models/tensor_encoding.h"

#include <cstring>

#include "backends/cpu/cpu_kernels.h"
#include "common/error.h"
#include "common/half.h"

namespace tandem {

std::vector<uint8_t> encode_matrix(const float* src, int64_t rows, int64_t cols, DType dtype) {
  const int64_t row_bytes = dtype_row_bytes(dtype, cols);
  std::vector<uint8_t> out(static_cast<size_t>(rows * row_bytes));
  for (int64_t r = 0; r < rows; ++r) {
    const float* s = src + r * cols;
    uint8_t* d = out.data() + r * row_bytes;
    switch (dtype) {
      case DType::F32:
        std::memcpy(d, s, static_cast<size_t>(cols) * 4);
        break;
      case DType::F16:
        for (int64_t c = 0; c < cols; ++c) {
          const uint16_t h = f32_to_f16(s[c]);
          std::memcpy(d + 2 * c, &h, 2);
        }
        break;
      case DType::BF16:
        for (int64_t c = 0; c < cols; ++c) {
          const uint16_t h = f32_to_bf16(s[c]);
          std::memcpy(d + 2 * c, &h, 2);
        }
        break;
      case DType::Q8_0:
        cpu::quantize_row_q8_0(s, reinterpret_cast<BlockQ8_0*>(d), cols);
        break;
      default:
        throw Error("cannot write tensors of type " + std::string(dtype_name(dtype)) +
                    " (supported: f32, f16, bf16, q8_0)");
    }
  }
  return out;
}

DType storage_dtype(const std::vector<int64_t>& shape, DType requested) {
  if (shape.size() < 2) return DType::F32;
  if (requested == DType::Q8_0 && shape.back() % kQ8_0BlockElems != 0) return DType::F16;
  return requested;
}

}  // namespace tandem
