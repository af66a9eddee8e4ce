// GPU telemetry through NVML, loaded at run time with dlopen: no CUDA headers
// and no link-time dependency, so the CPU build has it too. Without NVML (no
// driver, no GPU, a failing call) it reports itself unavailable, with the
// reason, and every sample is empty.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace tandem::telemetry {

// One GPU at one moment. A reading the device does not support (or that
// failed this time) is empty rather than zero.
struct GpuSample {
  unsigned index = 0;
  std::string name;
  std::optional<uint64_t> memory_used_bytes;
  std::optional<uint64_t> memory_free_bytes;
  std::optional<uint64_t> memory_total_bytes;
  std::optional<double> temperature_c;
  std::optional<double> power_w;        // current draw
  std::optional<double> power_limit_w;  // enforced limit
  std::optional<double> utilization_gpu_percent;     // time a kernel ran, over NVML's last period
  std::optional<double> utilization_memory_percent;  // time device memory was read or written
  std::optional<double> sm_clock_mhz;
  std::optional<double> mem_clock_mhz;
};

// The library to load: $TANDEM_NVML_LIBRARY when set and not empty, else
// "libnvidia-ml.so.1" (found through the loader's usual search path).
std::string nvml_library_path();

class GpuTelemetry {
 public:
  // Loads `library_path` and initialises NVML. Never throws: on failure the
  // object is unavailable and unavailable_reason() says why. Samples are
  // cached for `min_interval`, so frequent callers (metrics scrapes, status
  // polls) do not each query the driver.
  explicit GpuTelemetry(const std::string& library_path = nvml_library_path(),
                        std::chrono::milliseconds min_interval = std::chrono::milliseconds(500));
  ~GpuTelemetry();  // shuts NVML down and unloads the library
  GpuTelemetry(const GpuTelemetry&) = delete;
  GpuTelemetry& operator=(const GpuTelemetry&) = delete;

  bool available() const;
  // Empty when available; otherwise e.g. "cannot load libnvidia-ml.so.1: ...".
  const std::string& unavailable_reason() const { return reason_; }
  // Devices NVML reported at start-up.
  unsigned device_count() const { return static_cast<unsigned>(devices_.size()); }

  // One sample per GPU, at most `min_interval` old. Empty when unavailable.
  // Thread-safe.
  std::vector<GpuSample> sample();

 private:
  struct Nvml;  // the loaded library and its entry points
  GpuSample read_device(unsigned index) const;

  std::unique_ptr<Nvml> nvml_;
  std::string reason_;
  std::vector<void*> devices_;  // nvmlDevice_t handles, index order
  std::chrono::milliseconds min_interval_;

  std::mutex mutex_;  // guards the cache
  std::vector<GpuSample> cached_;
  std::chrono::steady_clock::time_point cached_at_{};
  bool have_cache_ = false;
};

}  // namespace tandem::telemetry
