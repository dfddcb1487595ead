// CUDA FFI handlers of the GEMM-based unfused operators PN, NN and IN (the kernels are in
// jax_natten/gemm/). The buffer checks and attributes are unfused_ffi.h's, the launches gemm/launch.h's.
#include <cuda_runtime.h>

#include "jax_natten/exec/device_launch.cuh"
#include "jax_natten/gemm/launch.h"
#include "jax_natten/unfused_ffi.h"
#include "xla/ffi/api/ffi.h"

namespace {
using Kernels = jax_natten::GemmKernels<jax_natten::exec::DeviceLaunch>;
using jax_natten::exec::DeviceLaunch;
namespace ffi = xla::ffi;
}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(
    JaxNattenPnGemm, [](cudaStream_t stream, auto... args) { return jax_natten::PnHandler<Kernels>(DeviceLaunch{stream}, args...); },
    jax_natten::PnBinding(ffi::Ffi::Bind().Ctx<ffi::PlatformStream<cudaStream_t>>()));
XLA_FFI_DEFINE_HANDLER_SYMBOL(
    JaxNattenNnGemm, [](cudaStream_t stream, auto... args) { return jax_natten::NnHandler<Kernels>(DeviceLaunch{stream}, args...); },
    jax_natten::NnInBinding(ffi::Ffi::Bind().Ctx<ffi::PlatformStream<cudaStream_t>>()));
XLA_FFI_DEFINE_HANDLER_SYMBOL(
    JaxNattenInGemm, [](cudaStream_t stream, auto... args) { return jax_natten::InHandler<Kernels>(DeviceLaunch{stream}, args...); },
    jax_natten::NnInBinding(ffi::Ffi::Bind().Ctx<ffi::PlatformStream<cudaStream_t>>()));
