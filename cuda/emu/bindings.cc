// The nanobind module jax_natten._emulation: a dict of the host-emulation FFI handlers, which
// Python registers with XLA for the CPU platform under the CUDA handlers' names.
#include <nanobind/nanobind.h>

#include "xla/ffi/api/api.h"

namespace nb = nanobind;

XLA_FFI_DECLARE_HANDLER_SYMBOL(JaxNattenPnNaiveHost);
XLA_FFI_DECLARE_HANDLER_SYMBOL(JaxNattenNnNaiveHost);
XLA_FFI_DECLARE_HANDLER_SYMBOL(JaxNattenInNaiveHost);
XLA_FFI_DECLARE_HANDLER_SYMBOL(JaxNattenPnGemmHost);
XLA_FFI_DECLARE_HANDLER_SYMBOL(JaxNattenNnGemmHost);
XLA_FFI_DECLARE_HANDLER_SYMBOL(JaxNattenInGemmHost);

NB_MODULE(_emulation, m) {
  m.def("registrations", []() {
    nb::dict targets;
    targets["na_pn_naive"] = nb::capsule(reinterpret_cast<void*>(JaxNattenPnNaiveHost));
    targets["na_nn_naive"] = nb::capsule(reinterpret_cast<void*>(JaxNattenNnNaiveHost));
    targets["na_in_naive"] = nb::capsule(reinterpret_cast<void*>(JaxNattenInNaiveHost));
    targets["na_pn_gemm"] = nb::capsule(reinterpret_cast<void*>(JaxNattenPnGemmHost));
    targets["na_nn_gemm"] = nb::capsule(reinterpret_cast<void*>(JaxNattenNnGemmHost));
    targets["na_in_gemm"] = nb::capsule(reinterpret_cast<void*>(JaxNattenInGemmHost));
    return targets;
  });
}
