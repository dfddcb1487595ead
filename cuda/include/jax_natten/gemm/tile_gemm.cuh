// The CTA-level GEMM that all three operators share: acc (kTileM x kTileN of the tile
// configuration, float32, in registers) += A (kTileM x kTileK) * B (kTileN x kTileK)^T, both
// operands in shared memory.
#pragma once

#include <cute/tensor.hpp>

#include <type_traits>

#include "jax_natten/exec/context.h"
#include "jax_natten/tf32.h"

namespace jax_natten::gemm {

// The accumulator fragment of this thread for the CTA tile, zeroed.
template <class Config, typename TiledMma>
JAX_NATTEN_HOST_DEVICE auto make_accumulator(const TiledMma& mma) {
  auto acc = cute::partition_fragment_C(mma, cute::Shape<cute::Int<Config::kTileM>, cute::Int<Config::kTileN>>{});
  cute::clear(acc);
  return acc;
}

// The (m, n) tile coordinates of each element of this thread's accumulator, for the epilogues.
template <class Config, class Ctx, typename TiledMma>
JAX_NATTEN_CTA auto accumulator_coords(const Ctx& ctx, const TiledMma& mma) {
  return mma.get_thread_slice(ctx.thread_index())
      .partition_C(cute::make_identity_tensor(cute::Shape<cute::Int<Config::kTileM>, cute::Int<Config::kTileN>>{}));
}

// sA: (kTileM, kTileK), sB: (kTileN, kTileK) smem tensors of any layout. Fragments are read one
// MMA k-block at a time with plain loads (the layouts in config.h keep them bank-conflict free).
// float32 operands take three TF32 MMAs on their split (tf32.h).
template <class Ctx, typename TiledMma, typename TensorA, typename TensorB, typename Acc>
JAX_NATTEN_CTA void tile_gemm(const Ctx& ctx, const TiledMma& mma, const TensorA& sA, const TensorB& sB, Acc& acc) {
  auto thread_mma = mma.get_thread_slice(ctx.thread_index());
  auto tCsA = thread_mma.partition_A(sA);  // (MMA, MMA_M, MMA_K)
  auto tCsB = thread_mma.partition_B(sB);  // (MMA, MMA_N, MMA_K)
  auto tCrA = cute::make_fragment_like(tCsA(cute::_, cute::_, 0));
  auto tCrB = cute::make_fragment_like(tCsB(cute::_, cute::_, 0));
  CUTE_UNROLL
  for (int k = 0; k < cute::size<2>(tCsA); ++k) {
    cute::copy(tCsA(cute::_, cute::_, k), tCrA);
    cute::copy(tCsB(cute::_, cute::_, k), tCrB);
    if constexpr (std::is_same_v<typename TensorA::value_type, float>) {
      auto a_big = cute::make_fragment_like<cute::tfloat32_t>(tCrA);
      auto a_small = cute::make_fragment_like<cute::tfloat32_t>(tCrA);
      auto b_big = cute::make_fragment_like<cute::tfloat32_t>(tCrB);
      auto b_small = cute::make_fragment_like<cute::tfloat32_t>(tCrB);
      split_tf32(tCrA, a_big, a_small);
      split_tf32(tCrB, b_big, b_small);
      cute::gemm(mma, acc, a_small, b_big, acc);
      cute::gemm(mma, acc, a_big, b_small, acc);
      cute::gemm(mma, acc, a_big, b_big, acc);
    } else {
      cute::gemm(mma, acc, tCrA, tCrB, acc);
    }
  }
}

}  // namespace jax_natten::gemm
