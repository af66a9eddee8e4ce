#include "client/status/status_view.h"

#include <gtest/gtest.h>

namespace tandem::client::status {
namespace {

BackendReport report(double generated, double at_s) {
  BackendReport r;
  r.url = "ws://h:1/ws";
  r.state = "ok";
  r.status = {{"server_version", "0.1.0"}, {"uptime_s", 3725}, {"model", {{"id", "demo"}}}, {"context_window", 512},
              {"batch", {{"running", 1}, {"batch_size", 4}}}, {"queue", {{"queued", 0}, {"max_queued_requests", 16}}},
              {"kv_cache", {{"blocks_used", 3}, {"blocks_total", 100}, {"usage", 0.03}}},
              {"tokens", {{"prompt_total", 10}, {"generated_total", generated}}},
              {"gpus", {{{"index", 0}, {"name", "H100"}, {"memory_used_bytes", 2147483648.0}, {"memory_total_bytes", 85899345920.0},
                         {"temperature_c", 41}, {"power_w", 120}, {"power_limit_w", 700}, {"utilization_gpu_percent", 37}}}}};
  r.at = std::chrono::steady_clock::time_point(std::chrono::milliseconds(static_cast<int64_t>(at_s * 1000)));
  return r;
}

TEST(StatusView, ShowsModelLoadTokensAndGpus) {
  const std::string text = render_backend(report(7450, 0), std::nullopt);
  EXPECT_NE(text.find("ws://h:1/ws  ok"), std::string::npos) << text;
  EXPECT_NE(text.find("up 1h 02m"), std::string::npos) << text;
  EXPECT_NE(text.find("demo (context 512)"), std::string::npos) << text;
  EXPECT_NE(text.find("1 running (batch 4), 0 queued (max 16)"), std::string::npos) << text;
  EXPECT_NE(text.find("3 / 100 blocks (3.0%)"), std::string::npos) << text;
  EXPECT_NE(text.find("2.0 generated (average since start)"), std::string::npos) << text;
  EXPECT_NE(text.find("GPU 0"), std::string::npos) << text;
  EXPECT_NE(text.find("memory 2.0 GiB / 80.0 GiB | 41 C | 120 / 700 W | util 37%"), std::string::npos) << text;
}

TEST(StatusView, LiveRateAndUnreachable) {
  EXPECT_DOUBLE_EQ(*live_tokens_per_s(report(100, 1), report(400, 3)), 150.0);
  EXPECT_FALSE(live_tokens_per_s(report(400, 1), report(100, 3)).has_value());  // restarted
  EXPECT_NE(render_backend(report(0, 0), 12.5).find("12.5 generated (last interval)"), std::string::npos);
  BackendReport dead;
  dead.url = "ws://h:2/ws";
  dead.state = "unreachable";
  dead.reason = "nothing is listening at h:2";
  const std::string text = render_backend(dead, std::nullopt);
  EXPECT_NE(text.find("UNREACHABLE"), std::string::npos);
  EXPECT_NE(text.find("nothing is listening at h:2"), std::string::npos);
  EXPECT_EQ(report_json(dead, std::nullopt)["reason"], "nothing is listening at h:2");
}

TEST(StatusView, Units) {
  EXPECT_EQ(format_duration(59), "59s");
  EXPECT_EQ(format_duration(61), "1m 01s");
  EXPECT_EQ(format_duration(90061), "1d 01h");
  EXPECT_EQ(format_bytes(512), "512 B");
  EXPECT_EQ(format_bytes(1536), "1.5 KiB");
}

}  // namespace
}  // namespace tandem::client::status
