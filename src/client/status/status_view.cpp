#include "client/status/status_view.h"

#include <cstdio>
#include <sstream>

namespace tandem::client::status {

using nlohmann::json;

namespace {

// A number at obj[a][b] (or obj[a]), if present and numeric.
std::optional<double> num(const json& obj, const char* a, const char* b = nullptr) {
  if (!obj.is_object() || !obj.contains(a)) return std::nullopt;
  const json* v = &obj.at(a);
  if (b) {
    if (!v->is_object() || !v->contains(b)) return std::nullopt;
    v = &v->at(b);
  }
  if (!v->is_number()) return std::nullopt;
  return v->get<double>();
}

std::string fmt(const char* format, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, format, v);
  return buf;
}

std::string integer(std::optional<double> v) { return v ? fmt("%.0f", *v) : "?"; }

std::string gpu_line(const json& g) {
  std::vector<std::string> parts;
  if (g.contains("name") && g["name"].is_string()) parts.push_back(g["name"].get<std::string>());
  const auto used = num(g, "memory_used_bytes"), total = num(g, "memory_total_bytes");
  if (used && total) parts.push_back("memory " + format_bytes(*used) + " / " + format_bytes(*total));
  if (auto t = num(g, "temperature_c")) parts.push_back(fmt("%.0f C", *t));
  const auto power = num(g, "power_w"), limit = num(g, "power_limit_w");
  if (power) parts.push_back(fmt("%.0f", *power) + (limit ? fmt(" / %.0f W", *limit) : " W"));
  if (auto u = num(g, "utilization_gpu_percent")) parts.push_back(fmt("util %.0f%%", *u));
  std::string line;
  for (const std::string& p : parts) line += (line.empty() ? "" : " | ") + p;
  return line.empty() ? "no readings" : line;
}

}  // namespace

std::string format_duration(double s) {
  if (s < 0) s = 0;
  const long long total = static_cast<long long>(s);
  const long long d = total / 86400, h = total % 86400 / 3600, m = total % 3600 / 60, sec = total % 60;
  char buf[64];
  if (d > 0) std::snprintf(buf, sizeof buf, "%lldd %02lldh", d, h);
  else if (h > 0) std::snprintf(buf, sizeof buf, "%lldh %02lldm", h, m);
  else if (m > 0) std::snprintf(buf, sizeof buf, "%lldm %02llds", m, sec);
  else std::snprintf(buf, sizeof buf, "%llds", sec);
  return buf;
}

std::string format_bytes(double bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (bytes >= 1024 && u < 4) {
    bytes /= 1024;
    ++u;
  }
  return fmt(u == 0 ? "%.0f" : "%.1f", bytes) + " " + units[u];
}

std::optional<double> live_tokens_per_s(const BackendReport& earlier, const BackendReport& later) {
  const auto a = num(earlier.status, "tokens", "generated_total"), b = num(later.status, "tokens", "generated_total");
  const double dt = std::chrono::duration<double>(later.at - earlier.at).count();
  if (!a || !b || *b < *a || dt <= 0) return std::nullopt;
  return (*b - *a) / dt;
}

std::string render_backend(const BackendReport& r, std::optional<double> live_tps) {
  std::ostringstream out;
  const json& s = r.status;
  if (!r.alive()) {
    out << r.url << "  " << (r.state == "unreachable" ? "UNREACHABLE" : "ERROR") << "\n  " << r.reason << "\n";
    return out.str();
  }
  out << r.url << "  " << r.state;
  if (s.contains("server_version") && s["server_version"].is_string())
    out << "  (tandem-server " << s["server_version"].get<std::string>();
  else
    out << "  (";
  if (auto up = num(s, "uptime_s")) out << ", up " << format_duration(*up);
  out << fmt(", answered in %.0f ms)", r.latency_ms) << "\n";
  std::string model = "?";
  if (s.contains("model") && s["model"].is_object()) {
    const json& m = s["model"];
    if (m.contains("id") && m["id"].is_string()) model = m["id"].get<std::string>();
    else if (m.contains("path") && m["path"].is_string()) model = m["path"].get<std::string>();
  }
  out << "  model      " << model;
  if (auto ctx = num(s, "context_window")) out << " (context " << integer(ctx) << ")";
  out << "\n";
  if (r.state == "loading") {
    const auto done = num(s, "progress", "bytes_done"), total = num(s, "progress", "bytes_total");
    if (done && total && *total > 0)
      out << "  loading    " << format_bytes(*done) << " / " << format_bytes(*total) << fmt(" (%.0f%%)", 100 * *done / *total) << "\n";
  } else {
    out << "  requests   " << integer(num(s, "batch", "running")) << " running (batch " << integer(num(s, "batch", "batch_size"))
        << "), " << integer(num(s, "queue", "queued")) << " queued (max " << integer(num(s, "queue", "max_queued_requests"))
        << ")\n";
    const auto usage = num(s, "kv_cache", "usage");
    out << "  KV cache   " << integer(num(s, "kv_cache", "blocks_used")) << " / " << integer(num(s, "kv_cache", "blocks_total"))
        << " blocks" << (usage ? fmt(" (%.1f%%)", *usage * 100) : "") << "\n";
    const auto generated = num(s, "tokens", "generated_total"), uptime = num(s, "uptime_s");
    out << "  tokens/s   ";
    if (live_tps) out << fmt("%.1f generated (last interval)", *live_tps);
    else if (generated && uptime && *uptime > 0) out << fmt("%.1f generated (average since start)", *generated / *uptime);
    else out << "?";
    out << "; totals: " << integer(num(s, "tokens", "prompt_total")) << " prompt, " << integer(generated) << " generated\n";
  }
  if (s.contains("host") && s["host"].is_object()) {
    const json& h = s["host"];
    out << "  host      ";
    if (h.contains("load_average") && h["load_average"].is_array() && h["load_average"].size() == 3)
      out << fmt(" load %.2f", h["load_average"][0].get<double>()) << fmt(" %.2f", h["load_average"][1].get<double>())
          << fmt(" %.2f", h["load_average"][2].get<double>());
    if (auto rss = num(h, "process_rss_bytes")) out << " | RSS " << format_bytes(*rss);
    if (auto cpus = num(h, "cpu_count")) out << " | " << integer(cpus) << " CPUs";
    out << "\n";
  }
  if (s.contains("gpus") && s["gpus"].is_array()) {
    for (const json& g : s["gpus"]) {
      const auto index = num(g, "index");
      out << "  GPU " << (index ? integer(index) : "?") << "      " << gpu_line(g) << "\n";
    }
  }
  return out.str();
}

json report_json(const BackendReport& r, std::optional<double> live_tps) {
  json j = {{"url", r.url}, {"state", r.state}, {"latency_ms", r.latency_ms}, {"status", r.status}};
  if (!r.reason.empty()) j["reason"] = r.reason;
  if (live_tps) j["tokens_per_s"] = *live_tps;
  return j;
}

}  // namespace tandem::client::status
