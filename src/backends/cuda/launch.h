// Kernel launches that overlap with the kernel before them in the stream
// (programmatic dependent launch, sm_90 and later).
//
// A kernel launched with `launch` or `launch_with_shared` may start while its predecessor's last
// blocks still run. Its contract, which every kernel launched this way keeps:
//   - before `wait_for_predecessor()` it reads only data that no kernel of
//     the step writes (weights, tables fixed at load) and writes nothing;
//   - every thread calls `wait_for_predecessor()` before any return, so the
//     kernel never finishes before its predecessor (whatever came before
//     stays ordered);
//   - it calls `let_successor_start()` early, so that the next kernel's
//     blocks can be scheduled as this one's retire.
// On GPUs before sm_90 the launch is an ordinary one and both calls do nothing.
#pragma once

#include <cuda_runtime.h>

#include <utility>

#include "backends/cuda/cuda_check.h"

namespace tandem::cuda {

__device__ __forceinline__ void wait_for_predecessor() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

__device__ __forceinline__ void let_successor_start() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" :::);
#endif
}

// True when the current device supports programmatic dependent launch.
inline bool overlapped_launch_supported() {
  int device = 0, major = 0;
  TANDEM_CUDA_CHECK(cudaGetDevice(&device));
  TANDEM_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
  return major >= 9;
}

// kernel<<<grid, block, shared_bytes, stream>>>(args...), allowed to
// overlap the previous kernel in `stream` (see above); with `cluster`, a
// grid of thread-block clusters of that many blocks (sm_90 and later; grid
// a multiple of cluster in each dimension).
template <typename... Params, typename... Args>
void launch_config(void (*kernel)(Params...), dim3 grid, dim3 block, size_t shared_bytes, const dim3* cluster,
                   cudaStream_t stream, Args&&... args) {
  cudaLaunchAttribute attributes[2]{};
  unsigned n = 0;
  if (overlapped_launch_supported()) {
    attributes[n].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attributes[n++].val.programmaticStreamSerializationAllowed = 1;
  }
  if (cluster != nullptr) {
    attributes[n].id = cudaLaunchAttributeClusterDimension;
    attributes[n].val.clusterDim.x = cluster->x;
    attributes[n].val.clusterDim.y = cluster->y;
    attributes[n++].val.clusterDim.z = cluster->z;
  }
  cudaLaunchConfig_t config{};
  config.gridDim = grid;
  config.blockDim = block;
  config.dynamicSmemBytes = shared_bytes;
  config.stream = stream;
  config.attrs = attributes;
  config.numAttrs = n;
  TANDEM_CUDA_CHECK(cudaLaunchKernelEx(&config, kernel, std::forward<Args>(args)...));
}

template <typename... Params, typename... Args>
void launch_with_shared(void (*kernel)(Params...), dim3 grid, dim3 block, size_t shared_bytes, cudaStream_t stream,
                        Args&&... args) {
  launch_config(kernel, grid, block, shared_bytes, nullptr, stream, std::forward<Args>(args)...);
}

// Thread-block clusters of `cluster` blocks, no dynamic shared memory.
template <typename... Params, typename... Args>
void launch_clusters(void (*kernel)(Params...), dim3 grid, dim3 block, dim3 cluster, cudaStream_t stream,
                     Args&&... args) {
  launch_config(kernel, grid, block, 0, &cluster, stream, std::forward<Args>(args)...);
}

// The same without dynamic shared memory.
template <typename... Params, typename... Args>
void launch(void (*kernel)(Params...), dim3 grid, dim3 block, cudaStream_t stream, Args&&... args) {
  launch_with_shared(kernel, grid, block, 0, stream, std::forward<Args>(args)...);
}

}  // namespace tandem::cuda
