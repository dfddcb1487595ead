// Host-emulation FFI handler of the GEMM-based IN kernel (handlers.h); one operator a file so
// that the three heavy instantiation units build in parallel.
#include "handlers.h"
#include "jax_natten/gemm/launch.h"

using Kernels = jax_natten::GemmKernels<jax_natten::exec::HostLaunch>;

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxNattenInGemmHost, jax_natten::emu::In<Kernels>, jax_natten::NnInBinding(xla::ffi::Ffi::Bind()));
