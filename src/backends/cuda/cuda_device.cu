#include <cuda_runtime.h>

#include "backends/cuda/cuda_device.h"

namespace tandem::cuda {

std::vector<DeviceInfo> list_devices() {
  std::vector<DeviceInfo> out;
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) return out;
  for (int i = 0; i < count; ++i) {
    cudaDeviceProp prop{};
    if (cudaGetDeviceProperties(&prop, i) != cudaSuccess) continue;
    out.push_back(DeviceInfo{i, prop.name, prop.major, prop.minor, prop.totalGlobalMem});
  }
  return out;
}

}  // namespace tandem::cuda
