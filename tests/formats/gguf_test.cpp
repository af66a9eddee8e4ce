// GGUF writer -> reader round trips, the v2 layout, and the typed lookups.
#include <sys/resource.h>
#include <signal.h>

#include <cmath>
#include <limits>

#include "formats/gguf.h"
#include "format_test_util.h"

namespace tandem::gguf {
namespace {

using test::Bytes;
using test::expect_error;
using test::TempDir;

std::unique_ptr<GgufFile> write_and_open(const GgufWriter& w, const TempDir& dir, const std::string& name = "m.gguf") {
  const std::string path = dir.file(name);
  w.write(path);
  return GgufFile::open(path);
}

void expect_same_value(const Value& a, const Value& b) {
  ASSERT_EQ(a.type(), b.type());
  switch (a.type()) {
    case ValueType::UINT8:
    case ValueType::UINT16:
    case ValueType::UINT32:
    case ValueType::UINT64: EXPECT_EQ(a.as_uint(), b.as_uint()); break;
    case ValueType::INT8:
    case ValueType::INT16:
    case ValueType::INT32:
    case ValueType::INT64: EXPECT_EQ(a.as_int(), b.as_int()); break;
    case ValueType::FLOAT32:
    case ValueType::FLOAT64:
      if (std::isnan(a.as_float())) {
        EXPECT_TRUE(std::isnan(b.as_float()));
      } else {
        EXPECT_EQ(a.as_float(), b.as_float());
      }
      break;
    case ValueType::BOOL: EXPECT_EQ(a.as_bool(), b.as_bool()); break;
    case ValueType::STRING: EXPECT_EQ(a.as_string(), b.as_string()); break;
    case ValueType::ARRAY: {
      const auto& x = a.as_array();
      const auto& y = b.as_array();
      ASSERT_EQ(x.elem_type, y.elem_type);
      ASSERT_EQ(x.items.size(), y.items.size());
      for (size_t i = 0; i < x.items.size(); ++i) expect_same_value(x.items[i], y.items[i]);
      break;
    }
  }
}

std::vector<KeyValue> every_value_type() {
  using V = Value;
  std::vector<KeyValue> kv = {
      {"u8", V::u8(255)},
      {"i8", V::i8(-128)},
      {"u16", V::u16(65535)},
      {"i16", V::i16(-32768)},
      {"u32", V::u32(4000000000u)},
      {"i32", V::i32(std::numeric_limits<int32_t>::min())},
      {"u64", V::u64(std::numeric_limits<uint64_t>::max())},
      {"i64", V::i64(std::numeric_limits<int64_t>::min())},
      {"f32", V::f32(-1.5e-7f)},
      {"f32.nan", V::f32(std::numeric_limits<float>::quiet_NaN())},
      {"f64", V::f64(3.141592653589793)},
      {"bool.true", V::boolean(true)},
      {"bool.false", V::boolean(false)},
      {"str", V::string("h\xc3\xa9llo, \xe4\xb8\x96\xe7\x95\x8c")},
      {"str.empty", V::string("")},
      {"str.nul", V::string(std::string("a\0b", 3))},
      {"arr.u8", V::array(ValueType::UINT8, {V::u8(0), V::u8(7), V::u8(255)})},
      {"arr.i8", V::array(ValueType::INT8, {V::i8(-1), V::i8(1)})},
      {"arr.u16", V::array(ValueType::UINT16, {V::u16(1), V::u16(65535)})},
      {"arr.i16", V::array(ValueType::INT16, {V::i16(-300)})},
      {"arr.u32", V::array(ValueType::UINT32, {V::u32(1), V::u32(2), V::u32(3)})},
      {"arr.i32", V::i32_array({-5, 0, 5, 2147483647})},
      {"arr.u64", V::array(ValueType::UINT64, {V::u64(1ull << 63)})},
      {"arr.i64", V::array(ValueType::INT64, {V::i64(-(1ll << 62))})},
      {"arr.f32", V::f32_array({0.5f, -2.25f, 1e30f})},
      {"arr.f64", V::array(ValueType::FLOAT64, {V::f64(1e-300), V::f64(-0.0)})},
      {"arr.bool", V::array(ValueType::BOOL, {V::boolean(true), V::boolean(false), V::boolean(true)})},
      {"arr.str", V::string_array({"<s>", "", "\xe2\x96\x81the", std::string("x\0y", 3)})},
      {"arr.empty", V::array(ValueType::INT32, {})},
      {"arr.nested",
       V::array(ValueType::ARRAY, {V::i32_array({1, 2}), V::i32_array({}), V::string_array({"a", "b", "c"})})},
      {"arr.nested3", V::array(ValueType::ARRAY, {V::array(ValueType::ARRAY, {V::f32_array({1.f, 2.f})})})},
  };
  return kv;
}

TEST(GgufRoundTrip, EveryValueTypeAndArray) {
  TempDir dir;
  GgufWriter w;
  const auto kvs = every_value_type();
  for (const auto& kv : kvs) w.set(kv.key, kv.value);
  const auto f = write_and_open(w, dir);
  EXPECT_EQ(f->version(), 3u);
  EXPECT_EQ(f->alignment(), 32u);
  ASSERT_EQ(f->metadata().size(), kvs.size());
  for (size_t i = 0; i < kvs.size(); ++i) {
    SCOPED_TRACE(kvs[i].key);
    EXPECT_EQ(f->metadata()[i].key, kvs[i].key);  // file order is insertion order
    expect_same_value(f->metadata()[i].value, kvs[i].value);
    ASSERT_NE(f->find(kvs[i].key), nullptr);
  }
  EXPECT_EQ(f->find("absent"), nullptr);
  EXPECT_TRUE(f->tensors().empty());
}

TEST(GgufRoundTrip, SetReplacesExistingKey) {
  TempDir dir;
  GgufWriter w;
  w.set("a", Value::u32(1));
  w.set("b", Value::string("x"));
  w.set("a", Value::string("now a string"));
  const auto f = write_and_open(w, dir);
  ASSERT_EQ(f->metadata().size(), 2u);
  EXPECT_EQ(f->metadata()[0].key, "a");
  EXPECT_EQ(f->get_string("a"), "now a string");
}

struct TestTensor {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  std::vector<uint8_t> bytes;
};

std::vector<TestTensor> sample_tensors() {
  std::vector<TestTensor> ts;
  auto fill = [](size_t n, uint8_t seed) {
    std::vector<uint8_t> v(n);
    for (size_t i = 0; i < n; ++i) v[i] = static_cast<uint8_t>(seed + i * 31);
    return v;
  };
  ts.push_back({"token_embd.weight", DType::F32, {3, 5}, fill(3 * 5 * 4, 1)});
  ts.push_back({"norm.weight", DType::F16, {7}, fill(7 * 2, 2)});
  ts.push_back({"blk.0.attn_q.weight", DType::Q8_0, {2, 64}, fill(2 * 2 * 34, 3)});
  ts.push_back({"four.d", DType::I32, {2, 1, 3, 2}, fill(12 * 4, 4)});
  ts.push_back({"bf", DType::BF16, {1, 1}, fill(2, 5)});
  ts.push_back({"scalar", DType::F32, {}, fill(4, 6)});  // n_dims 0
  return ts;
}

void check_tensors(const GgufFile& f, const std::vector<TestTensor>& ts, const uint8_t* base, uint64_t alignment) {
  ASSERT_EQ(f.tensors().size(), ts.size());
  for (size_t i = 0; i < ts.size(); ++i) {
    SCOPED_TRACE(ts[i].name);
    const TensorRef& t = f.tensors()[i];
    EXPECT_EQ(t.name, ts[i].name);
    EXPECT_EQ(t.dtype, ts[i].dtype);
    EXPECT_EQ(t.shape, ts[i].shape);
    ASSERT_EQ(t.n_bytes, ts[i].bytes.size());
    EXPECT_EQ(std::memcmp(t.data, ts[i].bytes.data(), t.n_bytes), 0);
    EXPECT_EQ(f.find_tensor(ts[i].name), &t);
    if (base != nullptr) {
      EXPECT_EQ(static_cast<uint64_t>(t.data - base) % alignment, 0u);
    }
  }
  EXPECT_EQ(f.find_tensor("nope"), nullptr);
}

TEST(GgufRoundTrip, TensorDataShapesAndAlignment) {
  for (uint64_t alignment : {32ull, 1ull, 8ull, 64ull, 4096ull}) {
    SCOPED_TRACE(alignment);
    TempDir dir;
    GgufWriter w(alignment);
    w.set("general.architecture", Value::string("llama"));
    const auto ts = sample_tensors();
    for (const auto& t : ts) w.add_tensor(t.name, t.dtype, t.shape, t.bytes.data(), t.bytes.size());
    w.write(dir.file("m.gguf"));
    const auto image = test::read_file(dir.file("m.gguf"));
    const auto f = GgufFile::parse(image.data(), image.size(), "m.gguf");
    EXPECT_EQ(f->alignment(), alignment);
    if (alignment != 32) {
      EXPECT_EQ(f->get_int("general.alignment"), static_cast<int64_t>(alignment));
    }
    check_tensors(*f, ts, image.data(), alignment);
    EXPECT_EQ(image.size() % alignment, 0u);  // the last tensor is padded too
    // The mapped reader sees the same thing.
    const auto g = GgufFile::open(dir.file("m.gguf"));
    check_tensors(*g, ts, nullptr, alignment);
    EXPECT_EQ(g->file_size(), image.size());
    EXPECT_EQ(g->path(), dir.file("m.gguf"));
  }
}

TEST(GgufRoundTrip, AlignmentSetThroughMetadataKey) {
  TempDir dir;
  GgufWriter w;
  w.set("general.alignment", Value::u32(128));
  const auto ts = sample_tensors();
  for (const auto& t : ts) w.add_tensor(t.name, t.dtype, t.shape, t.bytes.data(), t.bytes.size());
  w.write(dir.file("m.gguf"));
  const auto image = test::read_file(dir.file("m.gguf"));
  const auto f = GgufFile::parse(image.data(), image.size(), "m.gguf");
  EXPECT_EQ(f->alignment(), 128u);
  check_tensors(*f, ts, image.data(), 128);
}

TEST(GgufWriter, RejectsBadInput) {
  expect_error([] { GgufWriter w(0); }, {"power of two"});
  expect_error([] { GgufWriter w(48); }, {"power of two"});
  GgufWriter w;
  expect_error([&] { w.set("general.alignment", Value::u32(3)); }, {"power of two"});
  expect_error([&] { w.set("general.alignment", Value::string("32")); }, {"integer"});
  expect_error([&] { w.set("empty", Value()); }, {"'empty'", "no value"});
  expect_error([&] { w.set("mixed", Value::array(ValueType::INT32, {Value::i32(1), Value::string("x")})); },
               {"'mixed'", "int32", "string"});
  std::vector<uint8_t> buf(4096);
  expect_error([&] { w.add_tensor("a", DType::F32, {2, 3}, buf.data(), 23); }, {"'a'", "24"});
  expect_error([&] { w.add_tensor("q", DType::Q8_0, {2, 16}, buf.data(), 34); }, {"'q'", "blocks of 32"});
  expect_error([&] { w.add_tensor("d", DType::F32, {1, 1, 1, 1, 1}, buf.data(), 4); }, {"'d'", "5 dimensions"});
  expect_error([&] { w.add_tensor("z", DType::F32, {0, 4}, buf.data(), 0); }, {"'z'", "positive"});
  w.add_tensor("ok", DType::F32, {1}, buf.data(), 4);
  expect_error([&] { w.add_tensor("ok", DType::F32, {1}, buf.data(), 4); }, {"'ok'", "twice"});
}

TEST(GgufWriter, BadPathIsAnErrorAndLeavesNothingBehind) {
  TempDir dir;
  GgufWriter w;
  w.set("k", Value::u8(1));
  expect_error([&] { w.write(dir.file("no/such/dir/m.gguf")); }, {"no/such/dir/m.gguf"});
  // A directory where the file should go: the rename fails and the
  // temporary is removed.
  std::filesystem::create_directory(dir.path() / "occupied");
  expect_error([&] { w.write(dir.file("occupied")); }, {"occupied", "rename"});
  size_t entries = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator(dir.path())) ++entries;
  EXPECT_EQ(entries, 1u);
}

// Runs in a child process: writes under a 64 KiB file-size limit, which makes
// write() fail as on a full disk. Returns 0 when the writer threw an Error
// naming the path and left no file behind.
int write_under_file_size_limit(const TempDir& dir, const std::string& path) {
  ::signal(SIGXFSZ, SIG_IGN);
  rlimit lim{};
  lim.rlim_cur = lim.rlim_max = 64 * 1024;
  ::setrlimit(RLIMIT_FSIZE, &lim);
  std::vector<uint8_t> data(1 << 20, 7);
  GgufWriter w;
  w.add_tensor("big", DType::I8, {1 << 20}, data.data(), data.size());
  try {
    w.write(path);
  } catch (const Error& e) {
    const bool names_path = std::string(e.what()).find(path) != std::string::npos;
    size_t entries = 0;
    for ([[maybe_unused]] const auto& ent : std::filesystem::directory_iterator(dir.path())) ++entries;
    return names_path && entries == 0 ? 0 : 2;
  }
  return 1;
}

TEST(GgufWriter, DiskFullIsAnErrorAndLeavesNoFile) {
  TempDir dir;
  const std::string path = dir.file("big.gguf");
  EXPECT_EXIT(std::_Exit(write_under_file_size_limit(dir, path)), ::testing::ExitedWithCode(0), "");
}

// GGUF v2 has the same layout as v3; build one by hand.
TEST(GgufReader, ReadsVersion2) {
  Bytes b = test::gguf_header(2, 2, 2);
  test::gguf_kv_str(b, "general.architecture", "llama");
  b.str("llama.block_count").put<uint32_t>(10).put<uint64_t>(12);  // uint64 value
  test::gguf_tensor_info(b, "a", {4, 2}, 0, 0);                    // f32 [2, 4]
  test::gguf_tensor_info(b, "b", {32}, 8, 32);                     // q8_0 [32]
  b.pad_to(32);
  const size_t data_start = b.size();
  for (int i = 0; i < 8; ++i) b.put<float>(static_cast<float>(i));
  b.put<uint16_t>(0x3c00);
  for (int i = 0; i < 32; ++i) b.put<int8_t>(static_cast<int8_t>(i - 16));
  const auto f = GgufFile::parse(b.v.data(), b.size(), "v2.gguf");
  EXPECT_EQ(f->version(), 2u);
  EXPECT_EQ(f->get_string("general.architecture"), "llama");
  EXPECT_EQ(f->get_int("llama.block_count"), 12);
  ASSERT_EQ(f->tensors().size(), 2u);
  const TensorRef& a = f->tensors()[0];
  EXPECT_EQ(a.shape, (std::vector<int64_t>{2, 4}));  // reversed from ne
  EXPECT_EQ(a.data, b.v.data() + data_start);
  EXPECT_EQ(a.n_bytes, 32u);
  float third = 0;
  std::memcpy(&third, a.data + 8, 4);
  EXPECT_EQ(third, 2.0f);
  const TensorRef& q = f->tensors()[1];
  EXPECT_EQ(q.dtype, DType::Q8_0);
  EXPECT_EQ(q.shape, (std::vector<int64_t>{32}));
  EXPECT_EQ(q.n_bytes, 34u);
  EXPECT_EQ(q.data, b.v.data() + data_start + 32);
}

TEST(GgufReader, TypedLookups) {
  TempDir dir;
  GgufWriter w;
  w.set("s", Value::string("text"));
  w.set("u", Value::u32(7));
  w.set("neg", Value::i8(-3));
  w.set("big", Value::u64(std::numeric_limits<uint64_t>::max()));
  w.set("f", Value::f32(0.25f));
  w.set("b", Value::boolean(true));
  w.set("strs", Value::string_array({"x", "", "yz"}));
  w.set("ints", Value::i32_array({1, -2}));
  const auto f = write_and_open(w, dir, "lookups.gguf");
  EXPECT_EQ(f->get_string("s"), "text");
  EXPECT_EQ(f->get_string_opt("s"), "text");
  EXPECT_EQ(f->get_string_opt("zz"), std::nullopt);
  EXPECT_EQ(f->get_int("u"), 7);
  EXPECT_EQ(f->get_int("neg"), -3);
  EXPECT_EQ(f->get_int_opt("zz"), std::nullopt);
  EXPECT_EQ(f->get_float_opt("f"), 0.25);
  EXPECT_EQ(f->get_float_opt("u"), 7.0);  // integers are accepted as numbers
  EXPECT_EQ(f->get_bool_opt("b"), true);
  EXPECT_EQ(f->get_bool_opt("zz"), std::nullopt);
  EXPECT_EQ(f->get("big").as_uint(), std::numeric_limits<uint64_t>::max());
  expect_error([&] { f->get("missing.key"); }, {"lookups.gguf", "missing metadata key 'missing.key'"});
  expect_error([&] { f->get_string("u"); }, {"lookups.gguf", "'u'", "uint32", "string"});
  expect_error([&] { f->get_int("s"); }, {"lookups.gguf", "'s'", "integer"});
  expect_error([&] { f->get_int("big"); }, {"lookups.gguf", "'big'", "does not fit"});
  expect_error([&] { f->get_bool_opt("u"); }, {"'u'", "bool"});
  expect_error([&] { f->get_float_opt("s"); }, {"'s'", "number"});
  expect_error([&] { f->get("neg").as_uint(); }, {"negative"});
  expect_error([&] { f->get_array("s"); }, {"lookups.gguf", "'s'", "string", "expected an array"});
  expect_error([&] { f->get_array("zz"); }, {"lookups.gguf", "missing metadata key 'zz'"});
  expect_error([&] { f->get_string_array("ints"); }, {"lookups.gguf", "'ints'", "int32", "array of strings"});
  EXPECT_EQ(f->get_string_array("strs"), (std::vector<std::string>{"x", "", "yz"}));
  EXPECT_EQ(f->get_array("ints").items.at(1).as_int(), -2);
  expect_error([&] { f->get("s").as_array(); }, {"string", "array"});
}

TEST(GgufReader, OpenMissingFileIsAnError) {
  expect_error([] { GgufFile::open("/nonexistent/model.gguf"); }, {"/nonexistent/model.gguf"});
}

}  // namespace
}  // namespace tandem::gguf
