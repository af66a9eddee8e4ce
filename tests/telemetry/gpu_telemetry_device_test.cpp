// GpuTelemetry against the real NVML of the GPU machine (label gpu): the
// driver's library loads, and its readings are in the ranges a working
// NVIDIA GPU reports.
#include <gtest/gtest.h>

#include "telemetry/gpu_telemetry.h"

namespace tandem::telemetry {
namespace {

TEST(GpuTelemetryOnDevice, ReadsTheDriversNvml) {
  GpuTelemetry t("libnvidia-ml.so.1", std::chrono::milliseconds(0));
  ASSERT_TRUE(t.available()) << t.unavailable_reason();
  const std::vector<GpuSample> gpus = t.sample();
  ASSERT_GE(gpus.size(), 1u);
  for (size_t i = 0; i < gpus.size(); ++i) {
    const GpuSample& g = gpus[i];
    EXPECT_EQ(g.index, i);
    EXPECT_EQ(g.name.rfind("NVIDIA", 0), 0u) << g.name;
    ASSERT_TRUE(g.memory_total_bytes && g.memory_used_bytes && g.memory_free_bytes);
    EXPECT_GT(*g.memory_total_bytes, uint64_t{1} << 30);
    EXPECT_LE(*g.memory_used_bytes + *g.memory_free_bytes, *g.memory_total_bytes);
    ASSERT_TRUE(g.temperature_c);
    EXPECT_GT(*g.temperature_c, 0.0);
    EXPECT_LT(*g.temperature_c, 120.0);
    if (g.power_w && g.power_limit_w) {  // data-centre boards report both
      EXPECT_GT(*g.power_w, 0.0);
      EXPECT_GT(*g.power_limit_w, 50.0);
    }
    ASSERT_TRUE(g.utilization_gpu_percent && g.sm_clock_mhz && g.mem_clock_mhz);
    EXPECT_LE(*g.utilization_gpu_percent, 100.0);
    EXPECT_GT(*g.sm_clock_mhz, 0.0);
    EXPECT_GT(*g.mem_clock_mhz, 0.0);
  }
}

}  // namespace
}  // namespace tandem::telemetry
