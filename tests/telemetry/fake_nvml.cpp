// A stand-in for libnvidia-ml.so.1, built only for tests: the NVML entry
// points the telemetry uses, answering fixed values for two GPUs. GPU 1 does
// not support power readings (NVML_ERROR_NOT_SUPPORTED), as some boards do.
// TANDEM_FAKE_NVML_INIT_ERROR=1 makes nvmlInit_v2 fail as with no driver.
// fake_nvml_memory_calls() counts nvmlDeviceGetMemoryInfo calls, so tests can
// see whether a sample reached the "driver".
#include <atomic>
#include <cstdlib>
#include <cstring>

#include "telemetry/nvml_abi.h"

struct nvmlDevice_st {
  const char* name;
  unsigned long long total, used;
  unsigned temperature_c, power_mw, power_limit_mw, util_gpu, util_memory, sm_mhz, mem_mhz;
  bool power_supported;
};

namespace {

constexpr unsigned long long kGiB = 1ull << 30;
nvmlDevice_st devices[2] = {
    {"Fake H100 80GB HBM3", 80 * kGiB, 30 * kGiB, 61, 312500, 700000, 87, 45, 1980, 2619, true},
    {"Fake L4", 24 * kGiB, 1 * kGiB, 40, 0, 0, 3, 1, 795, 6250, false},
};
std::atomic<int> memory_calls{0};
constexpr nvmlReturn_t kDriverNotLoaded = 9;
constexpr nvmlReturn_t kInvalidArgument = 2;

}  // namespace

extern "C" {

__attribute__((visibility("default"))) int fake_nvml_memory_calls() { return memory_calls.load(); }

__attribute__((visibility("default"))) nvmlReturn_t nvmlInit_v2() {
  const char* fail = std::getenv("TANDEM_FAKE_NVML_INIT_ERROR");
  return fail != nullptr && std::strcmp(fail, "1") == 0 ? kDriverNotLoaded : TANDEM_NVML_SUCCESS;
}

__attribute__((visibility("default"))) nvmlReturn_t nvmlShutdown() { return TANDEM_NVML_SUCCESS; }

__attribute__((visibility("default"))) const char* nvmlErrorString(nvmlReturn_t r) {
  return r == kDriverNotLoaded ? "Driver Not Loaded" : "Unknown Error";
}

__attribute__((visibility("default"))) nvmlReturn_t nvmlDeviceGetCount_v2(unsigned* count) {
  *count = 2;
  return TANDEM_NVML_SUCCESS;
}

__attribute__((visibility("default"))) nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned index, nvmlDevice_t* device) {
  if (index >= 2) return kInvalidArgument;
  *device = &devices[index];
  return TANDEM_NVML_SUCCESS;
}

__attribute__((visibility("default"))) nvmlReturn_t nvmlDeviceGetName(nvmlDevice_t d, char* name, unsigned length) {
  std::strncpy(name, d->name, length);
  return TANDEM_NVML_SUCCESS;
}

__attribute__((visibility("default"))) nvmlReturn_t nvmlDeviceGetMemoryInfo(nvmlDevice_t d, nvmlMemory_t* m) {
  memory_calls++;
  m->total = d->total;
  m->used = d->used;
  m->free = d->total - d->used;
  return TANDEM_NVML_SUCCESS;
}

__attribute__((visibility("default"))) nvmlReturn_t nvmlDeviceGetTemperature(nvmlDevice_t d, int sensor, unsigned* c) {
  if (sensor != TANDEM_NVML_TEMPERATURE_GPU) return kInvalidArgument;
  *c = d->temperature_c;
  return TANDEM_NVML_SUCCESS;
}

__attribute__((visibility("default"))) nvmlReturn_t nvmlDeviceGetPowerUsage(nvmlDevice_t d, unsigned* mw) {
  if (!d->power_supported) return TANDEM_NVML_ERROR_NOT_SUPPORTED;
  *mw = d->power_mw;
  return TANDEM_NVML_SUCCESS;
}

__attribute__((visibility("default"))) nvmlReturn_t nvmlDeviceGetEnforcedPowerLimit(nvmlDevice_t d, unsigned* mw) {
  if (!d->power_supported) return TANDEM_NVML_ERROR_NOT_SUPPORTED;
  *mw = d->power_limit_mw;
  return TANDEM_NVML_SUCCESS;
}

__attribute__((visibility("default"))) nvmlReturn_t nvmlDeviceGetUtilizationRates(nvmlDevice_t d, nvmlUtilization_t* u) {
  u->gpu = d->util_gpu;
  u->memory = d->util_memory;
  return TANDEM_NVML_SUCCESS;
}

__attribute__((visibility("default"))) nvmlReturn_t nvmlDeviceGetClockInfo(nvmlDevice_t d, int type, unsigned* mhz) {
  if (type == TANDEM_NVML_CLOCK_SM) *mhz = d->sm_mhz;
  else if (type == TANDEM_NVML_CLOCK_MEM) *mhz = d->mem_mhz;
  else return kInvalidArgument;
  return TANDEM_NVML_SUCCESS;
}

}  // extern "C"
