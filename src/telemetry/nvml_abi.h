// The few NVML types and entry points the telemetry uses, declared here from
// NVML's documented C API, so that no NVIDIA header is needed to build.
// Only what gpu_telemetry.cpp calls; the values are fixed by NVML's ABI.
#pragma once

extern "C" {

typedef int nvmlReturn_t;  // an enum in NVML; int-sized in its C ABI
enum : int {
  TANDEM_NVML_SUCCESS = 0,
  TANDEM_NVML_ERROR_NOT_SUPPORTED = 3,
};

typedef struct nvmlDevice_st* nvmlDevice_t;

typedef struct {
  unsigned long long total;  // bytes
  unsigned long long free;
  unsigned long long used;
} nvmlMemory_t;

typedef struct {
  unsigned int gpu;     // percent of the last sample period a kernel ran
  unsigned int memory;  // percent of it device memory was read or written
} nvmlUtilization_t;

enum : int { TANDEM_NVML_TEMPERATURE_GPU = 0 };                          // nvmlTemperatureSensors_t
enum : int { TANDEM_NVML_CLOCK_SM = 1, TANDEM_NVML_CLOCK_MEM = 2 };      // nvmlClockType_t

// Buffer size NVML documents as enough for any device name (NVML_DEVICE_NAME_V2_BUFFER_SIZE).
enum : unsigned { TANDEM_NVML_DEVICE_NAME_BUFFER_SIZE = 96 };

// Entry points, as function-pointer types for dlsym.
using nvmlInit_v2_fn = nvmlReturn_t (*)();
using nvmlShutdown_fn = nvmlReturn_t (*)();
using nvmlErrorString_fn = const char* (*)(nvmlReturn_t);
using nvmlDeviceGetCount_v2_fn = nvmlReturn_t (*)(unsigned int* count);
using nvmlDeviceGetHandleByIndex_v2_fn = nvmlReturn_t (*)(unsigned int index, nvmlDevice_t* device);
using nvmlDeviceGetName_fn = nvmlReturn_t (*)(nvmlDevice_t device, char* name, unsigned int length);
using nvmlDeviceGetMemoryInfo_fn = nvmlReturn_t (*)(nvmlDevice_t device, nvmlMemory_t* memory);
using nvmlDeviceGetTemperature_fn = nvmlReturn_t (*)(nvmlDevice_t device, int sensor, unsigned int* celsius);
using nvmlDeviceGetPowerUsage_fn = nvmlReturn_t (*)(nvmlDevice_t device, unsigned int* milliwatts);
using nvmlDeviceGetEnforcedPowerLimit_fn = nvmlReturn_t (*)(nvmlDevice_t device, unsigned int* milliwatts);
using nvmlDeviceGetUtilizationRates_fn = nvmlReturn_t (*)(nvmlDevice_t device, nvmlUtilization_t* utilization);
using nvmlDeviceGetClockInfo_fn = nvmlReturn_t (*)(nvmlDevice_t device, int clock_type, unsigned int* mhz);

}  // extern "C"
