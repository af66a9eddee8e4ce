#include "common/dtype.h"

#include <algorithm>
#include <array>
#include <cctype>

#include "common/error.h"

namespace tandem {
namespace {

constexpr std::array kTypes = {
    DTypeInfo{DType::F32, "f32", 1, 4},         DTypeInfo{DType::F16, "f16", 1, 2},
    DTypeInfo{DType::Q4_0, "q4_0", 32, 18},     DTypeInfo{DType::Q4_1, "q4_1", 32, 20},
    DTypeInfo{DType::Q5_0, "q5_0", 32, 22},     DTypeInfo{DType::Q5_1, "q5_1", 32, 24},
    DTypeInfo{DType::Q8_0, "q8_0", 32, 34},     DTypeInfo{DType::Q8_1, "q8_1", 32, 36},
    DTypeInfo{DType::Q2_K, "q2_k", 256, 84},    DTypeInfo{DType::Q3_K, "q3_k", 256, 110},
    DTypeInfo{DType::Q4_K, "q4_k", 256, 144},   DTypeInfo{DType::Q5_K, "q5_k", 256, 176},
    DTypeInfo{DType::Q6_K, "q6_k", 256, 210},   DTypeInfo{DType::Q8_K, "q8_k", 256, 292},
    DTypeInfo{DType::IQ2_XXS, "iq2_xxs", 256, 66}, DTypeInfo{DType::IQ2_XS, "iq2_xs", 256, 74},
    DTypeInfo{DType::IQ3_XXS, "iq3_xxs", 256, 98}, DTypeInfo{DType::IQ1_S, "iq1_s", 256, 50},
    DTypeInfo{DType::IQ4_NL, "iq4_nl", 32, 18}, DTypeInfo{DType::IQ3_S, "iq3_s", 256, 110},
    DTypeInfo{DType::IQ2_S, "iq2_s", 256, 82},  DTypeInfo{DType::IQ4_XS, "iq4_xs", 256, 136},
    DTypeInfo{DType::I8, "i8", 1, 1},           DTypeInfo{DType::I16, "i16", 1, 2},
    DTypeInfo{DType::I32, "i32", 1, 4},         DTypeInfo{DType::I64, "i64", 1, 8},
    DTypeInfo{DType::F64, "f64", 1, 8},         DTypeInfo{DType::IQ1_M, "iq1_m", 256, 56},
    DTypeInfo{DType::BF16, "bf16", 1, 2},       DTypeInfo{DType::TQ1_0, "tq1_0", 256, 54},
    DTypeInfo{DType::TQ2_0, "tq2_0", 256, 66},  DTypeInfo{DType::MXFP4, "mxfp4", 32, 17},
};

}  // namespace

std::optional<DTypeInfo> dtype_info(uint32_t raw) {
  for (const auto& info : kTypes)
    if (static_cast<uint32_t>(info.type) == raw) return info;
  return std::nullopt;
}

DTypeInfo dtype_info(DType t) {
  auto info = dtype_info(static_cast<uint32_t>(t));
  check(info.has_value(), "unknown dtype " + std::to_string(static_cast<uint32_t>(t)));
  return *info;
}

std::string_view dtype_name(DType t) { return dtype_info(t).name; }

DType parse_dtype(std::string_view name) {
  std::string lower(name);
  std::transform(lower.begin(), lower.end(), lower.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  for (const auto& info : kTypes)
    if (lower == info.name) return info.type;
  throw Error("unknown dtype '" + std::string(name) + "' (expected f32, f16, bf16 or q8_0)");
}

int64_t dtype_row_bytes(DType t, int64_t n_elems) {
  const DTypeInfo info = dtype_info(t);
  check(n_elems % info.block_elems == 0,
        std::string("a row of ") + std::to_string(n_elems) + " values is not a whole number of " +
            info.name + " blocks of " + std::to_string(info.block_elems));
  return n_elems / info.block_elems * info.block_bytes;
}

}  // namespace tandem
