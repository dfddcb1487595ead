// NN as a GEMM: per CTA (batch, head, tile of 64 queries, 64 columns of head_dim_v),
// out_tile = P * V_union with P[m, n] the weight of union key n in query m's window (0 outside
// it and in empty causal slots), contracted over the union in steps of 32 keys.
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
struct NnShared {
  using LayoutA = RowMajor<E, kTileM, kTileK>;  // P: queries x union keys
  using LayoutB = ColMajor<E, kTileN, kTileK>;  // V^T: head_dim_v x union keys, head_dim_v contiguous
  alignas(16) E a[kCosize<LayoutA>];
  alignas(16) E b[kCosize<LayoutB>];
  Row queries[kTileM];
  Row keys[kTileK];
};

// grid: (tiles * column blocks, min(batch * heads, 65535)); a CTA loops over (batch, head) pairs.
template <typename TW, typename T>
__global__ void __launch_bounds__(kThreads) nn_kernel(UnfusedParams p, const TW* __restrict__ weights,
                                                      const T* __restrict__ value, T* __restrict__ out) {
  using E = typename Element<T>::type;
  using Shared = NnShared<E>;
  __shared__ Shared smem;
  const Grid& grid = p.grid;
  const int column_blocks = ceil_div(p.dim, kTileN);
  const Box tile = tile_box(grid, blockIdx.x / column_blocks);
  const int col0 = static_cast<int>(blockIdx.x % column_blocks) * kTileN;
  if (box_empty(grid, tile)) return;
  const Box keys = window_union(grid, tile);
  const int64_t union_size = box_size(grid, keys);

  auto sA = cute::make_tensor(cute::make_smem_ptr(smem.a), typename Shared::LayoutA{});
  auto sB = cute::make_tensor(cute::make_smem_ptr(smem.b), typename Shared::LayoutB{});
  // V rows land in sB as (union key, column): the transposed view, columns contiguous.
  auto sV = cute::make_tensor(sB.data(), cute::select<1, 0>(sB.layout()));
  typename TiledMmaFor<E>::type mma;
  const auto coords = accumulator_coords(mma);

  fill_rows(grid, tile, 0, kTileM, true, smem.queries);
  __syncthreads();
  const int group = p.heads / p.heads_kv;
  for (int64_t bh = blockIdx.y; bh < p.batch * p.heads; bh += gridDim.y) {
    const int64_t b = bh / p.heads;
    const int h = static_cast<int>(bh % p.heads);
    const RowSource v_source{b * p.tokens, p.heads_kv, h / group, p.dim};
    const RowSource w_rows{b * p.tokens, p.heads, h, p.window};
    auto acc = make_accumulator(mma);
    for (int64_t n0 = 0; n0 < union_size; n0 += kTileK) {
      __syncthreads();  // the previous step (or (batch, head)) is done with the smem
      fill_rows(grid, keys, n0, kTileK, false, smem.keys);
      __syncthreads();
      // P, k fastest: a warp reads runs of consecutive slots of one query's weights.
      for (int i = threadIdx.x; i < kTileM * kTileK; i += kThreads) {
        const int m = i / kTileK;
        const int k = i % kTileK;
        const Row& q = smem.queries[m];
        const Row& key_row = smem.keys[k];
        int slot;
        E w = E(0.f);
        if (q.token >= 0 && key_row.token >= 0 && window_slot(grid, q, key_row.coord, slot)) {
          w = to_element<E>(weights[w_rows.offset(q.token) + slot]);
        }
        sA(m, k) = w;
      }
      gather_rows<kTileK, kTileN>(sV, value, v_source, smem.keys, col0);
      __syncthreads();
      tile_gemm(mma, sA, sB, acc);
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

}  // namespace jax_natten::gemm
