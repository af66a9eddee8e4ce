// Scalar references: matmul_ref (f64 accumulation), row dequantization and
// Q8_0 quantization. These define the numerics the fast paths are tested
// against; keep them simple.
#include <algorithm>
#include <cmath>
#include <vector>

#include "backends/cpu/cpu_kernels.h"
#include "backends/cpu/q8_0_rows8.h"
#include "common/error.h"
#include "common/half.h"

namespace tandem::cpu {

namespace {

void check_row_dtype(DType dtype, int64_t n) {
  switch (dtype) {
    case DType::F32:
    case DType::F16:
    case DType::BF16:
      return;
    case DType::Q8_0:
      check(n % kQ8_0BlockElems == 0,
            "q8_0 row length " + std::to_string(n) + " is not a multiple of 32");
      return;
    default:
      throw Error("the CPU kernels cannot compute with dtype " + std::string(dtype_name(dtype)) +
                  " (supported: f32, f16, bf16, q8_0)");
  }
}

}  // namespace

void dequantize_row(DType dtype, const void* src, float* dst, int64_t n) {
  check(n >= 0, "dequantize_row: negative length");
  check_row_dtype(dtype, n);
  switch (dtype) {
    case DType::F32: {
      const float* s = static_cast<const float*>(src);
      for (int64_t i = 0; i < n; ++i) dst[i] = s[i];
      return;
    }
    case DType::F16: {
      const uint16_t* s = static_cast<const uint16_t*>(src);
      for (int64_t i = 0; i < n; ++i) dst[i] = f16_to_f32(s[i]);
      return;
    }
    case DType::BF16: {
      const uint16_t* s = static_cast<const uint16_t*>(src);
      for (int64_t i = 0; i < n; ++i) dst[i] = bf16_to_f32(s[i]);
      return;
    }
    case DType::Q8_0: {
      const BlockQ8_0* b = static_cast<const BlockQ8_0*>(src);
      for (int64_t i = 0; i < n / kQ8_0BlockElems; ++i) {
        const float d = f16_to_f32(b[i].d);
        for (int j = 0; j < kQ8_0BlockElems; ++j) dst[i * kQ8_0BlockElems + j] = d * b[i].qs[j];
      }
      return;
    }
    default:
      return;  // rejected by check_row_dtype
  }
}

// As GGUF writers do: d = amax / 127 in f32, q = round-half-away(x * (1 / d)),
// and d is stored rounded to f16.
void quantize_row_q8_0(const float* src, BlockQ8_0* dst, int64_t n) {
  check(n >= 0 && n % kQ8_0BlockElems == 0,
        "quantize_row_q8_0: length " + std::to_string(n) + " is not a multiple of 32");
  for (int64_t i = 0; i < n / kQ8_0BlockElems; ++i) {
    const float* x = src + i * kQ8_0BlockElems;
    float amax = 0.0f;
    for (int j = 0; j < kQ8_0BlockElems; ++j) amax = std::max(amax, std::fabs(x[j]));
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    dst[i].d = f32_to_f16(d);
    for (int j = 0; j < kQ8_0BlockElems; ++j) {
      dst[i].qs[j] = static_cast<int8_t>(std::lround(x[j] * id));
    }
  }
}

void matmul_ref(const WeightMatrix& w, const float* x, int64_t n_tokens, float* y) {
  check(w.rows >= 0 && w.cols >= 0 && n_tokens >= 0, "matmul_ref: negative shape");
  check_row_dtype(w.dtype, w.cols);
  const int64_t row_bytes = dtype_row_bytes(w.dtype, w.cols);
  std::vector<float> row(static_cast<size_t>(w.cols));
  for (int64_t r = 0; r < w.rows; ++r) {
    if (w.layout == WeightLayout::Q8_0Rows8) {
      dequantize_rows8_row(w, r, row.data());
    } else {
      dequantize_row(w.dtype, static_cast<const char*>(w.data) + r * row_bytes, row.data(), w.cols);
    }
    for (int64_t t = 0; t < n_tokens; ++t) {
      double acc = 0.0;
      for (int64_t c = 0; c < w.cols; ++c) acc += static_cast<double>(row[c]) * x[t * w.cols + c];
      y[t * w.rows + r] = static_cast<float>(acc);
    }
  }
}

}  // namespace tandem::cpu
