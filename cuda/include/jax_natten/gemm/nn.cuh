// NN as a GEMM: per CTA (batch, head, tile of kTileM queries, kTileN columns of head_dim_v),
// out_tile = P * V_union with P[m, n] the weight of union key n in query m's window (0 outside
// it and in empty causal slots), contracted over the union in steps of kTileK keys. Config: the
// tile configuration (config.h).
#pragma once

#include <cstdint>
#include <string>

#include <cute/tensor.hpp>

#include "jax_natten/exec/context.h"
#if defined(__CUDACC__)
#include "jax_natten/exec/device_context.cuh"
#endif
#include "jax_natten/gemm/config.h"
#include "jax_natten/gemm/gather.cuh"
#include "jax_natten/gemm/mask.h"
#include "jax_natten/gemm/tile_scheduler.h"
#include "jax_natten/gemm/tile_gemm.cuh"
#include "jax_natten/numeric.h"
#include "jax_natten/params.h"

namespace jax_natten::gemm {

template <typename E, class Config>
struct NnShared {
  static constexpr int kTileM = Config::kTileM, kTileN = Config::kTileN, kTileK = Config::kTileK;
  using LayoutA = RowMajor<E, kTileM, kTileK>;  // P: queries x union keys
  using LayoutB = ColMajor<E, kTileN, kTileK>;  // V^T: head_dim_v x union keys, head_dim_v contiguous
  alignas(16) E a[kCosize<LayoutA>];
  alignas(16) E b[kCosize<LayoutB>];
  Row queries[kTileM];
  Row keys[kTileK];
};

// grid: (tiles * column blocks, min(batch * heads, 65535)); a CTA loops over (batch, head) pairs.
template <typename TW, typename T, class Config>
struct Nn {
  using E = typename Element<T>::type;
  using Shared = NnShared<E, Config>;
  static constexpr int kThreads = Config::kThreads;
  static constexpr int kTileM = Config::kTileM, kTileN = Config::kTileN, kTileK = Config::kTileK;
  static constexpr const char* kName = "na_nn_gemm";

  static std::string grid(const UnfusedParams& p, exec::Dim3* blocks) {
    return launch_grid<Config>(p, ceil_div(p.dim, kTileN), p.batch * p.heads, blocks);
  }

  template <class Ctx>
  JAX_NATTEN_CTA static void run(const Ctx& ctx, Shared& smem, UnfusedParams p, const TW* __restrict__ weights, const T* __restrict__ value, T* __restrict__ out) {
    const Grid& grid = p.grid;
    const int column_blocks = ceil_div(p.dim, kTileN);
    const Box tile = tile_box<Config>(grid, ctx.block_index().x / column_blocks);
    const int col0 = static_cast<int>(ctx.block_index().x % column_blocks) * kTileN;
    if (box_empty(grid, tile)) return;
    const Box keys = window_union(grid, tile);
    const int64_t union_size = box_size(grid, keys);

    auto sA = cute::make_tensor(cute::make_smem_ptr(smem.a), typename Shared::LayoutA{});
    auto sB = cute::make_tensor(cute::make_smem_ptr(smem.b), typename Shared::LayoutB{});
    // V rows land in sB as (union key, column): the transposed view, columns contiguous.
    auto sV = cute::make_tensor(sB.data(), cute::select<1, 0>(sB.layout()));
    typename TiledMmaFor<Ctx, E, Config>::type mma;
    const auto coords = accumulator_coords<Config>(ctx, mma);

    fill_rows<Config>(ctx, grid, tile, 0, kTileM, true, smem.queries);
    ctx.sync_threads();
    const int group = p.heads / p.heads_kv;
    for (int64_t bh = ctx.block_index().y; bh < p.batch * p.heads; bh += ctx.grid_size().y) {
      const int64_t b = bh / p.heads;
      const int h = static_cast<int>(bh % p.heads);
      const RowSource v_source{b * p.tokens, p.heads_kv, h / group, p.dim};
      const RowSource w_rows{b * p.tokens, p.heads, h, p.window};
      auto acc = make_accumulator<Config>(mma);
      for (int64_t n0 = 0; n0 < union_size; n0 += kTileK) {
        ctx.sync_threads();  // the previous step (or (batch, head)) is done with the smem
        fill_rows<Config>(ctx, grid, keys, n0, kTileK, false, smem.keys);
        ctx.sync_threads();
        gather_weights<Config, true, E>(ctx, sA, grid, weights, w_rows, smem.queries, smem.keys);
        gather_rows<Config, kTileK, kTileN>(ctx, sV, value, v_source, smem.keys, col0);
        ctx.sync_threads();
        tile_gemm(ctx, mma, sA, sB, acc);
      }
      const RowSource out_rows{b * p.tokens, p.heads, h, p.dim};
      CUTE_UNROLL
      for (int i = 0; i < cute::size(acc); ++i) {
        const int m = cute::get<0>(coords(i));
        const int n = col0 + cute::get<1>(coords(i));
        const int64_t token = smem.queries[m].token;
        if (token >= 0 && n < p.dim) out[out_rows.offset(token) + n] = from_float<T>(p.scale * acc(i));
      }
    }
  }
};

#if defined(__CUDACC__)
template <typename TW, typename T, class Config>
__global__ void __launch_bounds__(Config::kThreads) nn_kernel(UnfusedParams p, const TW* __restrict__ weights, const T* __restrict__ value, T* __restrict__ out) {
  __shared__ typename Nn<TW, T, Config>::Shared smem;
  Nn<TW, T, Config>::run(exec::DeviceContext{}, smem, p, weights, value, out);
}
#endif

}  // namespace jax_natten::gemm

#if defined(__CUDACC__)
namespace jax_natten {
template <typename TW, typename T, class Config>
struct exec::DeviceEntry<gemm::Nn<TW, T, Config>> {
  static constexpr auto kernel = gemm::nn_kernel<TW, T, Config>;
};
}  // namespace jax_natten
#endif
