// The launches of the GEMM-based kernels (gemm/pn.cuh, nn.cuh, in.cuh) for unfused_ffi.h, on
// any Launch (the GPU's exec::DeviceLaunch or the host emulation's exec::HostLaunch).
#pragma once

#include <algorithm>
#include <climits>
#include <cstdint>
#include <string>

#include "jax_natten/ffi_util.h"
#include "jax_natten/gemm/config.h"
#include "jax_natten/gemm/in.cuh"
#include "jax_natten/gemm/nn.cuh"
#include "jax_natten/gemm/pn.cuh"
#include "jax_natten/gemm/tile_scheduler.h"
#include "jax_natten/params.h"
#include "xla/ffi/api/ffi.h"

namespace jax_natten {

template <class Launch>
struct GemmKernels {
  // The grid of a launch: x over (tile, column block), y over (batch, head) pairs, which the
  // kernels loop over past the grid's y limit. Also checks what the kernels need of the
  // arguments: rows are staged in shared memory as 16-byte vectors, hence head_dim % 8 == 0.
  static ffi::Error Blocks(const UnfusedParams& p, int64_t column_blocks, int64_t batch_heads, const char* what,
                           exec::Dim3* blocks) {
    if (p.dim % 8 != 0) {
      return ffi::Error::InvalidArgument(std::string(what) + ": head_dim must be a multiple of 8, got " +
                                         std::to_string(p.dim));
    }
    const int64_t x = gemm::count_tiles(p.grid) * column_blocks;
    if (x > INT_MAX) return ffi::Error::InvalidArgument(std::string(what) + ": too many tiles for one launch");
    *blocks = {static_cast<unsigned int>(x), static_cast<unsigned int>(std::min<int64_t>(batch_heads, 65535)), 1};
    return ffi::Error::Success();
  }

  // Runs kernel K over the grid; an empty output (no batch, head or column) launches nothing.
  template <class K, class... Args>
  static ffi::Error Run(const Launch& launch, const UnfusedParams& p, int64_t column_blocks, int64_t batch_heads,
                        const char* what, Args... args) {
    exec::Dim3 blocks;
    if (ffi::Error e = Blocks(p, column_blocks, batch_heads, what, &blocks); e.failure()) return e;
    if (blocks.x == 0 || blocks.y == 0) return ffi::Error::Success();
    return launch.template run<K>(blocks, what, p, args...);
  }

  template <typename TW, typename T>
  static ffi::Error Pn(const Launch& launch, const UnfusedParams& p, const T* query, const T* key, const T* rpb,
                       TW* out) {
    return Run<gemm::Pn<TW, T>>(launch, p, 1, p.batch * p.heads, "na_pn_gemm", query, key, rpb, out);
  }

  template <typename TW, typename T>
  static ffi::Error Nn(const Launch& launch, const UnfusedParams& p, const TW* weights, const T* value, T* out) {
    return Run<gemm::Nn<TW, T>>(launch, p, gemm::ceil_div(p.dim, gemm::kTileN), p.batch * p.heads, "na_nn_gemm",
                                weights, value, out);
  }

  template <typename TW, typename T>
  static ffi::Error In(const Launch& launch, const UnfusedParams& p, const TW* weights, const T* values, T* out) {
    return Run<gemm::In<TW, T>>(launch, p, gemm::ceil_div(p.dim, gemm::kTileN), p.batch * p.heads_kv, "na_in_gemm",
                                weights, values, out);
  }
};

}  // namespace jax_natten
