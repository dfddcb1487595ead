// DeviceLaunch: launches a CTA-level kernel K (a struct with kThreads, Shared and run(ctx, smem,
// args...), see exec/context.h) on a CUDA stream through its __global__ entry DeviceEntry<K>::kernel
// (device_context.cuh). The host emulation's counterpart, with the
// same run(), is exec/host_launch.h, so that the code choosing grids (each kernel's grid(),
// launched by unfused_ffi.h's Instance) is written once for both.
#pragma once

#include <cuda_runtime.h>

#include <string>

#include "jax_natten/exec/device_context.cuh"
#include "jax_natten/exec/launch_result.h"

namespace jax_natten {

// The outcome of the launch just made on this thread, its error naming `what`.
inline exec::LaunchResult LastCudaError(const char* what) {
  const cudaError_t status = cudaGetLastError();
  if (status == cudaSuccess) return {};
  return {exec::LaunchResult::Kind::kPlatformError, std::string(what) + ": " + cudaGetErrorString(status)};
}

namespace exec {

struct DeviceLaunch {
  cudaStream_t stream;

  template <class K, class... Args>
  LaunchResult run(Dim3 grid, const char* what, Args... args) const {
    DeviceEntry<K>::kernel<<<dim3(grid.x, grid.y, grid.z), K::kThreads, 0, stream>>>(args...);
    return LastCudaError(what);
  }
};

}  // namespace exec
}  // namespace jax_natten
