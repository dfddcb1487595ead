// Online softmax over the KV tiles of one Q tile, in registers. Scores are kept in the log2
// domain (scale * log2(e) folded in) so that exp2 does the exponentials; a row's running maximum
// and sum are reduced across the threads that share the row with warp xor-shuffles.
#pragma once

#include <cute/tensor.hpp>

#include <cmath>

#include "jax_natten/exec/context.h"

namespace jax_natten::fused {

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

// (values, MMA_M, MMA_N) accumulator layout -> ((rows), (columns)) view: the SM80 16x8 C
// fragment's values are (column pair, row + 8); a scalar atom has one value.
template <class Layout>
CUTE_HOST_DEVICE constexpr auto rowcol(Layout l) {
  using namespace cute;
  if constexpr (rank<0>(Layout{}) == 2) {
    return make_layout(make_layout(get<0, 1>(l), get<1>(l)), make_layout(get<0, 0>(l), get<2>(l)));
  } else {
    return make_layout(make_layout(get<0>(l), get<1>(l)), make_layout(get<2>(l)));
  }
}

// The S accumulator (BQ x BK, C values (2,2) = (column + 1, row + 8), MMA_M, MMA_N = BK / 8)
// read as the A operand of P V, no data moved, for an SM80 atom of K kAtomK:
// - m16n8k16 (values (2,2,2) = (row + 8, k + 1, k + 8), MMA_M, MMA_K = BK / 16): A's k pairs are
//   C's column pairs and A's third value mode (k + 8) is the next 8-column block of C;
// - m16n8k8 TF32 (values (2,2) = (row + 8, k + 4), MMA_M, MMA_K = BK / 8): the two value modes
//   swap, so that A's column t + 4 j of a k-block is C's column 2 t + j: P V must read the
//   block's keys in that order (mainloop.h: Sm80Atom<float>::KeyOrder).
// A scalar atom needs no change.
template <int kAtomK, class Layout>
CUTE_HOST_DEVICE constexpr auto accumulator_as_a(Layout l) {
  using namespace cute;
  if constexpr (rank<0>(Layout{}) != 2) {
    return l;
  } else if constexpr (kAtomK == 16) {
    auto d = logical_divide(l, Shape<Underscore, Underscore, _2>{});  // ((2,2), M, (2, N/2))
    return make_layout(make_layout(get<0, 0>(d), get<0, 1>(d), get<2, 0>(d)), get<1>(d), get<2, 1>(d));
  } else {
    static_assert(kAtomK == 8, "the SM80 atoms have K 16 or 8");
    return make_layout(make_layout(get<0, 1>(l), get<0, 0>(l)), get<1>(l), get<2>(l));
  }
}

template <int kRowThreads, class Ctx>
JAX_NATTEN_CTA float row_max(const Ctx& ctx, float x) {
  CUTE_UNROLL
  for (int m = 1; m < kRowThreads; m *= 2) x = fmaxf(x, ctx.shfl_xor(x, m));
  return x;
}

template <int kRowThreads, class Ctx>
JAX_NATTEN_CTA float row_sum(const Ctx& ctx, float x) {
  CUTE_UNROLL
  for (int m = 1; m < kRowThreads; m *= 2) x += ctx.shfl_xor(x, m);
  return x;
}

// Running maximum (log2 domain) and sum of exponentials of this thread's kRows rows.
template <int kRows, int kRowThreads>
struct OnlineSoftmax {
  float max[kRows];
  float sum[kRows];

  CUTE_HOST_DEVICE OnlineSoftmax() {
    CUTE_UNROLL
    for (int r = 0; r < kRows; ++r) {
      max[r] = -INFINITY;
      sum[r] = 0.f;
    }
  }

  // scores: ((rows), (columns)) log2-domain scores of one KV tile (-inf where masked), replaced
  // by their exponentials; out: ((rows), (columns)) output accumulator, rescaled.
  template <class Ctx, class Scores, class Out>
  JAX_NATTEN_CTA void update(const Ctx& ctx, Scores& scores, Out& out) {
    CUTE_UNROLL
    for (int r = 0; r < kRows; ++r) {
      float tile_max = -INFINITY;
      CUTE_UNROLL
      for (int c = 0; c < cute::size<1>(scores); ++c) tile_max = fmaxf(tile_max, scores(r, c));
      const float new_max = fmaxf(max[r], row_max<kRowThreads>(ctx, tile_max));
      // A row with nothing in its window so far keeps exp2 finite: every term is exp2(-inf) = 0.
      const float base = new_max == -INFINITY ? 0.f : new_max;
      const float rescale = exp2f(max[r] - base);
      float tile_sum = 0.f;
      CUTE_UNROLL
      for (int c = 0; c < cute::size<1>(scores); ++c) {
        scores(r, c) = exp2f(scores(r, c) - base);
        tile_sum += scores(r, c);
      }
      sum[r] = sum[r] * rescale + row_sum<kRowThreads>(ctx, tile_sum);
      max[r] = new_max;
      CUTE_UNROLL
      for (int c = 0; c < cute::size<1>(out); ++c) out(r, c) *= rescale;
    }
  }

  // Natural-log log-sum-exp of row r (-inf for a row that attended nothing).
  CUTE_HOST_DEVICE float lse(int r) const { return sum[r] > 0.f ? (max[r] + log2f(sum[r])) * kLn2 : -INFINITY; }
  CUTE_HOST_DEVICE float inverse_sum(int r) const { return sum[r] > 0.f ? 1.f / sum[r] : 0.f; }
};

}  // namespace jax_natten::fused
