#include <gtest/gtest.h>

#include "common/dtype.h"
#include "common/error.h"

namespace tandem {
namespace {

TEST(DType, NamesAndSizes) {
  EXPECT_EQ(parse_dtype("Q8_0"), DType::Q8_0);
  EXPECT_EQ(parse_dtype("bf16"), DType::BF16);
  EXPECT_EQ(dtype_row_bytes(DType::Q8_0, 64), 68);
  EXPECT_EQ(dtype_row_bytes(DType::F16, 10), 20);
  EXPECT_EQ(dtype_name(DType::Q4_K), "q4_k");
  EXPECT_FALSE(dtype_info(uint32_t{4}).has_value());  // removed ggml type number
}

TEST(DType, RejectsBadInput) {
  EXPECT_THROW(parse_dtype("f8"), Error);
  EXPECT_THROW(dtype_row_bytes(DType::Q8_0, 33), Error);
}

}  // namespace
}  // namespace tandem
