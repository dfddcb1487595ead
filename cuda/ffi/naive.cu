// CUDA FFI handlers of the naive unfused operators PN, NN and IN (see params.h for what each
// computes). The buffer checks and attributes are unfused_ffi.h's, the launches naive_launch.h's.
#include <cuda_runtime.h>

#include "jax_natten/exec/device_launch.cuh"
#include "jax_natten/naive_launch.h"
#include "jax_natten/unfused_ffi.h"
#include "xla/ffi/api/ffi.h"

namespace {
using Kernels = jax_natten::NaiveKernels<jax_natten::exec::DeviceLaunch>;
using jax_natten::exec::DeviceLaunch;
namespace ffi = xla::ffi;
}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(
    JaxNattenPnNaive, [](cudaStream_t stream, auto... args) { return jax_natten::PnHandler<Kernels>(DeviceLaunch{stream}, args...); },
    jax_natten::PnBinding(ffi::Ffi::Bind().Ctx<ffi::PlatformStream<cudaStream_t>>()));
XLA_FFI_DEFINE_HANDLER_SYMBOL(
    JaxNattenNnNaive, [](cudaStream_t stream, auto... args) { return jax_natten::NnHandler<Kernels>(DeviceLaunch{stream}, args...); },
    jax_natten::NnInBinding(ffi::Ffi::Bind().Ctx<ffi::PlatformStream<cudaStream_t>>()));
XLA_FFI_DEFINE_HANDLER_SYMBOL(
    JaxNattenInNaive, [](cudaStream_t stream, auto... args) { return jax_natten::InHandler<Kernels>(DeviceLaunch{stream}, args...); },
    jax_natten::NnInBinding(ffi::Ffi::Bind().Ctx<ffi::PlatformStream<cudaStream_t>>()));
