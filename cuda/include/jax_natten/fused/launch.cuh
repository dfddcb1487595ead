// The GPU entry of the fused forward and its launch on CUDA (dynamic shared memory: the K/V
// stages of the larger head dims exceed the 48 KiB of static shared memory); the host
// emulation's counterpart is host_launch.h. Instantiated once per (dtype, head-dim class) in the
// generated units listed in CMakeLists.txt (FUSED_DTYPES x JAX_NATTEN_FUSED_HEAD_DIMS).
#pragma once

#include <cuda_runtime.h>

#include <string>

#include "jax_natten/exec/device_context.cuh"
#include "jax_natten/exec/device_launch.cuh"
#include "jax_natten/fused/backward.h"
#include "jax_natten/fused/backward_dq.h"
#include "jax_natten/ffi_util.h"
#include "jax_natten/fused/kernel.h"
#include "jax_natten/fused/launch.h"
#include "jax_natten/fused/params.h"

namespace jax_natten::fused {

template <class K>
__global__ void __launch_bounds__(K::kThreads) forward_kernel(FusedParams p) {
  extern __shared__ __align__(128) unsigned char smem[];
  K::run(exec::DeviceContext{}, *reinterpret_cast<typename K::Shared*>(smem), p);
}

// Enqueues the kernel on the launch's stream; no allocation, no host synchronization (CUDA-graph safe).
template <class Elem, int kHeadDim>
xla::ffi::Error launch_forward(const exec::DeviceLaunch& launch, const FusedParams& p) {
  using K = ForwardKernel<ForwardConfig<Elem, kHeadDim>>;
  constexpr int kBytes = sizeof(typename K::Shared);
  if (cudaError_t e = cudaFuncSetAttribute(forward_kernel<K>, cudaFuncAttributeMaxDynamicSharedMemorySize, kBytes);
      e != cudaSuccess) {
    return xla::ffi::Error::Internal(std::string("fused forward: ") + cudaGetErrorString(e));
  }
  const FusedParams padded = pad_axes(p);
  const exec::Dim3 grid = launch_grid(padded);
  forward_kernel<K><<<dim3(grid.x, grid.y, grid.z), K::kThreads, kBytes, launch.stream>>>(padded);
  return ToError(LastCudaError("fused forward"));
}

template <class K>
__global__ void __launch_bounds__(K::kThreads) backward_kernel(BackwardParams p) {
  extern __shared__ __align__(128) unsigned char smem[];
  K::run(exec::DeviceContext{}, *reinterpret_cast<typename K::Shared*>(smem), p);
}

template <class K>
cudaError_t launch_backward_kernel(const exec::DeviceLaunch& launch, exec::Dim3 grid, const BackwardParams& p) {
  constexpr int kBytes = sizeof(typename K::Shared);
  if (cudaError_t e = cudaFuncSetAttribute(backward_kernel<K>, cudaFuncAttributeMaxDynamicSharedMemorySize, kBytes);
      e != cudaSuccess) {
    return e;
  }
  backward_kernel<K><<<dim3(grid.x, grid.y, grid.z), K::kThreads, kBytes, launch.stream>>>(p);
  return cudaGetLastError();
}

// The KV-tile kernel (dK, dV and, by atomics, dQ), then in deterministic mode the Q-tile kernel (dQ).
template <class Elem, int kHeadDim>
xla::ffi::Error launch_backward(const exec::DeviceLaunch& launch, const BackwardParams& p) {
  if constexpr (kBackwardBuilt<Elem, kHeadDim>) {
    BackwardParams padded = p;
    padded.fwd = pad_axes(p.fwd);
    BackwardParams kv_tiles = padded;
    cudaError_t e = cudaSuccess;
    if (p.deterministic) {
      kv_tiles.d_query = nullptr;
    } else {
      const size_t d_query_bytes = sizeof(float) * p.fwd.batch * p.fwd.tokens * p.fwd.heads * p.fwd.dim;
      e = cudaMemsetAsync(p.d_query, 0, d_query_bytes, launch.stream);  // added to
    }
    if (e == cudaSuccess) {
      e = launch_backward_kernel<BackwardKernel<BackwardConfig<Elem, kHeadDim>>>(
          launch, backward_launch_grid(padded.fwd), kv_tiles);
    }
    if (e == cudaSuccess && p.deterministic) {
      e = launch_backward_kernel<BackwardDqKernel<DqConfig<Elem, kHeadDim>>>(launch, launch_grid(padded.fwd), padded);
    }
    if (e != cudaSuccess) return xla::ffi::Error::Internal(std::string("fused backward: ") + cudaGetErrorString(e));
    return xla::ffi::Error::Success();
  } else {
    return xla::ffi::Error::InvalidArgument("fused backward: float16 / bfloat16 with head dims up to 128 only");
  }
}

}  // namespace jax_natten::fused
