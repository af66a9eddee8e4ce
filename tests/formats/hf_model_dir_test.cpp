// Hugging Face model folders: single file, two-shard index, and the errors.
#include "formats/safetensors.h"
#include "format_test_util.h"

namespace tandem {
namespace {

using test::expect_error;
using test::TempDir;
using test::write_file;

void write_shard(const std::string& path, const std::vector<std::pair<std::string, float>>& tensors) {
  std::vector<std::vector<float>> storage;
  storage.reserve(tensors.size());
  SafetensorsWriter w;
  for (const auto& [name, value] : tensors) {
    storage.push_back({value, value + 1, value + 2, value + 3});
    w.add_tensor(name, DType::F32, {2, 2}, storage.back().data(), 16);
  }
  w.write(path);
}

void write_two_shard_model(const TempDir& dir) {
  write_file(dir.file("config.json"), R"({"model_type":"llama","hidden_size":2})");
  write_shard(dir.file("model-00001-of-00002.safetensors"), {{"embed.weight", 1.f}, {"layers.0.w", 10.f}});
  write_shard(dir.file("model-00002-of-00002.safetensors"), {{"layers.1.w", 20.f}, {"norm.weight", 30.f}});
  write_file(dir.file("model.safetensors.index.json"), R"({"metadata":{"total_size":64},"weight_map":{
    "embed.weight":"model-00001-of-00002.safetensors","layers.0.w":"model-00001-of-00002.safetensors",
    "layers.1.w":"model-00002-of-00002.safetensors","norm.weight":"model-00002-of-00002.safetensors"}})");
}

float first_value(const TensorRef& t) {
  float v = 0;
  std::memcpy(&v, t.data, 4);
  return v;
}

TEST(HfModelDir, TwoShardIndex) {
  TempDir dir;
  write_two_shard_model(dir);
  write_file(dir.file("tokenizer.json"), "{}");
  const auto m = HfModelDir::open(dir.path().string());
  EXPECT_EQ(m->config().at("model_type"), "llama");
  ASSERT_EQ(m->tensors().size(), 4u);
  EXPECT_EQ(m->tensors()[0].name, "embed.weight");  // shard order, then data order
  EXPECT_EQ(m->tensors()[3].name, "norm.weight");
  for (const auto& [name, v] : std::vector<std::pair<std::string, float>>{
           {"embed.weight", 1.f}, {"layers.0.w", 10.f}, {"layers.1.w", 20.f}, {"norm.weight", 30.f}}) {
    const TensorRef* t = m->find_tensor(name);
    ASSERT_NE(t, nullptr) << name;
    EXPECT_EQ(t->shape, (std::vector<int64_t>{2, 2}));
    EXPECT_EQ(first_value(*t), v) << name;
  }
  EXPECT_EQ(m->find_tensor("missing"), nullptr);
  EXPECT_EQ(m->tokenizer_json_path(), dir.file("tokenizer.json"));
  EXPECT_EQ(m->tokenizer_config_path(), "");
}

TEST(HfModelDir, SingleFile) {
  TempDir dir;
  write_file(dir.file("config.json"), R"({"model_type":"qwen2"})");
  write_shard(dir.file("model.safetensors"), {{"a", 5.f}});
  write_file(dir.file("tokenizer_config.json"), "{}");
  const auto m = HfModelDir::open(dir.path().string());
  ASSERT_EQ(m->tensors().size(), 1u);
  EXPECT_EQ(first_value(*m->find_tensor("a")), 5.f);
  EXPECT_EQ(m->tokenizer_json_path(), "");
  EXPECT_EQ(m->tokenizer_config_path(), dir.file("tokenizer_config.json"));
}

TEST(HfModelDir, MissingShardIsAnError) {
  TempDir dir;
  write_two_shard_model(dir);
  std::filesystem::remove(dir.file("model-00002-of-00002.safetensors"));
  expect_error([&] { HfModelDir::open(dir.path().string()); },
               {dir.path().string(), "shard 'model-00002-of-00002.safetensors'", "missing"});
}

TEST(HfModelDir, DuplicateTensorAcrossShardsIsAnError) {
  TempDir dir;
  write_two_shard_model(dir);
  write_shard(dir.file("model-00002-of-00002.safetensors"), {{"layers.1.w", 20.f}, {"norm.weight", 30.f}, {"embed.weight", 2.f}});
  expect_error([&] { HfModelDir::open(dir.path().string()); },
               {"'embed.weight'", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"});
}

TEST(HfModelDir, IndexNamingTheWrongShardIsAnError) {
  TempDir dir;
  write_two_shard_model(dir);
  write_file(dir.file("model.safetensors.index.json"), R"({"weight_map":{
    "embed.weight":"model-00002-of-00002.safetensors","layers.0.w":"model-00001-of-00002.safetensors"}})");
  expect_error([&] { HfModelDir::open(dir.path().string()); }, {"'embed.weight'", "does not hold it"});
}

TEST(HfModelDir, BadFoldersAreErrors) {
  TempDir dir;
  expect_error([&] { HfModelDir::open(dir.file("nope")); }, {"not a directory"});
  expect_error([&] { HfModelDir::open(dir.path().string()); }, {"config.json is missing"});
  write_file(dir.file("config.json"), "{not json");
  expect_error([&] { HfModelDir::open(dir.path().string()); }, {"config.json", "not valid JSON"});
  write_file(dir.file("config.json"), "{}");
  expect_error([&] { HfModelDir::open(dir.path().string()); }, {"no model.safetensors"});
  write_file(dir.file("model.safetensors.index.json"), R"({"weight_map":{"a":"../escape.safetensors"}})");
  expect_error([&] { HfModelDir::open(dir.path().string()); }, {"'../escape.safetensors'", "inside the model folder"});
  write_file(dir.file("model.safetensors.index.json"), R"({"weight_map":{"a":3}})");
  expect_error([&] { HfModelDir::open(dir.path().string()); }, {"'a'", "not a file name"});
  write_file(dir.file("model.safetensors.index.json"), R"({"nothing":1})");
  expect_error([&] { HfModelDir::open(dir.path().string()); }, {"weight_map"});
  // A corrupt shard reports the shard's own path.
  write_file(dir.file("model.safetensors.index.json"), R"({"weight_map":{"a":"s.safetensors"}})");
  write_file(dir.file("s.safetensors"), "garbage");
  expect_error([&] { HfModelDir::open(dir.path().string()); }, {"s.safetensors", "too small"});
}

}  // namespace
}  // namespace tandem
