// Execution contexts: how CTA-level kernel code reaches the hardware. Kernel code never names
// threadIdx, blockIdx, __syncthreads, __shfl*_sync, cp.async, an mma.sync or an ldmatrix atom
// directly; it takes `const Ctx& ctx` and calls these members, so that one source builds for the
// GPU (DeviceContext, device_context.cuh) and for the host emulation (HostContext,
// host_context.h), which runs a CTA as N lanes on the CPU.
//
// The API (every context has all of it; names are stable, new members may be added):
//
//   unsigned ctx.thread_index()           threadIdx.x (CTAs are 1-D)
//   unsigned ctx.block_threads()          blockDim.x
//   Dim3 ctx.block_index()                blockIdx
//   Dim3 ctx.grid_size()                  gridDim
//   void ctx.sync_threads()               __syncthreads(): a CTA barrier that orders shared memory
//   T    ctx.shfl_xor(T value, int mask)  __shfl_xor_sync(0xffffffff, value, mask), 4-byte T, the
//                                         whole warp must call it
//   void ctx.atomic_add(float* gmem, float value)  atomicAdd on global memory (result unused: RED)
//   void ctx.cp_async_16(void* smem, const void* gmem)  cp.async.cg 16 bytes global -> shared
//   void ctx.cp_async_commit()            cp.async.commit_group
//   void ctx.template cp_async_wait<N>()  cp.async.wait_group N: all but this lane's N newest
//                                         committed groups have landed (other lanes' copies need
//                                         a sync_threads() after their wait, as on the GPU)
//   typename Ctx::template mma_op<Op>     the MMA operation to put in a cute::MMA_Atom for the
//                                         SM80 tensor-core operation Op: Op itself on the device,
//                                         its emulation on the host. Emulated: the float16,
//                                         bfloat16 and TF32 atoms of SM80 listed in host_mma.h.
//   typename Ctx::template ldsm_op<Op>    the copy operation to put in a cute::Copy_Atom for the
//                                         ldmatrix atom Op (SM75_U32x{1,2,4}_LDSM_N,
//                                         SM75_U16x{2,4,8}_LDSM_T): Op itself on the device, its
//                                         emulation on the host (host_ldsm.h).
//
// Indices have the types of CUDA's built-ins (unsigned), so that code written against a context
// compiles to the same instructions as code naming the built-ins: a signed index changes how
// CuTe's thread partitions divide and how indices widen to 64 bits.
//
// Functions that take a context are declared JAX_NATTEN_CTA (device code under nvcc, plain
// inline functions under a host compiler).
#pragma once

#if defined(__CUDACC__)
#define JAX_NATTEN_CTA __device__ __forceinline__
#else
#define JAX_NATTEN_CTA inline
#endif

namespace jax_natten::exec {

struct Dim3 {
  unsigned int x = 1, y = 1, z = 1;
};

}  // namespace jax_natten::exec
