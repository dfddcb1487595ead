// Host-emulation FFI handlers of the unfused operators PN, NN and IN, for XLA's CPU platform: the
// CUDA kernels' own source (naive_kernels.cuh, gemm/) run by exec::HostLaunch from the generated
// instantiation units, behind the same bindings, buffer checks and dispatch as the CUDA handlers
// (unfused_ffi.h). The output is poisoned with NaN before the kernel runs, so that an element no
// CTA writes shows in the results.
#include <cstring>

#include "jax_natten/exec/host_launch.h"
#include "jax_natten/unfused_ffi.h"
#include "jax_natten/unfused_instances.h"  // generated: the built instantiations
#include "xla/ffi/api/ffi.h"

namespace {

using jax_natten::Ints;
using jax_natten::exec::HostLaunch;
namespace ffi = xla::ffi;

// 0xff bytes: NaN in float32, float16 and bfloat16.
ffi::Result<ffi::AnyBuffer> Poisoned(ffi::Result<ffi::AnyBuffer> out) {
  std::memset(out->untyped_data(), 0xff, out->size_bytes());
  return out;
}

template <class Impl>
ffi::Error Pn(ffi::AnyBuffer query, ffi::AnyBuffer key, ffi::AnyBuffer rpb, Ints kernel_size, Ints stride,
              Ints dilation, Ints is_causal, float scale, float empty_value, ffi::Result<ffi::AnyBuffer> out) {
  return jax_natten::PnHandler<Impl>(HostLaunch::from_environment(), query, key, rpb, kernel_size, stride, dilation,
                                     is_causal, scale, empty_value, Poisoned(out));
}

template <class Impl>
ffi::Error Nn(ffi::AnyBuffer weights, ffi::AnyBuffer value, Ints kernel_size, Ints stride, Ints dilation,
              Ints is_causal, float scale, ffi::Result<ffi::AnyBuffer> out) {
  return jax_natten::NnHandler<Impl>(HostLaunch::from_environment(), weights, value, kernel_size, stride, dilation,
                                     is_causal, scale, Poisoned(out));
}

template <class Impl>
ffi::Error In(ffi::AnyBuffer weights, ffi::AnyBuffer values, Ints kernel_size, Ints stride, Ints dilation,
              Ints is_causal, float scale, ffi::Result<ffi::AnyBuffer> out) {
  return jax_natten::InHandler<Impl>(HostLaunch::from_environment(), weights, values, kernel_size, stride, dilation,
                                     is_causal, scale, Poisoned(out));
}

}  // namespace

using jax_natten::Gemm;
using jax_natten::Naive;
XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxNattenPnNaiveHost, Pn<Naive>, jax_natten::PnBinding(ffi::Ffi::Bind()));
XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxNattenNnNaiveHost, Nn<Naive>, jax_natten::NnInBinding(ffi::Ffi::Bind()));
XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxNattenInNaiveHost, In<Naive>, jax_natten::NnInBinding(ffi::Ffi::Bind()));
XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxNattenPnGemmHost, Pn<Gemm>, jax_natten::PnBinding(ffi::Ffi::Bind()));
XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxNattenNnGemmHost, Nn<Gemm>, jax_natten::NnInBinding(ffi::Ffi::Bind()));
XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxNattenInGemmHost, In<Gemm>, jax_natten::NnInBinding(ffi::Ffi::Bind()));
