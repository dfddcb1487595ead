// Host-emulation FFI handler of the GEMM-based PN kernel (handlers.h); one operator a file so
// that the three heavy instantiation units build in parallel.
#include "handlers.h"
#include "jax_natten/gemm/launch.h"

using Kernels = jax_natten::GemmKernels<jax_natten::exec::HostLaunch>;

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxNattenPnGemmHost, jax_natten::emu::Pn<Kernels>, jax_natten::PnBinding(xla::ffi::Ffi::Bind()));
