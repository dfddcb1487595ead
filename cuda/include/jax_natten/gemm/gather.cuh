// Staging of operands in shared memory: rows of a [batch, tokens, heads, dim] tensor gathered by
// token (the neighborhood gather fused into the smem load), and attention weights gathered by
// window slot (NN and IN), rounded to the MMA's element type.
#pragma once

#include <cstdint>

#include "jax_natten/exec/context.h"
#include "jax_natten/gemm/mask.h"
#include "jax_natten/gemm/tile_scheduler.h"
#include "jax_natten/numeric.h"

namespace jax_natten::gemm {

// Where a [batch, tokens, heads, dim] tensor's row of one token starts, for a fixed batch
// element and head.
struct RowSource {
  int64_t batch_tokens;  // b * tokens
  int heads;
  int head;
  int dim;

  JAX_NATTEN_HOST_DEVICE int64_t offset(int64_t token) const { return ((batch_tokens + token) * heads + head) * dim; }
};

// dst(r, c) = src[row rows[r].token][col0 + c] for r < kRows, c < kCols, zero where the row is not
// a token or col0 + c >= dim. dst's columns must be contiguous, 16-byte aligned in runs of
// 16 bytes; dim is a multiple of 8, so each 16-byte vector is wholly inside or outside [0, dim).
template <class Config, int kRows, int kCols, class Ctx, typename T, typename Dst>
JAX_NATTEN_CTA void gather_rows(const Ctx& ctx, const Dst& dst, const T* __restrict__ src, RowSource source,
                                const Row* rows, int col0) {
  constexpr int kVector = 16 / sizeof(T);
  constexpr int kVectorsPerRow = kCols / kVector;
  static_assert(kCols % kVector == 0, "rows are copied in 16-byte vectors");
  for (int i = ctx.thread_index(); i < kRows * kVectorsPerRow; i += Config::kThreads) {
    const int r = i / kVectorsPerRow;
    const int c = (i % kVectorsPerRow) * kVector;
    const int64_t token = rows[r].token;
    uint4 v = make_uint4(0, 0, 0, 0);
    if (token >= 0 && col0 + c < source.dim) {
      v = *reinterpret_cast<const uint4*>(src + source.offset(token) + col0 + c);
    }
    *reinterpret_cast<uint4*>(&dst(r, c)) = v;
  }
}

// Converts an attention weight to the MMA's element type E. Weights that arrive as float32 next
// to float16/bfloat16 tensors (softmax probabilities, score gradients) are rounded to E here, so
// that the MMA multiplies E x E into float32: a relative error of at most 2^-11 (float16) or
// 2^-8 (bfloat16) per weight, within the 2e-3 and 1e-2 tolerances of SPEC.md.
template <typename E, typename TW>
JAX_NATTEN_HOST_DEVICE E to_element(TW w) {
  return E(to_float(w));
}

// The weights operand of NN and IN: sA(m, k) = weights[query row, slot of the key in the query's
// window], 0 where the key lies outside it (or a row is not a token). NN has the queries along M
// (m_rows) and the union keys along K (k_rows); IN the other way round. The index order keeps a
// warp reading runs of consecutive slots of one query's weights: k fastest for NN; for IN, m
// fastest, which also writes consecutive smem addresses of its key-contiguous layout.
template <class Config, bool kQueriesAlongM, typename E, class Ctx, typename TW, typename Tensor>
JAX_NATTEN_CTA void gather_weights(const Ctx& ctx, const Tensor& sA, const Grid& grid, const TW* __restrict__ weights,
                                   RowSource w_rows, const Row* m_rows, const Row* k_rows) {
  constexpr int kTileM = Config::kTileM, kTileK = Config::kTileK;
  for (int i = ctx.thread_index(); i < kTileM * kTileK; i += Config::kThreads) {
    const int m = kQueriesAlongM ? i / kTileK : i % kTileM;
    const int k = kQueriesAlongM ? i % kTileK : i / kTileM;
    const Row& q = kQueriesAlongM ? m_rows[m] : k_rows[k];
    const Row& key_row = kQueriesAlongM ? k_rows[k] : m_rows[m];
    int slot;
    E w = E(0.f);
    if (q.token >= 0 && key_row.token >= 0 && window_slot(grid, q, key_row.coord, slot)) {
      w = to_element<E>(weights[w_rows.offset(q.token) + slot]);
    }
    sA(m, k) = w;
  }
}


}  // namespace jax_natten::gemm
