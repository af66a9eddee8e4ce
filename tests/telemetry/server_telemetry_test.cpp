// GPU telemetry and load progress as the server shows them: the Prometheus
// gauges, the "gpus" array of /v1/status (and the WS status event, which is
// the same JSON), and the loading answers of /health, /v1/status, /metrics.
// NVML is the fake library (fake_nvml.cpp).
#include <gtest/gtest.h>

#include "server/metrics_text.h"
#include "server/plain_routes.h"
#include "server/status_json.h"

namespace tandem::server {
namespace {

using nlohmann::json;

const std::string kFake = TANDEM_FAKE_NVML;

std::unique_ptr<ServerContext> context_with_nvml(const std::string& library) {
  auto ctx = std::make_unique<ServerContext>();
  ctx->version = "test";
  ctx->config.model_path = "/models/x.gguf";
  ctx->gpus = std::make_unique<telemetry::GpuTelemetry>(library, std::chrono::milliseconds(0));
  return ctx;
}

bool has_line(const std::string& text, const std::string& line) {
  return text.find("\n" + line + "\n") != std::string::npos || text.rfind(line + "\n", 0) == 0;
}

TEST(ServerTelemetry, StatusCarriesOneObjectPerGpu) {
  auto ctx = context_with_nvml(kFake);
  ctx->ready = true;
  const json s = status_json(EngineStats{}, *ctx);
  EXPECT_EQ(s.at("state"), "ok");
  ASSERT_TRUE(s.contains("gpus"));
  const json& gpus = s.at("gpus");
  ASSERT_EQ(gpus.size(), 2u);
  const json& g = gpus[0];
  EXPECT_EQ(g.at("index"), 0);
  EXPECT_EQ(g.at("name"), "Fake H100 80GB HBM3");
  EXPECT_EQ(g.at("memory_used_bytes"), uint64_t{30} << 30);
  EXPECT_EQ(g.at("memory_total_bytes"), uint64_t{80} << 30);
  EXPECT_EQ(g.at("memory_free_bytes"), uint64_t{50} << 30);
  EXPECT_EQ(g.at("temperature_c"), 61.0);
  EXPECT_EQ(g.at("power_w"), 312.5);
  EXPECT_EQ(g.at("power_limit_w"), 700.0);
  EXPECT_EQ(g.at("utilization_gpu_percent"), 87.0);
  EXPECT_EQ(g.at("utilization_memory_percent"), 45.0);
  EXPECT_EQ(g.at("sm_clock_mhz"), 1980.0);
  EXPECT_EQ(g.at("mem_clock_mhz"), 2619.0);
  EXPECT_EQ(g.size(), 12u);  // exactly the documented fields
  // A reading the board lacks is null, not 0.
  EXPECT_TRUE(gpus[1].at("power_w").is_null());
  EXPECT_TRUE(gpus[1].at("power_limit_w").is_null());
  EXPECT_EQ(gpus[1].at("index"), 1);
}

TEST(ServerTelemetry, MetricsHaveGaugesLabelledByGpu) {
  auto ctx = context_with_nvml(kFake);
  ctx->ready = true;
  const std::string m = render_metrics(EngineStats{}, *ctx);
  EXPECT_TRUE(has_line(m, "# TYPE tandem_gpu_memory_used_bytes gauge")) << m;
  EXPECT_TRUE(has_line(m, "tandem_gpu_memory_used_bytes{gpu=\"0\"} 32212254720")) << m;
  EXPECT_TRUE(has_line(m, "tandem_gpu_memory_total_bytes{gpu=\"1\"} 25769803776")) << m;
  EXPECT_TRUE(has_line(m, "tandem_gpu_temperature_celsius{gpu=\"0\"} 61")) << m;
  EXPECT_TRUE(has_line(m, "tandem_gpu_power_watts{gpu=\"0\"} 312.5")) << m;
  EXPECT_TRUE(has_line(m, "tandem_gpu_power_limit_watts{gpu=\"0\"} 700")) << m;
  EXPECT_TRUE(has_line(m, "tandem_gpu_utilization_percent{gpu=\"0\"} 87")) << m;
  EXPECT_TRUE(has_line(m, "tandem_gpu_memory_utilization_percent{gpu=\"1\"} 1")) << m;
  EXPECT_TRUE(has_line(m, "tandem_gpu_sm_clock_mhz{gpu=\"0\"} 1980")) << m;
  EXPECT_TRUE(has_line(m, "tandem_gpu_memory_clock_mhz{gpu=\"1\"} 6250")) << m;
  EXPECT_TRUE(has_line(m, "tandem_gpu_info{gpu=\"1\",name=\"Fake L4\"} 1")) << m;
  // GPU 1 has no power readings: no sample rather than a made-up 0.
  EXPECT_EQ(m.find("tandem_gpu_power_watts{gpu=\"1\"}"), std::string::npos);
  EXPECT_TRUE(has_line(m, "tandem_loading 0")) << m;
}

TEST(ServerTelemetry, GpuNamesAreEscapedInLabels) {
  telemetry::GpuSample g;
  g.index = 3;
  g.name = "odd \"name\"\\x\n";
  const std::string m = render_gpu_metrics({g});
  EXPECT_TRUE(has_line(m, "tandem_gpu_info{gpu=\"3\",name=\"odd \\\"name\\\"\\\\x\\n\"} 1")) << m;
  EXPECT_EQ(m.find("tandem_gpu_memory_used_bytes{"), std::string::npos);  // unread, so absent
  EXPECT_EQ(render_gpu_metrics({}), "");
}

TEST(ServerTelemetry, WithoutNvmlThereAreNoGpuFields) {
  auto ctx = context_with_nvml("/nonexistent/libnvidia-ml.so.1");
  ctx->ready = true;
  EXPECT_FALSE(status_json(EngineStats{}, *ctx).contains("gpus"));
  EXPECT_EQ(render_metrics(EngineStats{}, *ctx).find("tandem_gpu"), std::string::npos);
  ctx->gpus.reset();  // no telemetry object at all
  EXPECT_FALSE(status_json(EngineStats{}, *ctx).contains("gpus"));
  EXPECT_EQ(render_metrics(EngineStats{}, *ctx).find("tandem_gpu"), std::string::npos);
}

TEST(ServerTelemetry, LoadingAnswersWithProgress) {
  auto ctx = context_with_nvml(kFake);
  ctx->loading.bytes_total = 1000;
  ctx->loading.bytes_done = 250;

  const auto health = handle_plain_route(*ctx, "GET", "/health", "");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 503);
  EXPECT_EQ(json::parse(health->body),
            json::parse(R"({"status":"loading","progress":{"bytes_done":250,"bytes_total":1000}})"));

