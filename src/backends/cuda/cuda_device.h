// CUDA device discovery. The CUDA engine (kernels, paged attention, graphs)
// builds on this; this file only proves the toolchain and reports devices.
#pragma once

#include <string>
#include <vector>

namespace tandem::cuda {

struct DeviceInfo {
  int index = 0;
  std::string name;
  int sm_major = 0;
  int sm_minor = 0;
  size_t total_memory = 0;
};

// Empty when there is no driver or no device.
std::vector<DeviceInfo> list_devices();

}  // namespace tandem::cuda
