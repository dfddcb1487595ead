// PN as a GEMM: per CTA (batch, head, tile of kTileM queries), S = Q_tile * K_union^T in chunks
// of kTileN union keys, each chunk scattered into the [query, window slot] output. Config: the
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
struct PnShared {
  static constexpr int kTileM = Config::kTileM, kTileN = Config::kTileN, kTileK = Config::kTileK;
  using LayoutA = RowMajor<E, kTileM, kTileK>;      // queries x head_dim
  using LayoutB = RowMajor<E, kTileN, kTileK>;      // union keys x head_dim
  using LayoutS = RowMajor<float, kTileM, kTileN>;  // scores of one chunk
  alignas(16) E a[kCosize<LayoutA>];
  alignas(16) E b[kCosize<LayoutB>];
  float s[kCosize<LayoutS>];
  Row queries[kTileM];
  Row keys[kTileN];
};

// grid: (tiles, min(batch * heads, 65535)); a CTA loops over (batch, head) pairs.
template <typename TW, typename T, class Config>
struct Pn {
  using E = typename Element<T>::type;
  using Shared = PnShared<E, Config>;
  static constexpr int kThreads = Config::kThreads;
  static constexpr int kTileM = Config::kTileM, kTileN = Config::kTileN, kTileK = Config::kTileK;
  static constexpr const char* kName = "na_pn_gemm";

  static std::string grid(const UnfusedParams& p, exec::Dim3* blocks) {
    return launch_grid<Config>(p, 1, p.batch * p.heads, blocks);
  }

  template <class Ctx>
  JAX_NATTEN_CTA static void run(const Ctx& ctx, Shared& smem, UnfusedParams p, const T* __restrict__ query, const T* __restrict__ key, const T* __restrict__ rpb, TW* __restrict__ out) {
    const Grid& grid = p.grid;
    const Box tile = tile_box<Config>(grid, ctx.block_index().x);
    if (box_empty(grid, tile)) return;
    const Box keys = window_union(grid, tile);
    const int64_t union_size = box_size(grid, keys);
    bool causal = false;
    #pragma unroll
    for (int a = 0; a < kMaxRank; ++a) causal = causal || (a < grid.rank && grid.axis[a].is_causal);

    auto sA = cute::make_tensor(cute::make_smem_ptr(smem.a), typename Shared::LayoutA{});
    auto sB = cute::make_tensor(cute::make_smem_ptr(smem.b), typename Shared::LayoutB{});
    auto sS = cute::make_tensor(cute::make_smem_ptr(smem.s), typename Shared::LayoutS{});
    typename TiledMmaFor<Ctx, E, Config>::type mma;
    const auto coords = accumulator_coords<Config>(ctx, mma);

    fill_rows<Config>(ctx, grid, tile, 0, kTileM, true, smem.queries);
    const int group = p.heads / p.heads_kv;
    for (int64_t bh = ctx.block_index().y; bh < p.batch * p.heads; bh += ctx.grid_size().y) {
      const int64_t b = bh / p.heads;
      const int h = static_cast<int>(bh % p.heads);
      const RowSource q_source{b * p.tokens, p.heads, h, p.dim};
      const RowSource k_source{b * p.tokens, p.heads_kv, h / group, p.dim};
      const RowSource out_rows{b * p.tokens, p.heads, h, p.window};
      const T* table = p.rpb_batch > 0 ? rpb + ((b / (p.batch / p.rpb_batch)) * p.heads + h) * p.rpb_window : nullptr;
      ctx.sync_threads();  // query rows filled; the previous (batch, head) is done with the smem

      // Empty causal slots match no key, so the scatter below never writes them.
      if (causal) {
        for (int64_t i = ctx.thread_index(); i < int64_t(kTileM) * p.window; i += kThreads) {
          const Row& q = smem.queries[i / p.window];
          if (q.token < 0) continue;
          const int slot = static_cast<int>(i % p.window);
          if (slot_empty(grid, q, slot)) out[out_rows.offset(q.token) + slot] = from_float<TW>(p.empty_value);
        }
      }

      for (int64_t n0 = 0; n0 < union_size; n0 += kTileN) {
        fill_rows<Config>(ctx, grid, keys, n0, kTileN, false, smem.keys);
        ctx.sync_threads();
        auto acc = make_accumulator<Config>(mma);
        for (int d0 = 0; d0 < p.dim; d0 += kTileK) {
          gather_rows<Config, kTileM, kTileK>(ctx, sA, query, q_source, smem.queries, d0);
          gather_rows<Config, kTileN, kTileK>(ctx, sB, key, k_source, smem.keys, d0);
          ctx.sync_threads();
          tile_gemm(ctx, mma, sA, sB, acc);
          ctx.sync_threads();
        }
        CUTE_UNROLL
        for (int i = 0; i < cute::size(acc); ++i) sS(cute::get<0>(coords(i)), cute::get<1>(coords(i))) = acc(i);
        ctx.sync_threads();

        // Scatter: n fastest, so that a warp writes runs of consecutive slots of one query.
        for (int i = ctx.thread_index(); i < kTileM * kTileN; i += kThreads) {
          const int m = i / kTileN;
          const int n = i % kTileN;
          const Row& q = smem.queries[m];
          const Row& k = smem.keys[n];
          int slot;
          if (q.token < 0 || k.token < 0 || !window_slot(grid, q, k.coord, slot)) continue;
          float score = p.scale * sS(m, n);
          if (table != nullptr) score += to_float(table[bias_entry(grid, q, k.coord)]);
          out[out_rows.offset(q.token) + slot] = from_float<TW>(score);
        }
        ctx.sync_threads();  // the next chunk overwrites the key rows and scores
      }
    }
  }
};

#if defined(__CUDACC__)
template <typename TW, typename T, class Config>
__global__ void __launch_bounds__(Config::kThreads) pn_kernel(UnfusedParams p, const T* __restrict__ query, const T* __restrict__ key, const T* __restrict__ rpb, TW* __restrict__ out) {
  __shared__ typename Pn<TW, T, Config>::Shared smem;
  Pn<TW, T, Config>::run(exec::DeviceContext{}, smem, p, query, key, rpb, out);
}
#endif

}  // namespace jax_natten::gemm

#if defined(__CUDACC__)
namespace jax_natten {
template <typename TW, typename T, class Config>
struct exec::DeviceEntry<gemm::Pn<TW, T, Config>> {
  static constexpr auto kernel = gemm::pn_kernel<TW, T, Config>;
};
}  // namespace jax_natten
#endif
