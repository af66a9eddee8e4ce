// Safetensors writer -> reader round trip and malformed headers.
#include <nlohmann/json.hpp>
#include <optional>

#include "formats/safetensors.h"
#include "format_test_util.h"

namespace tandem {
namespace {

using test::expect_error;
using test::TempDir;

// Builds an image from a header text and `data_bytes` bytes of data.
std::vector<uint8_t> image(const std::string& header, size_t data_bytes,
                           std::optional<uint64_t> claimed_len = std::nullopt) {
  test::Bytes b;
  b.put<uint64_t>(claimed_len.value_or(header.size())).raw(header).zeros(data_bytes);
  return b.v;
}

std::string parse_error(const std::vector<uint8_t>& img, std::initializer_list<std::string_view> parts,
                        const char* where_file = __builtin_FILE(), int where_line = __builtin_LINE()) {
  return expect_error([&] { SafetensorsFile::parse(img.data(), img.size(), "bad.safetensors"); }, parts, where_file, where_line);
}

TEST(Safetensors, RoundTripEveryDTypeAndMetadata) {
  TempDir dir;
  std::vector<float> f32 = {1.f, -2.f, 3.5f, 0.f, 1e-3f, 7.f};
  std::vector<uint16_t> f16 = {0x3c00, 0xc000, 0x7bff};
  std::vector<uint16_t> bf16 = {0x3f80, 0xbf80};
  std::vector<int8_t> i8 = {-128, 0, 127};
  std::vector<int32_t> i32 = {1, -1, 1 << 30, 5};
  std::vector<int64_t> i64 = {-(1ll << 60)};
  SafetensorsWriter w;
  w.add_tensor("model.layers.0.mlp.up_proj.weight", DType::F32, {2, 3}, f32.data(), 24);
  w.add_tensor("f16", DType::F16, {3}, f16.data(), 6);
  w.add_tensor("bf16", DType::BF16, {1, 2}, bf16.data(), 4);
  w.add_tensor("i8", DType::I8, {3}, i8.data(), 3);
  w.add_tensor("i32", DType::I32, {2, 2}, i32.data(), 16);
  w.add_tensor("scalar", DType::I64, {}, i64.data(), 8);
  w.add_tensor("empty", DType::F32, {0, 4}, nullptr, 0);
  w.set_metadata("format", "pt");
  w.set_metadata("note", "h\xc3\xa9");
  w.write(dir.file("m.safetensors"));

  const auto bytes = test::read_file(dir.file("m.safetensors"));
  uint64_t header_len = 0;
  std::memcpy(&header_len, bytes.data(), 8);
  EXPECT_EQ(header_len % 8, 0u);  // data starts 8-byte aligned
  EXPECT_TRUE(nlohmann::json::accept(std::string(bytes.begin() + 8, bytes.begin() + 8 + header_len)));

  const auto f = SafetensorsFile::open(dir.file("m.safetensors"));
  EXPECT_EQ(f->metadata().at("format"), "pt");
  EXPECT_EQ(f->metadata().at("note"), "h\xc3\xa9");
  const auto& ts = f->tensors();
  ASSERT_EQ(ts.size(), 7u);
  // Tensors come back in data order, which is the order they were added.
  EXPECT_EQ(ts[0].name, "model.layers.0.mlp.up_proj.weight");
  EXPECT_EQ(ts[0].dtype, DType::F32);
  EXPECT_EQ(ts[0].shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(std::memcmp(ts[0].data, f32.data(), 24), 0);
  EXPECT_EQ(ts[1].dtype, DType::F16);
  EXPECT_EQ(std::memcmp(ts[1].data, f16.data(), 6), 0);
  EXPECT_EQ(ts[2].dtype, DType::BF16);
  EXPECT_EQ(std::memcmp(ts[2].data, bf16.data(), 4), 0);
  EXPECT_EQ(ts[3].dtype, DType::I8);
  EXPECT_EQ(std::memcmp(ts[3].data, i8.data(), 3), 0);
  EXPECT_EQ(ts[4].dtype, DType::I32);
  EXPECT_EQ(std::memcmp(ts[4].data, i32.data(), 16), 0);
  EXPECT_EQ(ts[5].name, "scalar");
  EXPECT_TRUE(ts[5].shape.empty());
  EXPECT_EQ(ts[5].n_elements(), 1);
  EXPECT_EQ(std::memcmp(ts[5].data, i64.data(), 8), 0);
  EXPECT_EQ(ts[6].name, "empty");
  EXPECT_EQ(ts[6].n_bytes, 0u);
}

TEST(Safetensors, WriterRejectsBadInput) {
  SafetensorsWriter w;
  std::vector<uint8_t> buf(64);
  expect_error([&] { w.add_tensor("q", DType::Q8_0, {32}, buf.data(), 34); }, {"'q'", "q8_0"});
  expect_error([&] { w.add_tensor("a", DType::F32, {2}, buf.data(), 4); }, {"'a'", "8"});
  expect_error([&] { w.add_tensor("__metadata__", DType::F32, {1}, buf.data(), 4); }, {"__metadata__"});
  expect_error([&] { w.add_tensor("n", DType::F32, {-1}, buf.data(), 4); }, {"'n'", "negative"});
  w.add_tensor("a", DType::F32, {1}, buf.data(), 4);
  expect_error([&] { w.add_tensor("a", DType::F32, {1}, buf.data(), 4); }, {"'a'", "twice"});
  expect_error([&] { w.write("/nonexistent/dir/x.safetensors"); }, {"/nonexistent/dir/x.safetensors"});
  SafetensorsWriter bad_utf8;
  bad_utf8.add_tensor("\xff", DType::F32, {1}, buf.data(), 4);
  TempDir dir;
  expect_error([&] { bad_utf8.write(dir.file("u.safetensors")); }, {"UTF-8"});
}

TEST(Safetensors, TruncationAtEveryLengthIsAnError) {
  const std::string header = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"I8","shape":[3],"data_offsets":[8,11]}})";
  const auto full = image(header, 11);
  ASSERT_EQ(SafetensorsFile::parse(full.data(), full.size(), "ok")->tensors().size(), 2u);
  for (size_t n = 0; n < full.size(); ++n) {
    SCOPED_TRACE(n);
    std::vector<uint8_t> prefix(full.begin(), full.begin() + static_cast<std::ptrdiff_t>(n));
    parse_error(prefix, {"bad.safetensors"});
  }
}

