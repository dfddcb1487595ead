// CUDA FFI handlers of the fused forward and backward (jax_natten/fused/). The buffer checks, attributes and
// the dispatch to an instantiation are fused_ffi.h's; the instantiations are compiled in
// generated units (CMakeLists.txt). Allocates nothing and never synchronizes with the host.
#include <cuda_runtime.h>

#include <vector>

#include "jax_natten/exec/device_launch.cuh"
#include "jax_natten/fused_ffi.h"
#include "xla/ffi/api/ffi.h"

// The built head-dim classes and tile shape, for Python (bindings.cc): Q tile rows, and KV tile
// rows per class for inputs of `element_bytes` bytes.
std::vector<int> JaxNattenFusedHeadDimClasses() { return jax_natten::fused::built_head_dim_classes(); }
int JaxNattenFusedQTileRows() { return jax_natten::fused::kQTileRows; }
std::vector<int> JaxNattenFusedKvTileRows(int element_bytes) { return jax_natten::fused::built_kv_tile_rows(element_bytes); }

XLA_FFI_DEFINE_HANDLER_SYMBOL(
    JaxNattenFusedForward,
    [](cudaStream_t stream, auto... args) {
      return jax_natten::fused::ForwardHandler(jax_natten::exec::DeviceLaunch{stream}, args...);
    },
    jax_natten::fused::ForwardBinding(xla::ffi::Ffi::Bind().Ctx<xla::ffi::PlatformStream<cudaStream_t>>()));

XLA_FFI_DEFINE_HANDLER_SYMBOL(
    JaxNattenFusedBackward,
    [](cudaStream_t stream, auto... args) {
      return jax_natten::fused::BackwardHandler(jax_natten::exec::DeviceLaunch{stream}, args...);
    },
    jax_natten::fused::BackwardBinding(xla::ffi::Ffi::Bind().Ctx<xla::ffi::PlatformStream<cudaStream_t>>()));
