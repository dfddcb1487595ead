// The host-emulation FFI handler symbols of PN, NN and IN (handlers.h) over the generated
// instantiation units: this unit compiles no kernel code.
#include <string>
#include <vector>

#include "handlers.h"
#include "jax_natten/unfused_instances.h"  // generated: the built instantiations

namespace emu = jax_natten::emu;
using jax_natten::Gemm;
using jax_natten::Naive;
using xla::ffi::Ffi;

// The built instantiations' names (<implementation>_<operator>_<dtype name>, CMakeLists.txt).
std::vector<std::string> JaxNattenUnfusedInstancesHost() { return {JAX_NATTEN_UNFUSED_INSTANCES}; }

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxNattenPnNaiveHost, emu::Pn<Naive>, jax_natten::PnBinding(Ffi::Bind()));
XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxNattenNnNaiveHost, emu::Nn<Naive>, jax_natten::NnInBinding(Ffi::Bind()));
XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxNattenInNaiveHost, emu::In<Naive>, jax_natten::NnInBinding(Ffi::Bind()));
XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxNattenPnGemmHost, emu::Pn<Gemm>, jax_natten::PnBinding(Ffi::Bind()));
XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxNattenNnGemmHost, emu::Nn<Gemm>, jax_natten::NnInBinding(Ffi::Bind()));
XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxNattenInGemmHost, emu::In<Gemm>, jax_natten::NnInBinding(Ffi::Bind()));
