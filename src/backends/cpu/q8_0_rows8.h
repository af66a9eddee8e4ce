// Q8_0 weights regrouped for the SIMD decode kernels ("rows8" layout): the
// same quants and scales as GGUF's Q8_0 (no value changes), reordered so that
// one 32-byte load holds 4 consecutive columns of 8 rows. The GEMV then
// multiplies 8 rows by 4 broadcast activations at a time and keeps one
// accumulator of 8 row sums: no horizontal reductions, no per-block scale
// shuffling, about half the instructions of the row-major Q8_0 kernel.
//
// Layout: rows are grouped by 8 (the last group padded with zero rows);
// group g is cols / 32 consecutive BlockQ8_0x8, one per 32-column block b:
//   d[i]   f16 scale of row 8g + i in block b;
//   qs     the quant of row 8g + i at column 32b + 4j + k is qs[32j + 4i + k]
//          (rows8_index; j < 8 steps of 4 columns, i < 8 rows, k < 4).
// Same size as Q8_0.
#pragma once

#include <cstdint>
#include <memory>

#include "backends/cpu/cpu_kernels.h"

namespace tandem::cpu {

inline constexpr int kRows8 = 8;
struct BlockQ8_0x8 {
  uint16_t d[kRows8];                 // f16 scale of each row
  int8_t qs[kRows8 * kQ8_0BlockElems];  // [step j][row i][4 columns]
};
static_assert(sizeof(BlockQ8_0x8) == kRows8 * sizeof(BlockQ8_0));

inline int64_t rows8_index(int row_in_group, int col_in_block) {
  return 32 * (col_in_block / 4) + 4 * row_in_group + col_in_block % 4;
}

// Memory of a repacked matrix (64-byte aligned).
struct PackedWeights {
  std::unique_ptr<uint8_t, void (*)(void*)> bytes{nullptr, nullptr};
  int64_t size = 0;
};

// Repacks a row-major Q8_0 matrix into the rows8 layout; returns the matrix
// (layout Q8_0Rows8, data in `storage`), or `w` unchanged when it cannot be
// repacked: not Q8_0 row-major, or a quant of -128 (the rows8 kernels put the
// activation's sign on the weight, which -128 cannot take).
WeightMatrix repack_q8_0_rows8(const WeightMatrix& w, PackedWeights& storage);

// `w` in the layout the best kernel set of this CPU computes fastest with:
// Q8_0 in rows8 where the kernels prefer it (KernelSet::q8_0_rows8_preferred;
// storage then holds the bytes), anything else unchanged.
WeightMatrix prepare_for_best_kernels(const WeightMatrix& w, PackedWeights& storage);

// Row r of a rows8 matrix as f32 (cols values).
void dequantize_rows8_row(const WeightMatrix& w, int64_t r, float* out);

}  // namespace tandem::cpu
