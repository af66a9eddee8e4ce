// Element types of weight tensors, with GGUF's numbering (ggml_type) so that a
// GGUF tensor's type field maps one-to-one. Types Tandem cannot compute with
// are still named, so `inspect` can report them and loading can refuse them
// with a clear message.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace tandem {

enum class DType : uint32_t {
  F32 = 0,
  F16 = 1,
  Q4_0 = 2,
  Q4_1 = 3,
  Q5_0 = 6,
  Q5_1 = 7,
  Q8_0 = 8,
  Q8_1 = 9,
  Q2_K = 10,
  Q3_K = 11,
  Q4_K = 12,
  Q5_K = 13,
  Q6_K = 14,
  Q8_K = 15,
  IQ2_XXS = 16,
  IQ2_XS = 17,
  IQ3_XXS = 18,
  IQ1_S = 19,
  IQ4_NL = 20,
  IQ3_S = 21,
  IQ2_S = 22,
  IQ4_XS = 23,
  I8 = 24,
  I16 = 25,
  I32 = 26,
  I64 = 27,
  F64 = 28,
  IQ1_M = 29,
  BF16 = 30,
  TQ1_0 = 34,
  TQ2_0 = 35,
  MXFP4 = 39,
};

// Layout of one element block: `block_elems` values stored in `block_bytes`.
// Plain types have block_elems == 1.
struct DTypeInfo {
  DType type;
  const char* name;   // "f32", "q8_0", ...
  int64_t block_elems;
  int64_t block_bytes;
};

// nullopt for numbers that are no known type.
std::optional<DTypeInfo> dtype_info(uint32_t raw);
DTypeInfo dtype_info(DType t);
std::string_view dtype_name(DType t);
// Parses "f32", "F16", "bf16", "q8_0"... Throws tandem::Error on unknown names.
DType parse_dtype(std::string_view name);

// Bytes taken by a row of `n_elems` values. Throws when n_elems is not a
// multiple of the block size.
int64_t dtype_row_bytes(DType t, int64_t n_elems);

// Q8_0: 32 int8 values sharing one f16 scale. value[i] = d * qs[i].
inline constexpr int kQ8_0BlockElems = 32;
struct BlockQ8_0 {
  uint16_t d;  // f16 scale
  int8_t qs[kQ8_0BlockElems];
};
static_assert(sizeof(BlockQ8_0) == 34);

}  // namespace tandem
