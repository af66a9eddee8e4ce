// The serve config: sizes, keys, types, ranges; errors name the key.
#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>

#include "common/error.h"
#include "server/auth.h"
#include "server/server_config.h"
#include "server/zstd_frame.h"

namespace tandem::server {
namespace {

using nlohmann::json;

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(MemorySize, DecimalAndBinaryUnits) {
  EXPECT_EQ(parse_memory_size("16GB", "k"), 16'000'000'000ull);
  EXPECT_EQ(parse_memory_size("512MiB", "k"), 512ull << 20);
  EXPECT_EQ(parse_memory_size("1.5 GiB", "k"), 3ull << 29);
  EXPECT_EQ(parse_memory_size("1024", "k"), 1024ull);
  EXPECT_EQ(parse_memory_size("2tb", "k"), 2'000'000'000'000ull);
  EXPECT_EQ(parse_memory_size(" 4 KiB ", "k"), 4096ull);
}

TEST(MemorySize, RejectsNonSizesNamingTheKey) {
  for (const char* bad : {"", "GB", "16 XB", "1.2.3GB", "-5GB", "16GB extra", "0", ".", "1e30GB"}) {
    const std::string msg = error_of([&] { parse_memory_size(bad, "max_memory.cpu"); });
    EXPECT_NE(msg.find("max_memory.cpu"), std::string::npos) << "'" << bad << "' gave: " << msg;
  }
}

TEST(ConfigJson, AppliesEveryKey) {
  ServerConfig c;
  apply_config_json(json::parse(R"({"model_path": "m.gguf", "device_map": "cpu",
      "max_memory": {"cpu": "16GB", "gpu": "48GB"}, "context_window": 8192, "batch_size": 8,
      "step_tokens": 2048, "host": "0.0.0.0", "port": 9000, "max_queued_requests": 10, "api_key": "k",
      "request_timeout_s": 2.5, "threads": 3, "http_threads": 4})"),
                    c);
  EXPECT_EQ(c.model_path, "m.gguf");
  EXPECT_EQ(c.device_map, "cpu");
  EXPECT_EQ(c.max_memory.cpu_bytes, 16'000'000'000ull);
  EXPECT_EQ(c.max_memory.gpu_bytes, 48'000'000'000ull);
  EXPECT_EQ(c.context_window, 8192);
  EXPECT_EQ(c.batch_size, 8);
  EXPECT_EQ(c.step_tokens, 2048);
  EXPECT_EQ(c.host, "0.0.0.0");
  EXPECT_EQ(c.port, 9000);
  EXPECT_EQ(c.max_queued_requests, 10);
  EXPECT_EQ(c.api_key, "k");
  EXPECT_DOUBLE_EQ(c.request_timeout_s, 2.5);
  EXPECT_EQ(c.threads, 3);
  EXPECT_EQ(c.http_threads, 4);
  EXPECT_NO_THROW(validate_config(c));
}

TEST(ConfigJson, DefaultsAreValid) {
  ServerConfig c;
  EXPECT_NO_THROW(validate_config(c));
  EXPECT_EQ(c.host, "127.0.0.1");
  EXPECT_EQ(c.port, 8765);
}

TEST(ConfigJson, ErrorsNameTheKey) {
  const std::pair<const char*, const char*> cases[] = {
      {R"({"modle_path": "x"})", "modle_path"},
      {R"({"batch_size": "4"})", "batch_size"},
      {R"({"batch_size": 2.5})", "batch_size"},
      {R"({"step_tokens": "big"})", "step_tokens"},
      {R"({"context_window": true})", "context_window"},
      {R"({"port": 70000})", "port"},
      {R"({"port": -1})", "port"},
      {R"({"host": 5})", "host"},
      {R"({"max_memory": "16GB"})", "max_memory"},
      {R"({"max_memory": {"tpu": "1GB"}})", "max_memory.tpu"},
      {R"({"max_memory": {"cpu": "lots"}})", "max_memory.cpu"},
      {R"({"max_memory": {"gpu": [1]}})", "max_memory.gpu"},
      {R"({"request_timeout_s": "10"})", "request_timeout_s"},
      {R"({"threads": -2})", "threads"},
      {R"({"batch_size": 18446744073709551615})", "batch_size"},
  };
  for (const auto& [doc, key] : cases) {
    ServerConfig c;
    const std::string msg = error_of([&] { apply_config_json(json::parse(doc), c); });
    EXPECT_NE(msg.find(key), std::string::npos) << doc << " gave: " << msg;
  }
  ServerConfig c;
  EXPECT_NE(error_of([&] { apply_config_json(json::array(), c); }).find("object"), std::string::npos);
}

TEST(ConfigJson, DeviceMapTakesAWordOrALayerList) {
  ServerConfig c;
  apply_config_json(json::parse(R"({"device_map": "gpu"})"), c);
  validate_config(c);
  EXPECT_EQ(c.device_map, "gpu");
  apply_config_json(json::parse(R"({"device_map": ["gpu", "gpu", "gpu", "cpu"]})"), c);
  validate_config(c);
  EXPECT_EQ(c.device_map, "layers");
  EXPECT_EQ(c.device_map_gpu_layers, 3);
  EXPECT_EQ(c.device_map_cpu_layers, 1);
  // A word again clears the counts.
  apply_config_json(json::parse(R"({"device_map": "auto"})"), c);
  EXPECT_EQ(c.device_map_gpu_layers, 0);

  const std::pair<const char*, const char*> bad[] = {
      {R"({"device_map": ["gpu", "cpu", "gpu"]})", "GPU layers must come first"},
      {R"({"device_map": ["cpu", "cpu"]})", "no layer is on the GPU"},
      {R"({"device_map": ["gpu", "tpu"]})", "entry 1"},
      {R"({"device_map": []})", "one \"gpu\" or \"cpu\" per layer"},
      {R"({"device_map": 3})", "device_map"},
  };
  for (const auto& [doc, what] : bad) {
    ServerConfig d;
    const std::string msg = error_of([&] { apply_config_json(json::parse(doc), d); });
    EXPECT_NE(msg.find(what), std::string::npos) << doc << " gave: " << msg;
  }
}

TEST(ConfigValidate, ImpossibleValuesNameTheKey) {
  const std::pair<std::function<void(ServerConfig&)>, const char*> cases[] = {
      {[](ServerConfig& c) { c.device_map = "cuda:0"; }, "device_map"},
      {[](ServerConfig& c) { c.batch_size = 0; }, "batch_size"},
      {[](ServerConfig& c) { c.step_tokens = -1; }, "step_tokens"},
      {[](ServerConfig& c) { c.step_tokens = 70000; }, "step_tokens"},
      {[](ServerConfig& c) { c.context_window = 0; }, "context_window"},
      {[](ServerConfig& c) { c.max_queued_requests = 0; }, "max_queued_requests"},
      {[](ServerConfig& c) { c.request_timeout_s = -1; }, "request_timeout_s"},
      {[](ServerConfig& c) { c.host.clear(); }, "host"},
      {[](ServerConfig& c) { c.api_key_file = "/nonexistent/key"; }, "api_key_file"},
      {[](ServerConfig& c) { c.api_key = "a"; c.api_key_file = "b"; }, "api_key"},
  };
  for (const auto& [mutate, key] : cases) {
    ServerConfig c;
    mutate(c);
    const std::string msg = error_of([&] { validate_config(c); });
    EXPECT_NE(msg.find(key), std::string::npos) << key << " gave: " << msg;
  }
}

TEST(ConfigFile, ReadsFileAndKeyFile) {
  const std::string dir = ::testing::TempDir();
  const std::string key_path = dir + "/tandem_key.txt";
  const std::string cfg_path = dir + "/tandem_cfg.json";
  std::ofstream(key_path) << "s3cret  \nignored\n";
  std::ofstream(cfg_path) << R"({"batch_size": 2, "api_key_file": ")" << key_path << R"("})";
  ServerConfig c;
  apply_config_file(cfg_path, c);
  validate_config(c);
  EXPECT_EQ(c.batch_size, 2);
  EXPECT_EQ(c.api_key, "s3cret");
  std::ofstream(cfg_path) << "{not json";
  EXPECT_NE(error_of([&] { apply_config_file(cfg_path, c); }).find(cfg_path), std::string::npos);
  EXPECT_NE(error_of([&] { apply_config_file(dir + "/missing.json", c); }).find("missing.json"), std::string::npos);
  std::remove(key_path.c_str());
  std::remove(cfg_path.c_str());
}

TEST(Auth, BearerAndKeys) {
  EXPECT_TRUE(bearer_authorized("", ""));
  EXPECT_TRUE(bearer_authorized("abc", "Bearer abc"));
  EXPECT_TRUE(bearer_authorized("abc", "bearer  abc "));
  EXPECT_FALSE(bearer_authorized("abc", "Bearer abd"));
  EXPECT_FALSE(bearer_authorized("abc", "Bearer ab"));
  EXPECT_FALSE(bearer_authorized("abc", "Bearer abcd"));
  EXPECT_FALSE(bearer_authorized("abc", "abc"));
  EXPECT_FALSE(bearer_authorized("abc", ""));
  EXPECT_TRUE(key_matches("k", "k"));
  EXPECT_FALSE(key_matches("k", ""));
}

TEST(ZstdFrame, RoundTripsAndShrinksText) {
  std::string text;
  for (int i = 0; i < 200; ++i) text += R"({"event":"token","id":"r1","text":" the"})";
  const std::string frame = zstd_compress(text);
  EXPECT_LT(frame.size(), text.size() / 4);
  EXPECT_EQ(zstd_decompress(frame, text.size()), text);
  EXPECT_THROW(zstd_decompress(frame, text.size() - 1), Error);
  EXPECT_THROW(zstd_decompress("not zstd", 100), Error);
}

}  // namespace
}  // namespace tandem::server
