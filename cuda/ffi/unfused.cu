// CUDA FFI handlers of the unfused operators PN, NN and IN, naive (naive_kernels.cuh) and
// GEMM-based (gemm/). The buffer checks, attributes and the dispatch to a kernel instantiation
// are unfused_ffi.h's; the instantiations are compiled in generated units (CMakeLists.txt).
#include <cuda_runtime.h>

#include <string>
#include <vector>

#include "jax_natten/exec/device_launch.cuh"
#include "jax_natten/unfused_ffi.h"
#include "jax_natten/unfused_instances.h"  // generated: the built instantiations
#include "xla/ffi/api/ffi.h"

namespace {
using jax_natten::Gemm;
using jax_natten::Naive;
using jax_natten::exec::DeviceLaunch;
namespace ffi = xla::ffi;

auto CudaBind() { return ffi::Ffi::Bind().Ctx<ffi::PlatformStream<cudaStream_t>>(); }
}  // namespace

// The built instantiations' names (<implementation>_<operator>_<dtype name>, CMakeLists.txt).
std::vector<std::string> JaxNattenUnfusedInstances() { return {JAX_NATTEN_UNFUSED_INSTANCES}; }

XLA_FFI_DEFINE_HANDLER_SYMBOL(
    JaxNattenPnNaive, [](cudaStream_t stream, auto... args) { return jax_natten::PnHandler<Naive>(DeviceLaunch{stream}, args...); },
    jax_natten::PnBinding(CudaBind()));
XLA_FFI_DEFINE_HANDLER_SYMBOL(
    JaxNattenNnNaive, [](cudaStream_t stream, auto... args) { return jax_natten::NnHandler<Naive>(DeviceLaunch{stream}, args...); },
    jax_natten::NnInBinding(CudaBind()));
XLA_FFI_DEFINE_HANDLER_SYMBOL(
    JaxNattenInNaive, [](cudaStream_t stream, auto... args) { return jax_natten::InHandler<Naive>(DeviceLaunch{stream}, args...); },
    jax_natten::NnInBinding(CudaBind()));
XLA_FFI_DEFINE_HANDLER_SYMBOL(
    JaxNattenPnGemm, [](cudaStream_t stream, auto... args) { return jax_natten::PnHandler<Gemm>(DeviceLaunch{stream}, args...); },
    jax_natten::PnBinding(CudaBind()));
XLA_FFI_DEFINE_HANDLER_SYMBOL(
    JaxNattenNnGemm, [](cudaStream_t stream, auto... args) { return jax_natten::NnHandler<Gemm>(DeviceLaunch{stream}, args...); },
    jax_natten::NnInBinding(CudaBind()));
XLA_FFI_DEFINE_HANDLER_SYMBOL(
    JaxNattenInGemm, [](cudaStream_t stream, auto... args) { return jax_natten::InHandler<Gemm>(DeviceLaunch{stream}, args...); },
    jax_natten::NnInBinding(CudaBind()));
