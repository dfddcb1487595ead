// DeviceContext: the execution context of a real CUDA kernel (see context.h for the API). Every
// member is one instruction (or a special-register read), so code written against the context
// compiles to what it would be if it named the instructions itself.
#pragma once

#include <cstdint>

#include "jax_natten/exec/context.h"

namespace jax_natten::exec {

struct DeviceContext {
  template <class Op>
  using mma_op = Op;
  template <class Op>
  using ldsm_op = Op;

  __device__ __forceinline__ unsigned thread_index() const { return threadIdx.x; }
  __device__ __forceinline__ unsigned block_threads() const { return blockDim.x; }
  __device__ __forceinline__ Dim3 block_index() const { return {blockIdx.x, blockIdx.y, blockIdx.z}; }
  __device__ __forceinline__ Dim3 grid_size() const { return {gridDim.x, gridDim.y, gridDim.z}; }
  __device__ __forceinline__ void sync_threads() const { __syncthreads(); }

  template <class T>
  __device__ __forceinline__ T shfl_xor(T value, int mask) const {
    static_assert(sizeof(T) == 4, "shfl_xor moves 4-byte values");
    return __shfl_xor_sync(0xffffffffu, value, mask);
  }

  __device__ __forceinline__ void atomic_add(float* gmem, float value) const { atomicAdd(gmem, value); }

  __device__ __forceinline__ void cp_async_16(void* smem, const void* gmem) const {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    const auto dst = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(dst), "l"(gmem));
#else
    *static_cast<uint4*>(smem) = *static_cast<const uint4*>(gmem);
#endif
  }
  __device__ __forceinline__ void cp_async_commit() const {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile("cp.async.commit_group;\n" ::);
#endif
  }
  template <int N>
  __device__ __forceinline__ void cp_async_wait() const {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
#endif
  }
};

// DeviceEntry<K>::kernel: the __global__ function that runs the CTA-level kernel K (a struct with
// kThreads, Shared and a static run(ctx, smem, args...)) with a DeviceContext; each kernel header
// specialises it next to its entry. Entries are written per kernel, not generated from K,
// because their pointer parameters must be __restrict__ kernel parameters for the compiler to
// use the read-only data path (LDG.E.CONSTANT), which an entry forwarding a parameter pack loses.
template <class K>
struct DeviceEntry;

}  // namespace jax_natten::exec
