// Host-emulation FFI handlers of the naive kernels (handlers.h).
#include "handlers.h"
#include "jax_natten/naive_launch.h"

namespace emu = jax_natten::emu;
using Kernels = jax_natten::NaiveKernels<jax_natten::exec::HostLaunch>;

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxNattenPnNaiveHost, emu::Pn<Kernels>, jax_natten::PnBinding(xla::ffi::Ffi::Bind()));
XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxNattenNnNaiveHost, emu::Nn<Kernels>, jax_natten::NnInBinding(xla::ffi::Ffi::Bind()));
XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxNattenInNaiveHost, emu::In<Kernels>, jax_natten::NnInBinding(xla::ffi::Ffi::Bind()));
