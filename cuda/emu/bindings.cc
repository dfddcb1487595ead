// The nanobind module jax_natten._emulation: a dict of the host-emulation FFI handlers, which
// Python registers with XLA for the CPU platform under the CUDA handlers' names, and the fused
// forward's built head-dim classes and tile shape and the built unfused instantiations (as
// jax_natten._cuda reports its own).
#include <nanobind/nanobind.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <string>
#include <vector>

#include "xla/ffi/api/api.h"

namespace nb = nanobind;

XLA_FFI_DECLARE_HANDLER_SYMBOL(JaxNattenPnNaiveHost);
XLA_FFI_DECLARE_HANDLER_SYMBOL(JaxNattenNnNaiveHost);
XLA_FFI_DECLARE_HANDLER_SYMBOL(JaxNattenInNaiveHost);
XLA_FFI_DECLARE_HANDLER_SYMBOL(JaxNattenPnGemmHost);
XLA_FFI_DECLARE_HANDLER_SYMBOL(JaxNattenNnGemmHost);
XLA_FFI_DECLARE_HANDLER_SYMBOL(JaxNattenInGemmHost);
XLA_FFI_DECLARE_HANDLER_SYMBOL(JaxNattenFusedForwardHost);
XLA_FFI_DECLARE_HANDLER_SYMBOL(JaxNattenFusedBackwardHost);
std::vector<int> JaxNattenFusedHeadDimClassesHost();  // cuda/emu/fused.cc
int JaxNattenFusedQTileRowsHost();
std::vector<int> JaxNattenFusedKvTileRowsHost(int element_bytes);
std::vector<std::string> JaxNattenUnfusedInstancesHost();  // cuda/emu/unfused.cc

NB_MODULE(_emulation, m) {
  m.def("registrations", []() {
    nb::dict targets;
    targets["na_pn_naive"] = nb::capsule(reinterpret_cast<void*>(JaxNattenPnNaiveHost));
    targets["na_nn_naive"] = nb::capsule(reinterpret_cast<void*>(JaxNattenNnNaiveHost));
    targets["na_in_naive"] = nb::capsule(reinterpret_cast<void*>(JaxNattenInNaiveHost));
    targets["na_pn_gemm"] = nb::capsule(reinterpret_cast<void*>(JaxNattenPnGemmHost));
    targets["na_nn_gemm"] = nb::capsule(reinterpret_cast<void*>(JaxNattenNnGemmHost));
    targets["na_in_gemm"] = nb::capsule(reinterpret_cast<void*>(JaxNattenInGemmHost));
    targets["na_fused_forward"] = nb::capsule(reinterpret_cast<void*>(JaxNattenFusedForwardHost));
    targets["na_fused_backward"] = nb::capsule(reinterpret_cast<void*>(JaxNattenFusedBackwardHost));
    return targets;
  });
  m.def("fused_head_dim_classes", &JaxNattenFusedHeadDimClassesHost);
  m.def("fused_q_tile_rows", &JaxNattenFusedQTileRowsHost);
  m.def("fused_kv_tile_rows", &JaxNattenFusedKvTileRowsHost, nb::arg("element_bytes"));  // per head-dim class
  m.def("unfused_instances", &JaxNattenUnfusedInstancesHost);
}
