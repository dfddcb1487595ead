// DeviceLaunch: launches a CTA-level kernel K (a struct with kThreads, Shared and run(ctx, smem,
// args...), see exec/context.h) on a CUDA stream through its __global__ entry DeviceEntry<K>::kernel
// (device_context.cuh). The host emulation's counterpart, with the
// same run(), is exec/host_launch.h, so that the code choosing grids (each kernel's grid(),
// launched by unfused_ffi.h's Instance) is written once for both.
#pragma once

#include <cuda_runtime.h>

#include <string>

#include "jax_natten/exec/device_context.cuh"
#include "xla/ffi/api/ffi.h"

namespace jax_natten {

// The error of the launch just made on this thread, as an ffi::Error naming `what`.
inline xla::ffi::Error LastCudaError(const char* what) {
  const cudaError_t status = cudaGetLastError();
  if (status == cudaSuccess) return xla::ffi::Error::Success();
  return xla::ffi::Error::Internal(std::string(what) + ": " + cudaGetErrorString(status));
}

namespace exec {

struct DeviceLaunch {
  cudaStream_t stream;

  template <class K, class... Args>
  xla::ffi::Error run(Dim3 grid, const char* what, Args... args) const {
    DeviceEntry<K>::kernel<<<dim3(grid.x, grid.y, grid.z), K::kThreads, 0, stream>>>(args...);
    return LastCudaError(what);
  }
};

}  // namespace exec
}  // namespace jax_natten
