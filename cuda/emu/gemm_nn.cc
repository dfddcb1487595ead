// Host-emulation FFI handler of the GEMM-based NN kernel (handlers.h); one operator a file so
// that the three heavy instantiation units build in parallel.
#include "handlers.h"
#include "jax_natten/gemm/launch.h"

using Kernels = jax_natten::GemmKernels<jax_natten::exec::HostLaunch>;

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxNattenNnGemmHost, jax_natten::emu::Nn<Kernels>, jax_natten::NnInBinding(xla::ffi::Ffi::Bind()));
