#include "backends/cpu/q8_0_rows8.h"

#include <cstdlib>
#include <cstring>

#include "backends/cpu/kernel_set.h"
#include "common/error.h"
#include "common/half.h"
#include "common/streamed_memory.h"

namespace tandem::cpu {

WeightMatrix repack_q8_0_rows8(const WeightMatrix& w, PackedWeights& storage) {
  if (w.dtype != DType::Q8_0 || w.layout != WeightLayout::RowMajor || w.rows <= 0 || w.cols <= 0 ||
      w.cols % kQ8_0BlockElems != 0)
    return w;
  const int64_t nb = w.cols / kQ8_0BlockElems;
  const auto* src = static_cast<const BlockQ8_0*>(w.data);
  for (int64_t i = 0; i < w.rows * nb; ++i)
    for (int8_t q : src[i].qs)
      if (q == -128) return w;
  const int64_t groups = (w.rows + kRows8 - 1) / kRows8;
  const int64_t bytes = groups * nb * static_cast<int64_t>(sizeof(BlockQ8_0x8));
  void* mem = allocate_streamed(static_cast<size_t>(bytes));  // streamed every token: huge pages
  check(mem != nullptr, "out of memory repacking a Q8_0 matrix (" + std::to_string(bytes) + " bytes)");
  storage.bytes = {static_cast<uint8_t*>(mem), std::free};
  storage.size = bytes;
  std::memset(mem, 0, static_cast<size_t>(bytes));  // padding rows: scale 0, quants 0
  auto* dst = static_cast<BlockQ8_0x8*>(mem);
  for (int64_t r = 0; r < w.rows; ++r) {
    const int64_t g = r / kRows8;
    const int i = static_cast<int>(r % kRows8);
    for (int64_t b = 0; b < nb; ++b) {
      const BlockQ8_0& s = src[r * nb + b];
      BlockQ8_0x8& d = dst[g * nb + b];
      d.d[i] = s.d;
      for (int c = 0; c < kQ8_0BlockElems; c += 4) std::memcpy(d.qs + rows8_index(i, c), s.qs + c, 4);
    }
  }
  WeightMatrix out = w;
  out.data = mem;
  out.layout = WeightLayout::Q8_0Rows8;
  return out;
}

WeightMatrix prepare_for_best_kernels(const WeightMatrix& w, PackedWeights& storage) {
  return best_kernel_set().q8_0_rows8_preferred ? repack_q8_0_rows8(w, storage) : w;
}

void dequantize_rows8_row(const WeightMatrix& w, int64_t r, float* out) {
  const int64_t nb = w.cols / kQ8_0BlockElems;
  const auto* blocks = static_cast<const BlockQ8_0x8*>(w.data) + (r / kRows8) * nb;
  const int i = static_cast<int>(r % kRows8);
  for (int64_t b = 0; b < nb; ++b) {
    const float d = f16_to_f32(blocks[b].d[i]);
    for (int c = 0; c < kQ8_0BlockElems; ++c)
      out[b * kQ8_0BlockElems + c] = d * static_cast<float>(blocks[b].qs[rows8_index(i, c)]);
  }
}

}  // namespace tandem::cpu
