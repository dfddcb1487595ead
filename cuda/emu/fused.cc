// The host-emulation FFI handlers of the fused forward and backward: fused_ffi.h's handler (the CUDA handler's
// checks and dispatch, cuda/ffi/fused.cu) over exec::HostLaunch, its instantiations in the
// generated units (fused/host_launch.h); this unit compiles no kernel code. Both outputs are
// poisoned with NaN before the kernel runs, so that an element no CTA writes shows in the results.
// (Not handlers.h: its unfused_ffi.h declares namespace jax_natten::gemm, which hides the
// kernel's ADL call of cute::gemm.)
#include <vector>

#include "jax_natten/exec/host_launch.h"
#include "jax_natten/fused_ffi.h"
#include "poisoned.h"
#include "xla/ffi/api/ffi.h"

namespace {

namespace ffi = xla::ffi;
using jax_natten::fused::Ints;

ffi::Error FusedForward(ffi::AnyBuffer query, ffi::AnyBuffer key, ffi::AnyBuffer value, ffi::AnyBuffer rpb,
                        Ints kernel_size, Ints stride, Ints dilation, Ints is_causal, Ints q_tile, Ints kv_tile,
                        float scale, ffi::Result<ffi::AnyBuffer> out, ffi::Result<ffi::AnyBuffer> lse) {
  namespace emu = jax_natten::emu;
  return jax_natten::fused::ForwardHandler(jax_natten::exec::HostLaunch::from_environment(), query, key, value, rpb, kernel_size,
                                           stride, dilation, is_causal, q_tile, kv_tile, scale, emu::Poisoned(out),
                                           emu::Poisoned(lse));
}

// d_key and d_value poisoned as the forward's outputs, and d_query in deterministic mode (written
// once per element); otherwise d_query is zeroed by the launch (added to).
ffi::Error FusedBackward(ffi::AnyBuffer query, ffi::AnyBuffer key, ffi::AnyBuffer value, ffi::AnyBuffer rpb,
                         ffi::AnyBuffer d_out, ffi::AnyBuffer lse, ffi::AnyBuffer delta, Ints kernel_size, Ints stride,
                         Ints dilation, Ints is_causal, Ints q_tile, Ints kv_tile, float scale, bool deterministic,
                         ffi::Result<ffi::AnyBuffer> d_query, ffi::Result<ffi::AnyBuffer> d_key,
                         ffi::Result<ffi::AnyBuffer> d_value) {
  namespace emu = jax_natten::emu;
  return jax_natten::fused::BackwardHandler(jax_natten::exec::HostLaunch::from_environment(), query, key, value, rpb,
                                            d_out, lse, delta, kernel_size, stride, dilation, is_causal, q_tile,
                                            kv_tile, scale, deterministic, deterministic ? emu::Poisoned(d_query) : d_query,
                                            emu::Poisoned(d_key), emu::Poisoned(d_value));
}

}  // namespace

// The emulation's built head-dim classes and tile shape, for Python (bindings.cc).
std::vector<int> JaxNattenFusedHeadDimClassesHost() { return jax_natten::fused::built_head_dim_classes(); }
int JaxNattenFusedQTileRowsHost() { return jax_natten::fused::kQTileRows; }
std::vector<int> JaxNattenFusedKvTileRowsHost(int element_bytes) { return jax_natten::fused::built_kv_tile_rows(element_bytes); }

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxNattenFusedForwardHost, FusedForward,
                              jax_natten::fused::ForwardBinding(xla::ffi::Ffi::Bind()));
XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxNattenFusedBackwardHost, FusedBackward,
                              jax_natten::fused::BackwardBinding(xla::ffi::Ffi::Bind()));
