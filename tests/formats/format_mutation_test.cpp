// Random mutations of valid GGUF and safetensors images (fixed seed, bounded
// iterations): parsing must either succeed or throw tandem::Error. Any other
// exception fails the test; a crash or overread fails it too (the asan
// preset catches the latter). The libFuzzer targets explore further.
#include <random>

#include "formats/gguf.h"
#include "formats/safetensors.h"
#include "format_test_util.h"

namespace tandem {
namespace {

std::vector<uint8_t> valid_gguf(const test::TempDir& dir) {
  gguf::GgufWriter w(64);
  w.set("general.architecture", gguf::Value::string("llama"));
  w.set("llama.block_count", gguf::Value::u32(2));
  w.set("tokenizer.ggml.tokens", gguf::Value::string_array({"<s>", "a", "bc", "def"}));
  w.set("tokenizer.ggml.scores", gguf::Value::f32_array({0.f, -1.f, -2.f, -3.f}));
  w.set("nested", gguf::Value::array(gguf::ValueType::ARRAY, {gguf::Value::i32_array({1, 2})}));
  w.set("flag", gguf::Value::boolean(true));
  std::vector<uint8_t> a(4 * 8 * 4, 1), q(2 * 34, 2);
  w.add_tensor("a", DType::F32, {4, 8}, a.data(), a.size());
  w.add_tensor("q", DType::Q8_0, {2, 32}, q.data(), q.size());
  w.write(dir.file("m.gguf"));
  return test::read_file(dir.file("m.gguf"));
}

std::vector<uint8_t> valid_safetensors(const test::TempDir& dir) {
  SafetensorsWriter w;
  std::vector<uint8_t> a(6 * 4, 1), b(3 * 2, 2);
  w.add_tensor("a", DType::F32, {2, 3}, a.data(), a.size());
  w.add_tensor("b", DType::BF16, {3}, b.data(), b.size());
  w.set_metadata("format", "pt");
  w.write(dir.file("m.safetensors"));
  return test::read_file(dir.file("m.safetensors"));
}

std::vector<uint8_t> mutate(std::vector<uint8_t> v, std::mt19937_64& rng) {
  const int n_mutations = 1 + static_cast<int>(rng() % 4);
  for (int m = 0; m < n_mutations; ++m) {
    const size_t pos = v.empty() ? 0 : rng() % v.size();
    switch (rng() % 6) {
      case 0:  // flip one bit
        if (!v.empty()) v[pos] ^= static_cast<uint8_t>(1u << (rng() % 8));
        break;
      case 1:  // random byte
        if (!v.empty()) v[pos] = static_cast<uint8_t>(rng());
        break;
      case 2:  // insert a byte
        v.insert(v.begin() + static_cast<std::ptrdiff_t>(pos), static_cast<uint8_t>(rng()));
        break;
      case 3:  // delete a byte
        if (!v.empty()) v.erase(v.begin() + static_cast<std::ptrdiff_t>(pos));
        break;
      case 4: {  // an interesting 8-byte value (counts, lengths, offsets)
        static constexpr uint64_t kInteresting[] = {0, 1, 0x7f, 0xff, 0xffff, 0x7fffffff, 0xffffffff,
                                                    uint64_t{1} << 32, uint64_t{1} << 62, ~uint64_t{0}};
        const uint64_t x = kInteresting[rng() % std::size(kInteresting)];
        for (size_t i = 0; i < 8 && pos + i < v.size(); ++i) v[pos + i] = static_cast<uint8_t>(x >> (8 * i));
        break;
      }
      case 5:  // truncate
        v.resize(pos);
        break;
    }
  }
  return v;
}

template <typename Parse>
void run_mutations(const std::vector<uint8_t>& valid, uint64_t seed, int iterations, Parse parse) {
  std::mt19937_64 rng(seed);
  int parsed = 0;
  int rejected = 0;
  for (int i = 0; i < iterations; ++i) {
    // An exactly-sized copy, so that an overread leaves the allocation.
    const std::vector<uint8_t> img = mutate(valid, rng);
    try {
      parse(img);
      ++parsed;
    } catch (const Error& e) {
      ++rejected;
      ASSERT_NE(std::string(e.what()).find("mutant"), std::string::npos) << e.what();
    }
  }
  // Both outcomes must occur: mutations in tensor data still parse, and
  // mutations in the header are caught.
  EXPECT_GT(parsed, iterations / 50);
  EXPECT_GT(rejected, iterations / 10);
}

TEST(FormatMutation, GgufNeverCrashes) {
  test::TempDir dir;
  run_mutations(valid_gguf(dir), 1234, 4000, [](const std::vector<uint8_t>& img) {
    const auto f = gguf::GgufFile::parse(img.data(), img.size(), "mutant.gguf");
    for (const auto& t : f->tensors()) ASSERT_LE(t.data + t.n_bytes, img.data() + img.size());
  });
}

TEST(FormatMutation, SafetensorsNeverCrashes) {
  test::TempDir dir;
  run_mutations(valid_safetensors(dir), 5678, 4000, [](const std::vector<uint8_t>& img) {
    const auto f = SafetensorsFile::parse(img.data(), img.size(), "mutant.safetensors");
    for (const auto& t : f->tensors()) ASSERT_LE(t.data + t.n_bytes, img.data() + img.size());
  });
}

}  // namespace
}  // namespace tandem