TEST(Safetensors, MalformedHeaders) {
  const std::string ok_entry = R"("t":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]})";
  parse_error(image("{" + ok_entry, 16), {"bad.safetensors", "not valid JSON"});
  parse_error(image("{\"t\": nonsense}", 16), {"not valid JSON"});
  parse_error(image("[1,2,3]", 0), {"does not start with a JSON object"});
  parse_error(image("{" + ok_entry + "}", 16, 1000), {"bad.safetensors", "header length 1000", "past the end"});
  parse_error(image("{" + ok_entry + "}", 16, ~uint64_t{0}), {"past the end"});
  parse_error(image("{" + ok_entry + "}", 15), {"'t'", "past the end of the file", "truncated"});
  parse_error(image(R"({"t":{"dtype":"F32","shape":[2,2],"data_offsets":[0,12]}})", 16),
              {"'t'", "spans 12 bytes", "needs 4 x 4"});
  parse_error(image(R"({"t":{"dtype":"F32","shape":[2,2],"data_offsets":[16,0]}})", 16), {"'t'", "begin after end"});
  parse_error(image(R"({"t":{"dtype":"F32","shape":[2,-2],"data_offsets":[0,16]}})", 16), {"'t'", "non-negative"});
  parse_error(image(R"({"t":{"dtype":"F32","shape":[2.5],"data_offsets":[0,16]}})", 16), {"'t'", "non-negative"});
  parse_error(image(R"({"t":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,16]}})", 16),
              {"'t'", "64 bits"});
  parse_error(image(R"({"t":{"dtype":"F32","shape":[4611686018427387904],"data_offsets":[0,16]}})", 16),
              {"'t'", "spans 16 bytes"});
  parse_error(image(R"({"t":{"dtype":"F32","shape":[4],"data_offsets":[0]}})", 16), {"'t'", "data_offsets"});
  parse_error(image(R"({"t":{"dtype":"F32","data_offsets":[0,16]}})", 16), {"'t'", "shape"});
  parse_error(image(R"({"t":{"shape":[4],"data_offsets":[0,16]}})", 16), {"'t'", "dtype"});
  parse_error(image(R"({"t":[1]})", 16), {"'t'", "not a JSON object"});
  parse_error(image(R"({"t":{"dtype":"F64","shape":[2],"data_offsets":[0,16]}})", 16),
              {"'t'", "dtype 'F64'", "supported: F32, F16, BF16, I8, I32, I64"});
  parse_error(image(R"({"t":{"dtype":"F8_E4M3","shape":[2],"data_offsets":[0,2]}})", 2), {"'F8_E4M3'"});
  parse_error(image(R"({"__metadata__":{"a":1}})", 0), {"__metadata__", "not a string"});
  parse_error(image(R"({"__metadata__":[]})", 0), {"__metadata__", "not a JSON object"});
  parse_error(image(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})", 16),
              {"'a'", "overlaps", "'b'"});
  parse_error(image("{" + ok_entry + "," + ok_entry + "}", 16), {"'t'", "twice"});
  parse_error(image("{\"t\":" + std::string(5000, '[') + std::string(5000, ']') + "}", 0), {"nests deeper"});
  parse_error(std::vector<uint8_t>{1, 2, 3}, {"bad.safetensors", "too small"});
}

TEST(Safetensors, AcceptsPaddedHeaderAndEmptyFile) {
  const auto img = image(R"({"t":{"dtype":"I32","shape":[1],"data_offsets":[0,4]}}   )", 4);
  const auto f = SafetensorsFile::parse(img.data(), img.size(), "ok");
  ASSERT_EQ(f->tensors().size(), 1u);
  EXPECT_EQ(f->tensors()[0].data, img.data() + img.size() - 4);
  const auto empty = image("{}", 0);
  EXPECT_TRUE(SafetensorsFile::parse(empty.data(), empty.size(), "empty")->tensors().empty());
}

}  // namespace
}  // namespace tandem
