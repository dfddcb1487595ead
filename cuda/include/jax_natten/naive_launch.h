// The launches of the naive kernels (naive_kernels.cuh) for unfused_ffi.h, on any Launch (the
// GPU's exec::DeviceLaunch or the host emulation's exec::HostLaunch): one thread per output
// element, a grid-stride loop over a bounded grid.
#pragma once

#include "jax_natten/ffi_util.h"
#include "jax_natten/naive_kernels.cuh"
#include "jax_natten/params.h"
#include "xla/ffi/api/ffi.h"

namespace jax_natten {

template <class Launch>
struct NaiveKernels {
  static exec::Dim3 Blocks(int64_t elements) { return {GridSize(elements, naive::kThreads), 1, 1}; }

  template <typename TW, typename T>
  static ffi::Error Pn(const Launch& launch, const UnfusedParams& p, const T* query, const T* key, const T* rpb,
                       TW* out) {
    return launch.template run<naive::Pn<TW, T>>(Blocks(p.batch * p.tokens * p.heads * p.window), "na_pn_naive", p,
                                                 query, key, rpb, out);
  }

  template <typename TW, typename T>
  static ffi::Error Nn(const Launch& launch, const UnfusedParams& p, const TW* weights, const T* value, T* out) {
    return launch.template run<naive::Nn<TW, T>>(Blocks(p.batch * p.tokens * p.heads * p.dim), "na_nn_naive", p,
                                                 weights, value, out);
  }

  template <typename TW, typename T>
  static ffi::Error In(const Launch& launch, const UnfusedParams& p, const TW* weights, const T* values, T* out) {
    return launch.template run<naive::In<TW, T>>(Blocks(p.batch * p.tokens * p.heads_kv * p.dim), "na_in_naive", p,
                                                 weights, values, out);
  }
};

}  // namespace jax_natten
