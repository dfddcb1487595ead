// FFI handlers of the naive unfused operators PN, NN and IN (see params.h for what each computes).
// The buffer checks and attributes are unfused_ffi.h's; this file only launches.
#include <cuda_runtime.h>

#include "jax_natten/ffi_util.h"
#include "jax_natten/naive_kernels.cuh"
#include "jax_natten/params.h"
#include "jax_natten/unfused_ffi.h"
#include "xla/ffi/api/ffi.h"

namespace jax_natten {
namespace {

constexpr int kThreads = 256;

struct NaiveKernels {
  template <typename TW, typename T>
  static ffi::Error Pn(cudaStream_t stream, const UnfusedParams& p, const T* query, const T* key, const T* rpb,
                       TW* out) {
    naive::pn_kernel<TW, T><<<GridSize(p.batch * p.tokens * p.heads * p.window, kThreads), kThreads, 0, stream>>>(
        p, query, key, rpb, out);
    return LastCudaError("na_pn_naive");
  }

  template <typename TW, typename T>
  static ffi::Error Nn(cudaStream_t stream, const UnfusedParams& p, const TW* weights, const T* value, T* out) {
    naive::nn_kernel<TW, T><<<GridSize(p.batch * p.tokens * p.heads * p.dim, kThreads), kThreads, 0, stream>>>(
        p, weights, value, out);
    return LastCudaError("na_nn_naive");
  }

  template <typename TW, typename T>
  static ffi::Error In(cudaStream_t stream, const UnfusedParams& p, const TW* weights, const T* values, T* out) {
    naive::in_kernel<TW, T><<<GridSize(p.batch * p.tokens * p.heads_kv * p.dim, kThreads), kThreads, 0, stream>>>(
        p, weights, values, out);
    return LastCudaError("na_in_naive");
  }
};

}  // namespace
}  // namespace jax_natten

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxNattenPnNaive, jax_natten::PnHandler<jax_natten::NaiveKernels>,
                              jax_natten::PnBinding());
XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxNattenNnNaive, jax_natten::NnHandler<jax_natten::NaiveKernels>,
                              jax_natten::NnInBinding());
XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxNattenInNaive, jax_natten::InHandler<jax_natten::NaiveKernels>,
                              jax_natten::NnInBinding());
