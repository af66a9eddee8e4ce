#include "client/ui/aggregate_status.h"

#include <algorithm>

namespace tandem::client::ui {

using nlohmann::json;

namespace {

double at(const json& s, const char* a, const char* b) {
  if (!s.is_object() || !s.contains(a) || !s[a].is_object() || !s[a].contains(b) || !s[a][b].is_number()) return 0;
  return s[a][b].get<double>();
}

}  // namespace

json aggregate_status(const std::vector<BackendSnapshot>& backends, const BridgeSnapshot& bridge) {
  double running = 0, batch_size = 0, queued = 0, max_queued = 0, kv_used = 0, kv_total = 0, prompt = 0, generated = 0;
  double block_size = 0, context_window = 0;
  json model = nullptr, host = nullptr, gpus = json::array(), list = json::array();
  int up = 0, draining = 0;
  for (const BackendSnapshot& b : backends) {
    json entry = {{"url", b.url}, {"state", b.state}, {"in_flight", b.in_flight}, {"status", b.status}};
    if (!b.reason.empty()) entry["reason"] = b.reason;
    list.push_back(entry);
    const json& s = b.status;
    if (s.is_object() && s.contains("gpus") && s["gpus"].is_array()) {
      for (json g : s["gpus"]) {
        g["backend"] = b.url;
        gpus.push_back(std::move(g));
      }
    }
    draining += b.state == "draining";
    if (b.state != "ok" || !s.is_object()) continue;
    ++up;
    running += at(s, "batch", "running");
    batch_size += at(s, "batch", "batch_size");
    queued += at(s, "queue", "queued");
    max_queued += at(s, "queue", "max_queued_requests");
    kv_used += at(s, "kv_cache", "blocks_used");
    kv_total += at(s, "kv_cache", "blocks_total");
    prompt += at(s, "tokens", "prompt_total");
    generated += at(s, "tokens", "generated_total");
    if (block_size == 0) block_size = at(s, "kv_cache", "block_size");
    if (s.contains("context_window") && s["context_window"].is_number()) {
      const double c = s["context_window"].get<double>();
      context_window = context_window == 0 ? c : std::min(context_window, c);
    }
    if (model.is_null() && s.contains("model")) model = s["model"];
    if (host.is_null() && s.contains("host")) host = s["host"];
  }
  auto n = [](double v) { return static_cast<int64_t>(v); };
  json out = {
      {"state", up > 0 ? "ok" : (draining > 0 ? "draining" : "unavailable")},
      {"server_version", bridge.version},
      {"model", model.is_null() ? json{{"id", ""}} : model},
      {"context_window", n(context_window)},
      {"batch", {{"running", n(running)}, {"batch_size", n(batch_size)}}},
      {"queue", {{"queued", n(queued)}, {"max_queued_requests", n(max_queued)}}},
      {"kv_cache",
       {{"blocks_used", n(kv_used)},
        {"blocks_total", n(kv_total)},
        {"block_size", n(block_size)},
        {"usage", kv_total > 0 ? kv_used / kv_total : 0.0}}},
      {"tokens", {{"prompt_total", n(prompt)}, {"generated_total", n(generated)}}},
      {"uptime_s", bridge.uptime_s},
      {"draining", up == 0 && draining > 0},
      {"connections", {{"open", bridge.open_connections}, {"websockets", bridge.browsers}}},
      {"bridge", {{"backends_total", backends.size()}, {"backends_up", up}}},
      {"backends", list},
  };
  if (!host.is_null()) out["host"] = host;
  if (!gpus.empty()) out["gpus"] = gpus;
  return out;
}

}  // namespace tandem::client::ui
