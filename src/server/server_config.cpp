#include "server/server_config.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <fstream>
#include <limits>
#include <set>
#include <sstream>

#include "common/error.h"

namespace tandem::server {
namespace {

std::string type_name(const nlohmann::json& v) { return v.type_name(); }

int64_t get_int(const nlohmann::json& v, const std::string& key) {
  check(v.is_number_integer() || v.is_number_unsigned(),
        "config key '" + key + "' must be an integer, got " + type_name(v));
  check(!v.is_number_unsigned() || v.get<uint64_t>() <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max()),
        "config key '" + key + "' is too large");
  return v.get<int64_t>();
}

std::string get_string(const nlohmann::json& v, const std::string& key) {
  check(v.is_string(), "config key '" + key + "' must be a string, got " + type_name(v));
  return v.get<std::string>();
}

// device_map: a word, or a list of "gpu"/"cpu" per layer with the GPU
// layers first (the GPU part of an offloaded model is a prefix).
void apply_device_map(const nlohmann::json& v, ServerConfig& c) {
  const std::string usage =
      "config key 'device_map' must be \"auto\", \"cpu\", \"gpu\" or a list with one \"gpu\" or \"cpu\" per "
      "layer, GPU layers first (e.g. [\"gpu\", \"gpu\", \"cpu\"])";
  if (v.is_string()) {
    c.device_map = v.get<std::string>();
    c.device_map_gpu_layers = c.device_map_cpu_layers = 0;
    return;
  }
  check(v.is_array() && !v.empty(), usage + ", got " + type_name(v));
  int64_t gpu = 0, cpu = 0;
  for (size_t i = 0; i < v.size(); ++i) {
    const nlohmann::json& e = v[i];
    check(e.is_string() && (e.get<std::string>() == "gpu" || e.get<std::string>() == "cpu"),
          usage + "; entry " + std::to_string(i) + " is " + e.dump());
    if (e.get<std::string>() == "gpu") {
      check(cpu == 0, "config key 'device_map': layer " + std::to_string(i) +
                          " is on the GPU after a layer on the CPU; the GPU layers must come first");
      ++gpu;
    } else {
      ++cpu;
    }
  }
  check(gpu > 0, "config key 'device_map': no layer is on the GPU; use \"cpu\" to run on the CPU");
  c.device_map = "layers";
  c.device_map_gpu_layers = gpu;
  c.device_map_cpu_layers = cpu;
}

}  // namespace

uint64_t parse_memory_size(const std::string& text, const std::string& key) {
  const std::string what = "config key '" + key + "': '" + text + "' is not a memory size (e.g. \"16GB\", \"512MiB\")";
  size_t i = 0;
  while (i < text.size() && std::isspace(static_cast<unsigned char>(text[i]))) ++i;
  const size_t num_start = i;
  while (i < text.size() && (std::isdigit(static_cast<unsigned char>(text[i])) || text[i] == '.')) ++i;
  check(i > num_start, what);
  const std::string number = text.substr(num_start, i - num_start);
  check(std::count(number.begin(), number.end(), '.') <= 1 && number != ".", what);
  const double value = std::stod(number);
  while (i < text.size() && std::isspace(static_cast<unsigned char>(text[i]))) ++i;
  std::string unit;
  for (; i < text.size(); ++i) {
    if (std::isspace(static_cast<unsigned char>(text[i]))) break;
    unit.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(text[i]))));
  }
  while (i < text.size() && std::isspace(static_cast<unsigned char>(text[i]))) ++i;
  check(i == text.size(), what);
  double scale = 0;
  if (unit.empty() || unit == "b") scale = 1;
  else if (unit == "kb" || unit == "k") scale = 1e3;
  else if (unit == "mb" || unit == "m") scale = 1e6;
  else if (unit == "gb" || unit == "g") scale = 1e9;
  else if (unit == "tb" || unit == "t") scale = 1e12;
  else if (unit == "kib") scale = 1024.0;
  else if (unit == "mib") scale = 1024.0 * 1024;
  else if (unit == "gib") scale = 1024.0 * 1024 * 1024;
  else if (unit == "tib") scale = 1024.0 * 1024 * 1024 * 1024;
  check(scale > 0, what + ": unknown unit '" + unit + "'");
  const double bytes = value * scale;
  check(std::isfinite(bytes) && bytes < 1.8e19, "config key '" + key + "': '" + text + "' is too large");
  check(bytes >= 1, "config key '" + key + "': '" + text + "' must be at least one byte");
  return static_cast<uint64_t>(bytes);
}

