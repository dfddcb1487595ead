// IN as a GEMM: per CTA (batch, kv head, tile of kTileM keys, kTileN columns of head_dim),
// out_tile = sum over the query heads h of the kv head's group of W_h * A_union,h with
// W_h[m, n] = weights[query n, h, slot of key m in n's window] (0 when key m is outside it),
// contracted over the union of the keys' inverse windows in steps of kTileK queries. Config: the
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
struct InShared {
  static constexpr int kTileM = Config::kTileM, kTileN = Config::kTileN, kTileK = Config::kTileK;
  using LayoutA = ColMajor<E, kTileM, kTileK>;  // W: keys x union queries, keys contiguous
  using LayoutB = ColMajor<E, kTileN, kTileK>;  // A^T: head_dim x union queries, head_dim contiguous
  alignas(16) E a[kCosize<LayoutA>];
  alignas(16) E b[kCosize<LayoutB>];
  Row keys[kTileM];
  Row queries[kTileK];
};

// grid: (tiles * column blocks, min(batch * heads_kv, 65535)); a CTA loops over (batch, kv head).
template <typename TW, typename T, class Config>
struct In {
  using E = typename Element<T>::type;
  using Shared = InShared<E, Config>;
  static constexpr int kThreads = Config::kThreads;
  static constexpr int kTileM = Config::kTileM, kTileN = Config::kTileN, kTileK = Config::kTileK;
  static constexpr const char* kName = "na_in_gemm";

  static std::string grid(const UnfusedParams& p, exec::Dim3* blocks) {
    return launch_grid<Config>(p, ceil_div(p.dim, kTileN), p.batch * p.heads_kv, blocks);
  }

  template <class Ctx>
  JAX_NATTEN_CTA static void run(const Ctx& ctx, Shared& smem, UnfusedParams p, const TW* __restrict__ weights, const T* __restrict__ values, T* __restrict__ out) {
    const Grid& grid = p.grid;
    const int column_blocks = ceil_div(p.dim, kTileN);
    const Box tile = tile_box<Config>(grid, ctx.block_index().x / column_blocks);
    const int col0 = static_cast<int>(ctx.block_index().x % column_blocks) * kTileN;
    if (box_empty(grid, tile)) return;
    // May be empty (size 0) where no query attends to the tile's keys: the output is then 0.
    const Box queries = inverse_window_union(grid, tile);
    const int64_t union_size = box_size(grid, queries);

    auto sA = cute::make_tensor(cute::make_smem_ptr(smem.a), typename Shared::LayoutA{});
    auto sB = cute::make_tensor(cute::make_smem_ptr(smem.b), typename Shared::LayoutB{});
    // Rows of A land in sB as (union query, column): the transposed view, columns contiguous.
    auto sX = cute::make_tensor(sB.data(), cute::select<1, 0>(sB.layout()));
    typename TiledMmaFor<Ctx, E, Config>::type mma;
    const auto coords = accumulator_coords<Config>(ctx, mma);

    fill_rows<Config>(ctx, grid, tile, 0, kTileM, false, smem.keys);
    ctx.sync_threads();
    const int group = p.heads / p.heads_kv;
    for (int64_t bh = ctx.block_index().y; bh < p.batch * p.heads_kv; bh += ctx.grid_size().y) {
      const int64_t b = bh / p.heads_kv;
      const int hk = static_cast<int>(bh % p.heads_kv);
      auto acc = make_accumulator<Config>(mma);
      for (int64_t n0 = 0; n0 < union_size; n0 += kTileK) {
        ctx.sync_threads();  // the previous step (or (batch, head)) is done with the smem
        fill_rows<Config>(ctx, grid, queries, n0, kTileK, true, smem.queries);
        for (int h = hk * group; h < (hk + 1) * group; ++h) {
          const RowSource x_source{b * p.tokens, p.heads, h, p.dim};
          const RowSource w_rows{b * p.tokens, p.heads, h, p.window};
          ctx.sync_threads();  // query rows filled; the previous head is done with the smem
          gather_weights<Config, false, E>(ctx, sA, grid, weights, w_rows, smem.keys, smem.queries);
          gather_rows<Config, kTileK, kTileN>(ctx, sX, values, x_source, smem.queries, col0);
          ctx.sync_threads();
          tile_gemm(ctx, mma, sA, sB, acc);
        }
      }
      const RowSource out_rows{b * p.tokens, p.heads_kv, hk, p.dim};
      CUTE_UNROLL
      for (int i = 0; i < cute::size(acc); ++i) {
        const int m = cute::get<0>(coords(i));
        const int n = col0 + cute::get<1>(coords(i));
        const int64_t token = smem.keys[m].token;
        if (token >= 0 && n < p.dim) out[out_rows.offset(token) + n] = from_float<T>(p.scale * acc(i));
      }
    }
  }
};

#if defined(__CUDACC__)
template <typename TW, typename T, class Config>
__global__ void __launch_bounds__(Config::kThreads) in_kernel(UnfusedParams p, const TW* __restrict__ weights, const T* __restrict__ values, T* __restrict__ out) {
  __shared__ typename In<TW, T, Config>::Shared smem;
  In<TW, T, Config>::run(exec::DeviceContext{}, smem, p, weights, values, out);
}
#endif

}  // namespace jax_natten::gemm

#if defined(__CUDACC__)
namespace jax_natten {
template <typename TW, typename T, class Config>
struct exec::DeviceEntry<gemm::In<TW, T, Config>> {
  static constexpr auto kernel = gemm::in_kernel<TW, T, Config>;
};
}  // namespace jax_natten
#endif
