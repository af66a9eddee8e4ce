// What `tandem bench` runs: the backend, the API it speaks, the workload and
// the concurrency sweep. Parsed from the command line in cmd_bench.cpp; the
// helpers here turn the flag strings into values and reject bad input with a
// message that names the flag.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace tandem::client::bench {

enum class Api { kTandem, kOpenAi };

// An inclusive range of token counts; min == max is a fixed length.
struct LengthRange {
  int64_t min = 0;
  int64_t max = 0;
  bool fixed() const { return min == max; }
};

// Where the backend listens. `base_path` is the URL path without a trailing
// slash or a trailing "/v1" (so "http://h:8000/v1" and "http://h:8000" name
// the same OpenAI server).
struct BackendUrl {
  std::string scheme;  // "http" or "ws"
  std::string host;
  std::string port;
  std::string base_path;
  std::string text() const;  // scheme://host:port + base_path
};

struct BenchOptions {
  std::string backend = "http://127.0.0.1:8765";
  Api api = Api::kTandem;
  std::string model;    // empty: the server's (tandem: from init; openai: first of /v1/models)
  std::string api_key;  // empty: none
  int64_t requests = 100;  // per concurrency level
  std::vector<int> concurrency = {1, 4, 16, 64};
  LengthRange prompt_tokens{128, 128};
  LengthRange max_tokens{128, 128};
  uint64_t seed = 1;
  bool ignore_eos = true;
  double temperature = 0.0;
  int64_t warmup = 2;
  bool zstd = false;       // tandem API: ask for zstd-compressed server messages
  double timeout_s = 300;  // per request
  std::string json_out;
  std::string plot;
  bool quiet = false;
};

// "128" -> {128,128}; "64:256" -> {64,256}. Throws std::invalid_argument
// naming `flag` for anything else, for negative numbers, or min > max.
LengthRange parse_length_range(const std::string& text, const std::string& flag, int64_t min_allowed);
// "1,4,16,64" -> {1,4,16,64}; each level >= 1, no duplicates.
std::vector<int> parse_concurrency_list(const std::string& text);
// "http://host:port/path", "ws://host:port" (port defaults: 80); https and
// wss are refused (this client has no TLS).
BackendUrl parse_backend_url(const std::string& text);
std::string api_name(Api api);

}  // namespace tandem::client::bench
