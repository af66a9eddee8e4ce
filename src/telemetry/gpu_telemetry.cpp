#include "telemetry/gpu_telemetry.h"

#include <dlfcn.h>

#include <cstdlib>

#include "telemetry/nvml_abi.h"

namespace tandem::telemetry {

std::string nvml_library_path() {
  const char* env = std::getenv("TANDEM_NVML_LIBRARY");
  return env != nullptr && env[0] != '\0' ? std::string(env) : std::string("libnvidia-ml.so.1");
}

struct GpuTelemetry::Nvml {
  void* handle = nullptr;
  bool initialised = false;
  nvmlInit_v2_fn init = nullptr;
  nvmlShutdown_fn shutdown = nullptr;
  nvmlErrorString_fn error_string = nullptr;  // optional
  nvmlDeviceGetCount_v2_fn get_count = nullptr;
  nvmlDeviceGetHandleByIndex_v2_fn get_handle = nullptr;
  nvmlDeviceGetName_fn get_name = nullptr;
  nvmlDeviceGetMemoryInfo_fn get_memory = nullptr;
  nvmlDeviceGetTemperature_fn get_temperature = nullptr;
  nvmlDeviceGetPowerUsage_fn get_power = nullptr;
  nvmlDeviceGetEnforcedPowerLimit_fn get_power_limit = nullptr;
  nvmlDeviceGetUtilizationRates_fn get_utilization = nullptr;
  nvmlDeviceGetClockInfo_fn get_clock = nullptr;

  std::string describe(nvmlReturn_t r) const {
    const char* text = error_string != nullptr ? error_string(r) : nullptr;
    return text != nullptr ? std::string(text) + " (NVML error " + std::to_string(r) + ")"
                           : "NVML error " + std::to_string(r);
  }

  ~Nvml() {
    if (initialised) shutdown();
    if (handle != nullptr) dlclose(handle);
  }
};

namespace {

// Looks `name` up into `fn`; returns the missing name, or nothing.
template <class Fn>
bool resolve(void* handle, const char* name, Fn& fn, std::string& missing) {
  fn = reinterpret_cast<Fn>(dlsym(handle, name));
  if (fn == nullptr && missing.empty()) missing = name;
  return fn != nullptr;
}

}  // namespace

GpuTelemetry::GpuTelemetry(const std::string& library_path, std::chrono::milliseconds min_interval)
    : min_interval_(min_interval) {
  auto nvml = std::make_unique<Nvml>();
  nvml->handle = dlopen(library_path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (nvml->handle == nullptr) {
    const char* why = dlerror();
    reason_ = "cannot load " + library_path + ": " + (why != nullptr ? why : "unknown error");
    return;
  }
  std::string missing;
  void* h = nvml->handle;
  resolve(h, "nvmlInit_v2", nvml->init, missing);
  resolve(h, "nvmlShutdown", nvml->shutdown, missing);
  resolve(h, "nvmlDeviceGetCount_v2", nvml->get_count, missing);
  resolve(h, "nvmlDeviceGetHandleByIndex_v2", nvml->get_handle, missing);
  resolve(h, "nvmlDeviceGetName", nvml->get_name, missing);
  resolve(h, "nvmlDeviceGetMemoryInfo", nvml->get_memory, missing);
  resolve(h, "nvmlDeviceGetTemperature", nvml->get_temperature, missing);
  resolve(h, "nvmlDeviceGetPowerUsage", nvml->get_power, missing);
  resolve(h, "nvmlDeviceGetEnforcedPowerLimit", nvml->get_power_limit, missing);
  resolve(h, "nvmlDeviceGetUtilizationRates", nvml->get_utilization, missing);
  resolve(h, "nvmlDeviceGetClockInfo", nvml->get_clock, missing);
  nvml->error_string = reinterpret_cast<nvmlErrorString_fn>(dlsym(h, "nvmlErrorString"));
  if (!missing.empty()) {
    reason_ = library_path + " has no " + missing + " (not NVML, or too old a driver)";
    return;
  }
  const nvmlReturn_t init = nvml->init();
  if (init != TANDEM_NVML_SUCCESS) {
    reason_ = "nvmlInit_v2 failed: " + nvml->describe(init);
    return;
  }
  nvml->initialised = true;
  unsigned count = 0;
  const nvmlReturn_t counted = nvml->get_count(&count);
  if (counted != TANDEM_NVML_SUCCESS) {
    reason_ = "nvmlDeviceGetCount_v2 failed: " + nvml->describe(counted);
    return;
  }
  for (unsigned i = 0; i < count; ++i) {
    nvmlDevice_t device = nullptr;
    const nvmlReturn_t got = nvml->get_handle(i, &device);
    if (got != TANDEM_NVML_SUCCESS) {
      reason_ = "nvmlDeviceGetHandleByIndex_v2(" + std::to_string(i) + ") failed: " + nvml->describe(got);
      devices_.clear();
      return;
    }
    devices_.push_back(device);
  }
  if (devices_.empty()) {
    reason_ = "NVML reports no GPU";
    return;
  }
  nvml_ = std::move(nvml);
}

GpuTelemetry::~GpuTelemetry() = default;

bool GpuTelemetry::available() const { return nvml_ != nullptr; }

GpuSample GpuTelemetry::read_device(unsigned index) const {
  const Nvml& n = *nvml_;
  auto device = static_cast<nvmlDevice_t>(devices_[index]);
  GpuSample s;
  s.index = index;
  char name[TANDEM_NVML_DEVICE_NAME_BUFFER_SIZE] = {};
  if (n.get_name(device, name, sizeof name) == TANDEM_NVML_SUCCESS) {
    name[sizeof name - 1] = '\0';
    s.name = name;
  }
  nvmlMemory_t memory{};
  if (n.get_memory(device, &memory) == TANDEM_NVML_SUCCESS) {
    s.memory_total_bytes = memory.total;
    s.memory_free_bytes = memory.free;
    s.memory_used_bytes = memory.used;
  }
  unsigned value = 0;
  if (n.get_temperature(device, TANDEM_NVML_TEMPERATURE_GPU, &value) == TANDEM_NVML_SUCCESS) s.temperature_c = value;
  if (n.get_power(device, &value) == TANDEM_NVML_SUCCESS) s.power_w = value / 1000.0;  // NVML reports milliwatts
  if (n.get_power_limit(device, &value) == TANDEM_NVML_SUCCESS) s.power_limit_w = value / 1000.0;
  nvmlUtilization_t utilization{};
  if (n.get_utilization(device, &utilization) == TANDEM_NVML_SUCCESS) {
    s.utilization_gpu_percent = utilization.gpu;
    s.utilization_memory_percent = utilization.memory;
  }
  if (n.get_clock(device, TANDEM_NVML_CLOCK_SM, &value) == TANDEM_NVML_SUCCESS) s.sm_clock_mhz = value;
  if (n.get_clock(device, TANDEM_NVML_CLOCK_MEM, &value) == TANDEM_NVML_SUCCESS) s.mem_clock_mhz = value;
  return s;
}

std::vector<GpuSample> GpuTelemetry::sample() {
  if (!available()) return {};
  std::lock_guard<std::mutex> lock(mutex_);
  const auto now = std::chrono::steady_clock::now();
  if (!have_cache_ || now - cached_at_ >= min_interval_) {
    std::vector<GpuSample> fresh;
    fresh.reserve(devices_.size());
    for (unsigned i = 0; i < devices_.size(); ++i) fresh.push_back(read_device(i));
    cached_ = std::move(fresh);
    cached_at_ = now;
    have_cache_ = true;
  }
  return cached_;
}

}  // namespace tandem::telemetry
