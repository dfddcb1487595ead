// Helpers shared by the FFI handlers (host code only).
#pragma once

#include <cuda_runtime.h>

#include <string>

#include "xla/ffi/api/ffi.h"

namespace jax_natten {

// The error of the launch just made on this thread, as an ffi::Error naming `what`.
inline xla::ffi::Error LastCudaError(const char* what) {
  cudaError_t status = cudaGetLastError();
  if (status == cudaSuccess) return xla::ffi::Error::Success();
  return xla::ffi::Error::Internal(std::string(what) + ": " + cudaGetErrorString(status));
}

}  // namespace jax_natten
