// The nanobind module jax_natten._cuda: a dict of the FFI handlers, which Python registers with
// XLA under the "jax_natten_" prefix, the CUDA architectures the kernels were compiled for, and
// which kernel instantiations were built.
#include <nanobind/nanobind.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <type_traits>
#include <string>
#include <vector>

#include "xla/ffi/api/api.h"

namespace nb = nanobind;

XLA_FFI_DECLARE_HANDLER_SYMBOL(JaxNattenWindowBounds);
XLA_FFI_DECLARE_HANDLER_SYMBOL(JaxNattenPnNaive);
XLA_FFI_DECLARE_HANDLER_SYMBOL(JaxNattenNnNaive);
XLA_FFI_DECLARE_HANDLER_SYMBOL(JaxNattenInNaive);
XLA_FFI_DECLARE_HANDLER_SYMBOL(JaxNattenPnGemm);
XLA_FFI_DECLARE_HANDLER_SYMBOL(JaxNattenNnGemm);
XLA_FFI_DECLARE_HANDLER_SYMBOL(JaxNattenInGemm);
XLA_FFI_DECLARE_HANDLER_SYMBOL(JaxNattenFusedForward);
XLA_FFI_DECLARE_HANDLER_SYMBOL(JaxNattenFusedBackward);
std::vector<int> JaxNattenFusedHeadDimClasses();  // cuda/ffi/fused.cu
int JaxNattenFusedQTileRows();
std::vector<int> JaxNattenFusedKvTileRows(int element_bytes);
std::vector<std::string> JaxNattenUnfusedInstances();  // cuda/ffi/unfused.cu

namespace {

template <typename Fn>
nb::capsule Capsule(Fn* fn) {
  static_assert(std::is_invocable_r_v<XLA_FFI_Error*, Fn, XLA_FFI_CallFrame*>,
                "an FFI handler must have the XLA_FFI_Handler signature");
  return nb::capsule(reinterpret_cast<void*>(fn));
}

}  // namespace

NB_MODULE(_cuda, m) {
  m.def("registrations", []() {
    nb::dict targets;
    targets["window_bounds"] = Capsule(JaxNattenWindowBounds);
    targets["na_pn_naive"] = Capsule(JaxNattenPnNaive);
    targets["na_nn_naive"] = Capsule(JaxNattenNnNaive);
    targets["na_in_naive"] = Capsule(JaxNattenInNaive);
    targets["na_pn_gemm"] = Capsule(JaxNattenPnGemm);
    targets["na_nn_gemm"] = Capsule(JaxNattenNnGemm);
    targets["na_in_gemm"] = Capsule(JaxNattenInGemm);
    targets["na_fused_forward"] = Capsule(JaxNattenFusedForward);
    targets["na_fused_backward"] = Capsule(JaxNattenFusedBackward);
    return targets;
  });
  // CMake's CUDA_ARCHITECTURES entries, comma-separated: "80-real,90a-real,80-virtual".
  m.def("cuda_archs", []() { return JAX_NATTEN_CUDA_ARCHS; });
  m.def("fused_head_dim_classes", &JaxNattenFusedHeadDimClasses);
  m.def("fused_q_tile_rows", &JaxNattenFusedQTileRows);
  m.def("fused_kv_tile_rows", &JaxNattenFusedKvTileRows, nb::arg("element_bytes"));  // per head-dim class
  m.def("unfused_instances", &JaxNattenUnfusedInstances);
}
