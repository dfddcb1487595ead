// Host-emulation FFI handlers of the unfused operators PN, NN and IN, for XLA's CPU platform: the
// CUDA kernels' own source (naive_kernels.cuh, gemm/) run by exec::HostLaunch, behind the same
// bindings, buffer checks and dispatch as the CUDA handlers (unfused_ffi.h); Impl is
// jax_natten::Naive or jax_natten::Gemm. unfused.cc defines the symbols over the generated
// instantiation units; the fuzz harness (tests/cpp/ffi_fuzz_test.cc) calls these directly. The
// output is poisoned with NaN before the kernel runs, so that an element no CTA writes shows in
// the results.
#pragma once

#include "jax_natten/exec/host_launch.h"
#include "jax_natten/unfused_ffi.h"
#include "poisoned.h"
#include "xla/ffi/api/ffi.h"

namespace jax_natten::emu {

using exec::HostLaunch;

template <class Impl>
ffi::Error Pn(ffi::AnyBuffer query, ffi::AnyBuffer key, ffi::AnyBuffer rpb, Ints kernel_size, Ints stride,
              Ints dilation, Ints is_causal, float scale, float empty_value, ffi::Result<ffi::AnyBuffer> out) {
  return PnHandler<Impl>(HostLaunch::from_environment(), query, key, rpb, kernel_size, stride, dilation, is_causal,
                         scale, empty_value, Poisoned(out));
}

template <class Impl>
ffi::Error Nn(ffi::AnyBuffer weights, ffi::AnyBuffer value, Ints kernel_size, Ints stride, Ints dilation,
              Ints is_causal, float scale, ffi::Result<ffi::AnyBuffer> out) {
  return NnHandler<Impl>(HostLaunch::from_environment(), weights, value, kernel_size, stride, dilation, is_causal,
                         scale, Poisoned(out));
}

template <class Impl>
ffi::Error In(ffi::AnyBuffer weights, ffi::AnyBuffer values, Ints kernel_size, Ints stride, Ints dilation,
              Ints is_causal, float scale, ffi::Result<ffi::AnyBuffer> out) {
  return InHandler<Impl>(HostLaunch::from_environment(), weights, values, kernel_size, stride, dilation, is_causal,
                         scale, Poisoned(out));
}

}  // namespace jax_natten::emu
