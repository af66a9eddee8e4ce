// The GGUF reader on bad input: every failure is one tandem::Error naming the
// file and the problem; nothing crashes or reads out of bounds.
#include "formats/gguf.h"
#include "format_test_util.h"

namespace tandem::gguf {
namespace {

using test::Bytes;
using test::expect_error;

constexpr uint32_t kF32 = 0;
constexpr uint32_t kQ8_0 = 8;

std::string parse_error(const Bytes& b, std::initializer_list<std::string_view> parts,
                        const char* where_file = __builtin_FILE(), int where_line = __builtin_LINE()) {
  // Copy to a buffer of exactly the image size so that sanitizers see any overread.
  std::vector<uint8_t> image(b.v);
  return expect_error([&] { GgufFile::parse(image.data(), image.size(), "bad.gguf"); }, parts, where_file, where_line);
}

// A small valid file: two metadata entries, two tensors; it ends exactly at
// the end of the last tensor, so every shorter prefix is truncated.
Bytes small_valid_file() {
  Bytes b = test::gguf_header(3, 2, 3);
  test::gguf_kv_str(b, "general.architecture", "llama");
  test::gguf_kv_u32(b, "llama.context_length", 128);
  b.str("tokenizer.ggml.tokens").put<uint32_t>(9).put<uint32_t>(8).put<uint64_t>(2).str("a").str("bc");
  test::gguf_tensor_info(b, "w", {2, 2}, kF32, 0);
  test::gguf_tensor_info(b, "q", {32}, kQ8_0, 32);
  b.pad_to(32);
  b.zeros(32 + 34);
  return b;
}

TEST(GgufCorrupt, SmallValidFileParses) {
  const Bytes b = small_valid_file();
  const auto f = GgufFile::parse(b.v.data(), b.size(), "ok.gguf");
  EXPECT_EQ(f->tensors().size(), 2u);
  EXPECT_EQ(f->get("tokenizer.ggml.tokens").as_array().items.at(1).as_string(), "bc");
}

TEST(GgufCorrupt, TruncationAtEveryLengthIsAnError) {
  const Bytes b = small_valid_file();
  for (size_t n = 0; n < b.size(); ++n) {
    SCOPED_TRACE(n);
    std::vector<uint8_t> prefix(b.v.begin(), b.v.begin() + static_cast<std::ptrdiff_t>(n));
    const std::string msg = expect_error([&] { GgufFile::parse(prefix.data(), prefix.size(), "cut.gguf"); },
                                         {"cut.gguf"});
    if (n >= 24) {
      EXPECT_NE(msg.find("truncated"), std::string::npos) << msg;
    }
  }
}

TEST(GgufCorrupt, WrongMagic) {
  Bytes b = small_valid_file();
  b.v[0] = 'X';
  parse_error(b, {"bad.gguf", "not a GGUF file", "XGUF"});
  Bytes tiny;
  tiny.raw("GG");
  parse_error(tiny, {"bad.gguf", "too small"});
  Bytes legacy;
  legacy.raw("tjgg").zeros(64);
  parse_error(legacy, {"legacy"});
}

TEST(GgufCorrupt, UnsupportedVersions) {
  Bytes v1 = small_valid_file();
  v1.v[4] = 1;
  parse_error(v1, {"bad.gguf", "version 1", "not supported"});
  Bytes v4 = small_valid_file();
  v4.v[4] = 4;
  parse_error(v4, {"bad.gguf", "unsupported GGUF version 4"});
  // A big-endian writer puts the version's bytes the other way round.
  Bytes be = small_valid_file();
  be.v[4] = 0;
  be.v[7] = 3;
  parse_error(be, {"bad.gguf", "big-endian"});
}

TEST(GgufCorrupt, TensorDataPastEndOfFile) {
  Bytes b = test::gguf_header(3, 1, 0);
  test::gguf_tensor_info(b, "blk.0.attn_q.weight", {1024}, kF32, 0);
  b.pad_to(32);
  b.zeros(2000);
  parse_error(b, {"bad.gguf", "tensor 'blk.0.attn_q.weight' data [offset 96, 4096 bytes] runs past the end of the file (size 2096)",
                  "truncated"});
  // An offset far past the end (and one whose sum would wrap around).
  for (uint64_t offset : {uint64_t{1} << 40, ~uint64_t{31}}) {
    Bytes c = test::gguf_header(3, 1, 0);
    test::gguf_tensor_info(c, "t", {8}, kF32, offset);
    c.pad_to(32).zeros(32);
    parse_error(c, {"bad.gguf", "'t'", "past the end"});
  }
}

TEST(GgufCorrupt, MisalignedOffset) {
  Bytes b = test::gguf_header(3, 1, 0);
  test::gguf_tensor_info(b, "t", {8}, kF32, 4);
  b.pad_to(32).zeros(64);
  parse_error(b, {"bad.gguf", "'t'", "offset 4", "alignment 32"});
}

TEST(GgufCorrupt, HugeStringLength) {
  Bytes b = test::gguf_header(3, 0, 1);
  b.put<uint64_t>(uint64_t{1} << 62).raw("key").zeros(16);
  parse_error(b, {"bad.gguf", "metadata key #0", "4611686018427387904 bytes", "truncated or corrupt"});
  Bytes v = test::gguf_header(3, 0, 1);
  v.str("k").put<uint32_t>(8).put<uint64_t>(~uint64_t{0});
  parse_error(v, {"bad.gguf", "'k'", "claims a length"});
  Bytes t = test::gguf_header(3, 1, 0);
  t.put<uint64_t>(1000).raw("short").zeros(20);
  parse_error(t, {"bad.gguf", "tensor #0"});
}

TEST(GgufCorrupt, HugeArrayCount) {
  Bytes b = test::gguf_header(3, 0, 1);
  b.str("tokenizer.ggml.tokens").put<uint32_t>(9).put<uint32_t>(8).put<uint64_t>(uint64_t{1} << 60).zeros(64);
  parse_error(b, {"bad.gguf", "'tokenizer.ggml.tokens'", "1152921504606846976 string values", "truncated or corrupt"});
  Bytes c = test::gguf_header(3, 0, 1);
  c.str("x").put<uint32_t>(9).put<uint32_t>(12).put<uint64_t>(~uint64_t{0}).zeros(8);
  parse_error(c, {"bad.gguf", "'x'", "float64"});
}

TEST(GgufCorrupt, HugeCounts) {
  Bytes b = test::gguf_header(3, 0, uint64_t{1} << 50);
  b.zeros(100);
  parse_error(b, {"bad.gguf", "metadata entries"});
  Bytes t = test::gguf_header(3, ~uint64_t{0}, 0);
  t.zeros(100);
  parse_error(t, {"bad.gguf", "tensors"});
}

TEST(GgufCorrupt, TooManyDimensions) {
  Bytes b = test::gguf_header(3, 1, 0);
  test::gguf_tensor_info(b, "t5", {1, 1, 1, 1, 1}, kF32, 0);
  b.pad_to(32).zeros(32);
  parse_error(b, {"bad.gguf", "'t5'", "5 dimensions", "at most 4"});
}

TEST(GgufCorrupt, BadDimensions) {
  Bytes z = test::gguf_header(3, 1, 0);
  test::gguf_tensor_info(z, "z", {4, 0}, kF32, 0);
  z.pad_to(32).zeros(32);
  parse_error(z, {"bad.gguf", "'z'", "dimension 1", "positive"});
  Bytes neg = test::gguf_header(3, 1, 0);
  test::gguf_tensor_info(neg, "n", {~uint64_t{0}}, kF32, 0);
  neg.pad_to(32).zeros(32);
  parse_error(neg, {"bad.gguf", "'n'", "-1"});
  Bytes big = test::gguf_header(3, 1, 0);
  test::gguf_tensor_info(big, "big", {uint64_t{1} << 32, uint64_t{1} << 32}, kF32, 0);
  big.pad_to(32).zeros(32);
  parse_error(big, {"bad.gguf", "'big'", "64 bits"});
  // Elements fit, bytes do not.
  Bytes bytes = test::gguf_header(3, 1, 0);
  test::gguf_tensor_info(bytes, "b", {uint64_t{1} << 31, uint64_t{1} << 31}, kF32, 0);
  bytes.pad_to(32).zeros(32);
  parse_error(bytes, {"bad.gguf", "'b'", "64 bits"});
}

TEST(GgufCorrupt, UnknownTensorType) {
  Bytes b = test::gguf_header(3, 1, 0);
  test::gguf_tensor_info(b, "t", {32}, 99, 0);
  b.pad_to(32).zeros(256);
  parse_error(b, {"bad.gguf", "'t'", "unknown ggml type 99"});
  Bytes gap = test::gguf_header(3, 1, 0);
  test::gguf_tensor_info(gap, "t", {32}, 4, 0);  // 4 and 5 are retired type numbers
  gap.pad_to(32).zeros(256);
  parse_error(gap, {"unknown ggml type 4"});
}

TEST(GgufCorrupt, RowsNotWholeBlocks) {
  Bytes b = test::gguf_header(3, 1, 0);
  test::gguf_tensor_info(b, "q", {16, 2}, kQ8_0, 0);
  b.pad_to(32).zeros(256);
  parse_error(b, {"bad.gguf", "'q'", "rows of 16", "q8_0 blocks of 32"});
}

TEST(GgufCorrupt, DuplicateTensorNamesAndKeys) {
  Bytes b = test::gguf_header(3, 2, 0);
  test::gguf_tensor_info(b, "same", {8}, kF32, 0);
  test::gguf_tensor_info(b, "same", {8}, kF32, 32);
  b.pad_to(32).zeros(64);
  parse_error(b, {"bad.gguf", "'same'", "twice"});
  Bytes k = test::gguf_header(3, 0, 2);
  test::gguf_kv_u32(k, "dup", 1);
  test::gguf_kv_u32(k, "dup", 2);
  parse_error(k, {"bad.gguf", "'dup'", "twice"});
}

TEST(GgufCorrupt, OverlappingTensors) {
  Bytes b = test::gguf_header(3, 2, 0);
  test::gguf_tensor_info(b, "first", {16}, kF32, 0);   // 64 bytes
  test::gguf_tensor_info(b, "second", {8}, kF32, 32);  // starts inside "first"
  b.pad_to(32).zeros(128);
  parse_error(b, {"bad.gguf", "'first'", "overlaps", "'second'"});
}

TEST(GgufCorrupt, BadAlignmentKey) {
  for (uint32_t a : {0u, 3u, 48u}) {
    Bytes b = test::gguf_header(3, 0, 1);
    test::gguf_kv_u32(b, "general.alignment", a);
    parse_error(b, {"bad.gguf", "general.alignment", "power of two"});
  }
  Bytes s = test::gguf_header(3, 0, 1);
  test::gguf_kv_str(s, "general.alignment", "32");
  parse_error(s, {"bad.gguf", "general.alignment", "integer"});
}

TEST(GgufCorrupt, BadValues) {
  Bytes t = test::gguf_header(3, 0, 1);
  t.str("k").put<uint32_t>(13).put<uint32_t>(0);
  parse_error(t, {"bad.gguf", "'k'", "unknown value type 13"});
  Bytes at = test::gguf_header(3, 0, 1);
  at.str("k").put<uint32_t>(9).put<uint32_t>(77).put<uint64_t>(0);
  parse_error(at, {"bad.gguf", "'k'", "unknown value type 77"});
  Bytes bo = test::gguf_header(3, 0, 1);
  bo.str("flag").put<uint32_t>(7).put<uint8_t>(2);
  parse_error(bo, {"bad.gguf", "'flag'", "bool"});
  // Arrays nested deeper than any real metadata.
  Bytes deep = test::gguf_header(3, 0, 1);
  deep.str("deep").put<uint32_t>(9);
  for (int i = 0; i < 1000; ++i) deep.put<uint32_t>(9).put<uint64_t>(1);
  deep.put<uint32_t>(0).put<uint64_t>(0);
  parse_error(deep, {"bad.gguf", "'deep'", "nests arrays"});
}

TEST(GgufCorrupt, ControlCharactersInNamesAreEscaped) {
  Bytes b = test::gguf_header(3, 1, 0);
  test::gguf_tensor_info(b, "evil\nname", {8}, 99, 0);
  b.pad_to(32).zeros(32);
  parse_error(b, {"evil\\x0aname"});
}

TEST(GgufCorrupt, NoTensorsNeedsNoDataSection) {
  Bytes b = test::gguf_header(3, 0, 1);
  test::gguf_kv_u32(b, "x", 1);  // ends unpadded: valid, there is no data
  const auto f = GgufFile::parse(b.v.data(), b.size(), "meta.gguf");
  EXPECT_EQ(f->get_int("x"), 1);
}

}  // namespace
}  // namespace tandem::gguf
