// The CTA-level GEMM that all three operators share: acc (kTileM x kTileN, float32, in
// registers) += A (kTileM x kTileK) * B (kTileN x kTileK)^T, both operands in shared memory.
#pragma once

#include <cute/tensor.hpp>

#include "jax_natten/gemm/config.h"

namespace jax_natten::gemm {

// The accumulator fragment of this thread for the CTA tile, zeroed.
template <typename TiledMma>
__device__ __forceinline__ auto make_accumulator(const TiledMma& mma) {
  auto acc = cute::partition_fragment_C(mma, cute::Shape<cute::Int<kTileM>, cute::Int<kTileN>>{});
  cute::clear(acc);
  return acc;
}

// The (m, n) tile coordinates of each element of this thread's accumulator, for the epilogues.
template <typename TiledMma>
__device__ __forceinline__ auto accumulator_coords(const TiledMma& mma) {
  return mma.get_thread_slice(threadIdx.x)
      .partition_C(cute::make_identity_tensor(cute::Shape<cute::Int<kTileM>, cute::Int<kTileN>>{}));
}

// sA: (kTileM, kTileK), sB: (kTileN, kTileK) smem tensors of any layout. Fragments are read one
// MMA k-block at a time with plain loads (the layouts in config.h keep them bank-conflict free).
template <typename TiledMma, typename TensorA, typename TensorB, typename Acc>
__device__ __forceinline__ void tile_gemm(const TiledMma& mma, const TensorA& sA, const TensorB& sB, Acc& acc) {
  auto thread_mma = mma.get_thread_slice(threadIdx.x);
  auto tCsA = thread_mma.partition_A(sA);  // (MMA, MMA_M, MMA_K)
  auto tCsB = thread_mma.partition_B(sB);  // (MMA, MMA_N, MMA_K)
  auto tCrA = cute::make_fragment_like(tCsA(cute::_, cute::_, 0));
  auto tCrB = cute::make_fragment_like(tCsB(cute::_, cute::_, 0));
  CUTE_UNROLL
  for (int k = 0; k < cute::size<2>(tCsA); ++k) {
    cute::copy(tCsA(cute::_, cute::_, k), tCrA);
    cute::copy(tCsB(cute::_, cute::_, k), tCrB);
    cute::gemm(mma, acc, tCrA, tCrB, acc);
  }
}

}  // namespace jax_natten::gemm