  const auto status = handle_plain_route(*ctx, "GET", "/v1/status", "");
  ASSERT_TRUE(status);
  EXPECT_EQ(status->status, 200);
  const json s = json::parse(status->body);
  EXPECT_EQ(s.at("state"), "loading");
  EXPECT_EQ(s.at("progress").at("bytes_done"), 250);
  EXPECT_EQ(s.at("progress").at("bytes_total"), 1000);
  EXPECT_EQ(s.at("model").at("path"), "/models/x.gguf");
  EXPECT_EQ(s.at("gpus").size(), 2u);

  const auto metrics = handle_plain_route(*ctx, "GET", "/metrics", "");
  ASSERT_TRUE(metrics);
  EXPECT_EQ(metrics->status, 200);
  EXPECT_TRUE(has_line(metrics->body, "tandem_loading 1")) << metrics->body;
  EXPECT_TRUE(has_line(metrics->body, "tandem_load_bytes_done 250")) << metrics->body;
  EXPECT_TRUE(has_line(metrics->body, "tandem_load_bytes_total 1000")) << metrics->body;
  EXPECT_TRUE(has_line(metrics->body, "tandem_gpu_sm_clock_mhz{gpu=\"0\"} 1980")) << metrics->body;

  // Anything that needs the model waits, with an OpenAI-shaped 503.
  const auto models = handle_plain_route(*ctx, "GET", "/v1/models", "");
  ASSERT_TRUE(models);
  EXPECT_EQ(models->status, 503);
  const json e = json::parse(models->body);
  EXPECT_EQ(e.at("error").at("code"), "loading");
  EXPECT_EQ(e.at("error").at("type"), "service_unavailable_error");
}

}  // namespace
}  // namespace tandem::server
