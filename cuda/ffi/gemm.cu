// FFI handlers of the GEMM-based unfused operators PN, NN and IN (the kernels are in
// jax_natten/gemm/). The buffer checks and attributes are unfused_ffi.h's, shared with the
// naive kernels; this file only launches.
#include <cuda_runtime.h>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <string>

#include "jax_natten/ffi_util.h"
#include "jax_natten/gemm/config.h"
#include "jax_natten/gemm/in.cuh"
#include "jax_natten/gemm/nn.cuh"
#include "jax_natten/gemm/pn.cuh"
#include "jax_natten/gemm/tile.h"
#include "jax_natten/params.h"
#include "jax_natten/unfused_ffi.h"
#include "xla/ffi/api/ffi.h"

namespace jax_natten {
namespace {

// The grid of a launch: x over (tile, column block), y over (batch, head) pairs, which the kernels
// loop over past the grid's y limit. Also checks what the kernels need of the arguments: rows are
// staged in shared memory as 16-byte vectors, hence head_dim % 8 == 0.
ffi::Error LaunchGrid(const UnfusedParams& p, int64_t column_blocks, int64_t batch_heads, const char* what,
                      dim3* blocks) {
  if (p.dim % 8 != 0) {
    return ffi::Error::InvalidArgument(std::string(what) + ": head_dim must be a multiple of 8, got " +
                                       std::to_string(p.dim));
  }
  const int64_t x = gemm::count_tiles(p.grid) * column_blocks;
  if (x > INT_MAX) return ffi::Error::InvalidArgument(std::string(what) + ": too many tiles for one launch");
  *blocks = dim3(static_cast<unsigned int>(x), static_cast<unsigned int>(std::min<int64_t>(batch_heads, 65535)));
  return ffi::Error::Success();
}

// An empty output (no batch, head or column) launches nothing.
bool Empty(dim3 blocks) { return blocks.x == 0 || blocks.y == 0; }

struct GemmKernels {
  template <typename TW, typename T>
  static ffi::Error Pn(cudaStream_t stream, const UnfusedParams& p, const T* query, const T* key, const T* rpb,
                       TW* out) {
    dim3 blocks;
    if (ffi::Error e = LaunchGrid(p, 1, p.batch * p.heads, "na_pn_gemm", &blocks); e.failure()) return e;
    if (Empty(blocks)) return ffi::Error::Success();
    gemm::pn_kernel<TW, T><<<blocks, gemm::kThreads, 0, stream>>>(p, query, key, rpb, out);
    return LastCudaError("na_pn_gemm");
  }

  template <typename TW, typename T>
  static ffi::Error Nn(cudaStream_t stream, const UnfusedParams& p, const TW* weights, const T* value, T* out) {
    dim3 blocks;
    if (ffi::Error e = LaunchGrid(p, gemm::ceil_div(p.dim, gemm::kTileN), p.batch * p.heads, "na_nn_gemm", &blocks);
        e.failure()) {
      return e;
    }
    if (Empty(blocks)) return ffi::Error::Success();
    gemm::nn_kernel<TW, T><<<blocks, gemm::kThreads, 0, stream>>>(p, weights, value, out);
    return LastCudaError("na_nn_gemm");
  }

  template <typename TW, typename T>
  static ffi::Error In(cudaStream_t stream, const UnfusedParams& p, const TW* weights, const T* values, T* out) {
    dim3 blocks;
    if (ffi::Error e = LaunchGrid(p, gemm::ceil_div(p.dim, gemm::kTileN), p.batch * p.heads_kv, "na_in_gemm", &blocks);
        e.failure()) {
      return e;
    }
    if (Empty(blocks)) return ffi::Error::Success();
    gemm::in_kernel<TW, T><<<blocks, gemm::kThreads, 0, stream>>>(p, weights, values, out);
    return LastCudaError("na_in_gemm");
  }
};

}  // namespace
}  // namespace jax_natten

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxNattenPnGemm, jax_natten::PnHandler<jax_natten::GemmKernels>,
                              jax_natten::PnBinding());
XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxNattenNnGemm, jax_natten::NnHandler<jax_natten::GemmKernels>,
                              jax_natten::NnInBinding());
XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxNattenInGemm, jax_natten::InHandler<jax_natten::GemmKernels>,
                              jax_natten::NnInBinding());
