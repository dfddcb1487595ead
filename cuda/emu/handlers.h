// Host-emulation FFI handlers of the unfused operators PN, NN and IN, for XLA's CPU platform: the
// CUDA kernels' own source (naive_kernels.cuh, gemm/) run by exec::HostLaunch (one file per
// implementation and operator defines the symbols: naive.cc, gemm_*.cc), behind the same
// bindings and buffer checks as the CUDA handlers (unfused_ffi.h). The output is poisoned with
// NaN before the kernel runs, so that an element no CTA writes shows in the results.
#pragma once

#include <cstring>

#include "jax_natten/exec/host_launch.h"
#include "jax_natten/unfused_ffi.h"
#include "xla/ffi/api/ffi.h"

namespace jax_natten::emu {

using exec::HostLaunch;

// 0xff bytes: NaN in float32, float16 and bfloat16. (An empty buffer's data may be null.)
inline ffi::Result<ffi::AnyBuffer> Poisoned(ffi::Result<ffi::AnyBuffer> out) {
  if (out->size_bytes() > 0) std::memset(out->untyped_data(), 0xff, out->size_bytes());
  return out;
}

template <class Kernels>
ffi::Error Pn(ffi::AnyBuffer query, ffi::AnyBuffer key, ffi::AnyBuffer rpb, jax_natten::Ints kernel_size,
              jax_natten::Ints stride, jax_natten::Ints dilation, jax_natten::Ints is_causal, float scale,
              float empty_value, ffi::Result<ffi::AnyBuffer> out) {
  return jax_natten::PnHandler<Kernels>(HostLaunch::from_environment(), query, key, rpb, kernel_size, stride, dilation,
                                        is_causal, scale, empty_value, Poisoned(out));
}

template <class Kernels>
ffi::Error Nn(ffi::AnyBuffer weights, ffi::AnyBuffer value, jax_natten::Ints kernel_size, jax_natten::Ints stride,
              jax_natten::Ints dilation, jax_natten::Ints is_causal, float scale, ffi::Result<ffi::AnyBuffer> out) {
  return jax_natten::NnHandler<Kernels>(HostLaunch::from_environment(), weights, value, kernel_size, stride, dilation,
                                        is_causal, scale, Poisoned(out));
}

template <class Kernels>
ffi::Error In(ffi::AnyBuffer weights, ffi::AnyBuffer values, jax_natten::Ints kernel_size, jax_natten::Ints stride,
              jax_natten::Ints dilation, jax_natten::Ints is_causal, float scale, ffi::Result<ffi::AnyBuffer> out) {
  return jax_natten::InHandler<Kernels>(HostLaunch::from_environment(), weights, values, kernel_size, stride, dilation,
                                        is_causal, scale, Poisoned(out));
}

}  // namespace jax_natten::emu
