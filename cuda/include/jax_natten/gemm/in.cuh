// IN as a GEMM: per CTA (batch, kv head, tile of 64 keys, 64 columns of head_dim),
// out_tile = sum over the query heads h of the kv head's group of W_h * A_union,h with
// W_h[m, n] = weights[query n, h, slot of key m in n's window] (0 when key m is outside it),
// contracted over the union of the keys' inverse windows in steps of 32 queries.
#pragma once

#include <cstdint>

#include <cute/tensor.hpp>

#include "jax_natten/gemm/config.h"
#include "jax_natten/gemm/gather.cuh"
#include "jax_natten/gemm/tile.h"
#include "jax_natten/gemm/tile_gemm.cuh"
#include "jax_natten/numeric.h"
#include "jax_natten/params.h"

namespace jax_natten::gemm {

template <typename E>
struct InShared {
  using LayoutA = ColMajor<E, kTileM, kTileK>;  // W: keys x union queries, keys contiguous
  using LayoutB = ColMajor<E, kTileN, kTileK>;  // A^T: head_dim x union queries, head_dim contiguous
  alignas(16) E a[kCosize<LayoutA>];
  alignas(16) E b[kCosize<LayoutB>];
  Row keys[kTileM];
  Row queries[kTileK];
};

// grid: (tiles * column blocks, min(batch * heads_kv, 65535)); a CTA loops over (batch, kv head).
template <typename TW, typename T>
__global__ void __launch_bounds__(kThreads) in_kernel(UnfusedParams p, const TW* __restrict__ weights,
                                                      const T* __restrict__ values, T* __restrict__ out) {
  using E = typename Element<T>::type;
  using Shared = InShared<E>;
  __shared__ Shared smem;
  const Grid& grid = p.grid;
  const int column_blocks = ceil_div(p.dim, kTileN);
  const Box tile = tile_box(grid, blockIdx.x / column_blocks);
  const int col0 = static_cast<int>(blockIdx.x % column_blocks) * kTileN;
  if (box_empty(grid, tile)) return;
  // May be empty (size 0) where no query attends to the tile's keys: the output is then 0.
  const Box queries = inverse_window_union(grid, tile);
  const int64_t union_size = box_size(grid, queries);

  auto sA = cute::make_tensor(cute::make_smem_ptr(smem.a), typename Shared::LayoutA{});
  auto sB = cute::make_tensor(cute::make_smem_ptr(smem.b), typename Shared::LayoutB{});
  // Rows of A land in sB as (union query, column): the transposed view, columns contiguous.
  auto sX = cute::make_tensor(sB.data(), cute::select<1, 0>(sB.layout()));
  typename TiledMmaFor<E>::type mma;
  const auto coords = accumulator_coords(mma);

  fill_rows(grid, tile, 0, kTileM, false, smem.keys);
  __syncthreads();
  const int group = p.heads / p.heads_kv;
  for (int64_t bh = blockIdx.y; bh < p.batch * p.heads_kv; bh += gridDim.y) {
    const int64_t b = bh / p.heads_kv;
    const int hk = static_cast<int>(bh % p.heads_kv);
    auto acc = make_accumulator(mma);
    for (int64_t n0 = 0; n0 < union_size; n0 += kTileK) {
      __syncthreads();  // the previous step (or (batch, head)) is done with the smem
      fill_rows(grid, queries, n0, kTileK, true, smem.queries);
      for (int h = hk * group; h < (hk + 1) * group; ++h) {
        const RowSource x_source{b * p.tokens, p.heads, h, p.dim};
        const RowSource w_rows{b * p.tokens, p.heads, h, p.window};
        __syncthreads();  // query rows filled; the previous head is done with the smem
        // W, m fastest: a warp reads runs of consecutive slots of one query's weights, and
        // writes consecutive smem addresses of the key-contiguous layout.
        for (int i = threadIdx.x; i < kTileM * kTileK; i += kThreads) {
          const int m = i % kTileM;
          const int k = i / kTileM;
          const Row& key_row = smem.keys[m];
          const Row& q = smem.queries[k];
          int slot;
          E w = E(0.f);
          if (q.token >= 0 && key_row.token >= 0 && window_slot(grid, q, key_row.coord, slot)) {
            w = to_element<E>(weights[w_rows.offset(q.token) + slot]);
          }
          sA(m, k) = w;
        }
        gather_rows<kTileK, kTileN>(sX, values, x_source, smem.queries, col0);
        __syncthreads();
        tile_gemm(mma, sA, sB, acc);
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

}  // namespace jax_natten::gemm
