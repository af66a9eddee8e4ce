// GpuTelemetry against a fake NVML (fake_nvml.cpp, loaded like the real
// library), and the ways NVML can be missing or broken.
#include <gtest/gtest.h>

#include <dlfcn.h>
#include <stdlib.h>

#include <thread>

#include "telemetry/gpu_telemetry.h"

namespace tandem::telemetry {
namespace {

const std::string kFake = TANDEM_FAKE_NVML;  // path of the fake library (CMake)
constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;

// Calls of nvmlDeviceGetMemoryInfo the fake has answered so far.
int fake_memory_calls() {
  void* h = dlopen(kFake.c_str(), RTLD_NOW | RTLD_LOCAL);  // the same instance the telemetry loaded
  EXPECT_NE(h, nullptr);
  auto calls = reinterpret_cast<int (*)()>(dlsym(h, "fake_nvml_memory_calls"));
  EXPECT_NE(calls, nullptr);
  const int n = calls();
  dlclose(h);
  return n;
}

TEST(GpuTelemetry, SamplesEveryDeviceFromNvml) {
  GpuTelemetry t(kFake, std::chrono::milliseconds(0));
  ASSERT_TRUE(t.available()) << t.unavailable_reason();
  EXPECT_EQ(t.unavailable_reason(), "");
  EXPECT_EQ(t.device_count(), 2u);
  const std::vector<GpuSample> s = t.sample();
  ASSERT_EQ(s.size(), 2u);

  const GpuSample& a = s[0];
  EXPECT_EQ(a.index, 0u);
  EXPECT_EQ(a.name, "Fake H100 80GB HBM3");
  EXPECT_EQ(a.memory_total_bytes, uint64_t{80} << 30);
  EXPECT_EQ(a.memory_used_bytes, uint64_t{30} << 30);
  EXPECT_EQ(a.memory_free_bytes, uint64_t{50} << 30);
  EXPECT_EQ(a.temperature_c, 61.0);
  EXPECT_DOUBLE_EQ(*a.power_w, 312.5);  // NVML's milliwatts as watts
  EXPECT_DOUBLE_EQ(*a.power_limit_w, 700.0);
  EXPECT_EQ(a.utilization_gpu_percent, 87.0);
  EXPECT_EQ(a.utilization_memory_percent, 45.0);
  EXPECT_EQ(a.sm_clock_mhz, 1980.0);
  EXPECT_EQ(a.mem_clock_mhz, 2619.0);

  // A board without power readings: those fields are empty, the rest are read.
  const GpuSample& b = s[1];
  EXPECT_EQ(b.index, 1u);
  EXPECT_EQ(b.name, "Fake L4");
  EXPECT_FALSE(b.power_w.has_value());
  EXPECT_FALSE(b.power_limit_w.has_value());
  EXPECT_EQ(static_cast<double>(*b.memory_total_bytes) / kGiB, 24.0);
  EXPECT_EQ(b.sm_clock_mhz, 795.0);
}

TEST(GpuTelemetry, CachesSamplesForTheInterval) {
  // A minute's cache: the samples below all fall within it, however slow
  // the machine.
  GpuTelemetry cached(kFake, std::chrono::seconds(60));
  ASSERT_TRUE(cached.available());
  const int before = fake_memory_calls();
  cached.sample();
  EXPECT_EQ(fake_memory_calls(), before + 2);  // one call per device
  for (int i = 0; i < 10; ++i) cached.sample();
  EXPECT_EQ(fake_memory_calls(), before + 2);  // served from the cache

  // A short one goes stale (a sleep lasts at least what it asks).
  GpuTelemetry brief(kFake, std::chrono::milliseconds(100));
  const int first = fake_memory_calls();
  brief.sample();
  std::this_thread::sleep_for(std::chrono::milliseconds(150));
  EXPECT_EQ(brief.sample().size(), 2u);
  EXPECT_EQ(fake_memory_calls(), first + 4);  // stale: read again

  GpuTelemetry uncached(kFake, std::chrono::milliseconds(0));
  const int start = fake_memory_calls();
  uncached.sample();
  uncached.sample();
  EXPECT_EQ(fake_memory_calls(), start + 4);
}

TEST(GpuTelemetry, MissingLibraryIsUnavailableWithTheReason) {
  GpuTelemetry t("/nonexistent/libnvidia-ml.so.1");
  EXPECT_FALSE(t.available());
  EXPECT_NE(t.unavailable_reason().find("cannot load /nonexistent/libnvidia-ml.so.1"), std::string::npos)
      << t.unavailable_reason();
  EXPECT_TRUE(t.sample().empty());
  EXPECT_EQ(t.device_count(), 0u);
}

TEST(GpuTelemetry, LibraryWithoutNvmlSymbolsIsUnavailable) {
  GpuTelemetry t("libc.so.6");  // loads, but is not NVML
  EXPECT_FALSE(t.available());
  EXPECT_NE(t.unavailable_reason().find("has no nvmlInit_v2"), std::string::npos) << t.unavailable_reason();
  EXPECT_TRUE(t.sample().empty());
}

TEST(GpuTelemetry, FailedInitIsUnavailableWithNvmlsMessage) {
  ASSERT_EQ(setenv("TANDEM_FAKE_NVML_INIT_ERROR", "1", 1), 0);
  GpuTelemetry t(kFake);
  unsetenv("TANDEM_FAKE_NVML_INIT_ERROR");
  EXPECT_FALSE(t.available());
  EXPECT_EQ(t.unavailable_reason(), "nvmlInit_v2 failed: Driver Not Loaded (NVML error 9)");
  EXPECT_TRUE(t.sample().empty());
}

TEST(GpuTelemetry, LibraryPathComesFromTheEnvironment) {
  unsetenv("TANDEM_NVML_LIBRARY");
  EXPECT_EQ(nvml_library_path(), "libnvidia-ml.so.1");
  setenv("TANDEM_NVML_LIBRARY", "", 1);
  EXPECT_EQ(nvml_library_path(), "libnvidia-ml.so.1");
  setenv("TANDEM_NVML_LIBRARY", kFake.c_str(), 1);
  EXPECT_EQ(nvml_library_path(), kFake);
  GpuTelemetry from_env;  // the default argument reads the variable
  EXPECT_TRUE(from_env.available()) << from_env.unavailable_reason();
  unsetenv("TANDEM_NVML_LIBRARY");
}

}  // namespace
}  // namespace tandem::telemetry