void apply_config_json(const nlohmann::json& doc, ServerConfig& c) {
  check(doc.is_object(), "the config must be a JSON object, got " + type_name(doc));
  for (const auto& [key, v] : doc.items()) {
    if (key == "model_path") c.model_path = get_string(v, key);
    else if (key == "device_map") apply_device_map(v, c);
    else if (key == "max_memory") {
      check(v.is_object(), "config key 'max_memory' must be an object like {\"cpu\": \"16GB\", \"gpu\": \"48GB\"}, got " +
                               type_name(v));
      for (const auto& [dev, size] : v.items()) {
        const std::string sub = "max_memory." + dev;
        check(dev == "cpu" || dev == "gpu", "unknown config key '" + sub + "' (allowed: cpu, gpu)");
        uint64_t bytes = 0;
        if (size.is_string()) bytes = parse_memory_size(size.get<std::string>(), sub);
        else if (size.is_number_integer() || size.is_number_unsigned()) {
          const int64_t n = get_int(size, sub);
          check(n > 0, "config key '" + sub + "' must be positive");
          bytes = static_cast<uint64_t>(n);
        } else {
          throw Error("config key '" + sub + "' must be a size string like \"16GB\", got " + type_name(size));
        }
        (dev == "cpu" ? c.max_memory.cpu_bytes : c.max_memory.gpu_bytes) = bytes;
      }
    } else if (key == "context_window") c.context_window = get_int(v, key);
    else if (key == "batch_size") c.batch_size = get_int(v, key);
    else if (key == "step_tokens") c.step_tokens = get_int(v, key);
    else if (key == "host") c.host = get_string(v, key);
    else if (key == "port") {
      const int64_t p = get_int(v, key);
      check(p >= 0 && p <= 65535, "config key 'port' must be in [0, 65535], got " + std::to_string(p));
      c.port = static_cast<int>(p);
    } else if (key == "max_queued_requests") c.max_queued_requests = get_int(v, key);
    else if (key == "api_key") c.api_key = get_string(v, key);
    else if (key == "api_key_file") c.api_key_file = get_string(v, key);
    else if (key == "request_timeout_s") {
      check(v.is_number(), "config key 'request_timeout_s' must be a number, got " + type_name(v));
      c.request_timeout_s = v.get<double>();
    } else if (key == "threads") {
      const int64_t t = get_int(v, key);
      check(t >= 0 && t <= 1024, "config key 'threads' must be in [0, 1024], got " + std::to_string(t));
      c.threads = static_cast<int>(t);
    } else if (key == "http_threads") {
      const int64_t t = get_int(v, key);
      check(t >= 1 && t <= 64, "config key 'http_threads' must be in [1, 64], got " + std::to_string(t));
      c.http_threads = static_cast<int>(t);
    } else if (parallel::is_parallel_config_key(key)) {
      parallel::apply_parallel_config_key(key, v, c.parallel);
    } else {
      throw Error("unknown config key '" + key +
                  "' (allowed: model_path, device_map, max_memory, context_window, batch_size, step_tokens, host, port, "
                  "max_queued_requests, api_key, api_key_file, request_timeout_s, threads, http_threads, "
                  "tensor_parallel, pipeline_stages, micro_batch_size)");
    }
  }
}

void apply_config_file(const std::string& path, ServerConfig& config) {
  std::ifstream in(path);
  check(in.good(), "cannot open config file '" + path + "'");
  nlohmann::json doc = nlohmann::json::parse(in, nullptr, false);
  check(!doc.is_discarded(), "config file '" + path + "' is not valid JSON");
  try {
    apply_config_json(doc, config);
  } catch (const Error& e) {
    throw Error(path + ": " + e.what());
  }
}

void validate_config(ServerConfig& c) {
  check(c.device_map == "auto" || c.device_map == "cpu" || c.device_map == "gpu" || c.device_map == "layers",
        "config key 'device_map' must be \"auto\", \"cpu\", \"gpu\" or a list of \"gpu\"/\"cpu\", one per layer, got \"" +
            c.device_map + "\"");
  check(c.context_window >= 16 && c.context_window <= (int64_t{1} << 24),
        "config key 'context_window' must be in [16, 16777216], got " + std::to_string(c.context_window));
  check(c.batch_size >= 1 && c.batch_size <= 4096,
        "config key 'batch_size' must be in [1, 4096], got " + std::to_string(c.batch_size));
  check(c.step_tokens >= 0 && c.step_tokens <= 65536,
        "config key 'step_tokens' must be in [0, 65536] (0: the device's default), got " +
            std::to_string(c.step_tokens));
  check(c.max_queued_requests >= 1 && c.max_queued_requests <= 1000000,
        "config key 'max_queued_requests' must be in [1, 1000000], got " + std::to_string(c.max_queued_requests));
  check(c.port >= 0 && c.port <= 65535, "config key 'port' must be in [0, 65535], got " + std::to_string(c.port));
  check(!c.host.empty(), "config key 'host' must not be empty");
  check(std::isfinite(c.request_timeout_s) && c.request_timeout_s >= 0 && c.request_timeout_s <= 86400 * 7,
        "config key 'request_timeout_s' must be in [0, 604800] seconds (0: none)");
  check(c.threads >= 0 && c.threads <= 1024, "config key 'threads' must be in [0, 1024]");
  check(c.http_threads >= 1 && c.http_threads <= 64, "config key 'http_threads' must be in [1, 64]");
  parallel::validate_parallel_config(c.parallel, c.batch_size);
  check(c.api_key.empty() || c.api_key_file.empty(), "config keys 'api_key' and 'api_key_file' exclude each other");
  if (!c.api_key_file.empty()) {
    std::ifstream in(c.api_key_file);
    check(in.good(), "config key 'api_key_file': cannot open '" + c.api_key_file + "'");
    std::string line;
    std::getline(in, line);
    while (!line.empty() && std::isspace(static_cast<unsigned char>(line.back()))) line.pop_back();
    check(!line.empty(), "config key 'api_key_file': the first line of '" + c.api_key_file + "' is empty");
    c.api_key = line;
  }
}

}  // namespace tandem::server
