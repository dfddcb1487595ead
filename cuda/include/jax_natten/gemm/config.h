// Shapes, element types, MMA atoms and shared-memory layouts of the GEMM-based unfused kernels.
//
// Every CTA multiplies 64 x 64 tiles with a contraction step of 32:
//   PN: M = 64 queries,  N = 64 union keys per chunk,        K = 32 of head_dim per step;
//   NN: M = 64 queries,  N = 64 of head_dim_v per CTA,       K = 32 union keys per step;
//   IN: M = 64 keys,     N = 64 of head_dim per CTA,         K = 32 union queries per step.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cute/atom/mma_traits_sm80.hpp>
#include <cute/tensor.hpp>

namespace jax_natten::gemm {

constexpr int kThreads = 128;  // 4 warps
constexpr int kTileM = 64;
constexpr int kTileN = 64;
constexpr int kTileK = 32;

// The CuTe element type staged in shared memory for the storage dtype T (same bits).
template <typename T>
struct Element {
  using type = T;
};
template <>
struct Element<__half> {
  using type = cute::half_t;
};
template <>
struct Element<__nv_bfloat16> {
  using type = cute::bfloat16_t;
};

// The CTA's TiledMMA for operands of element type E, accumulating in float32, on a 2 x 2 warp
// grid of SM80 tensor-core atoms (valid on sm_80 and sm_90). float32 operands use the TF32 atom
// three times per product, on a split of each operand into a TF32 value and its TF32 remainder
// (tile_gemm.cuh): float32 accuracy on tensor cores, not TF32's. The execution context Ctx names
// the atom (exec/context.h): the instruction on the GPU, its emulation on the host.
template <typename E>
struct MmaOpFor;
template <>
struct MmaOpFor<float> {
  using type = cute::SM80_16x8x8_F32TF32TF32F32_TN;
};
template <>
struct MmaOpFor<cute::half_t> {
  using type = cute::SM80_16x8x16_F32F16F16F32_TN;
};
template <>
struct MmaOpFor<cute::bfloat16_t> {
  using type = cute::SM80_16x8x16_F32BF16BF16F32_TN;
};
template <typename Ctx, typename E>
struct TiledMmaFor {
  using type = decltype(cute::make_tiled_mma(cute::MMA_Atom<typename Ctx::template mma_op<typename MmaOpFor<E>::type>>{},
                                             cute::Layout<cute::Shape<cute::_2, cute::_2, cute::_1>>{}));
};

// Rows of shared-memory tiles are padded by 16 bytes: rows stay 16-byte aligned for the vector
// stores of the gather loads, and the MMA's fragment reads of 8 consecutive rows fall in
// distinct banks.
template <typename E>
constexpr int kPad = 16 / sizeof(E);

// A (rows, cols) tile whose cols are contiguous ("K-major" when cols is the contraction).
template <typename E, int kRows, int kCols>
using RowMajor = cute::Layout<cute::Shape<cute::Int<kRows>, cute::Int<kCols>>,
                              cute::Stride<cute::Int<kCols + kPad<E>>, cute::_1>>;
// A (rows, cols) tile whose rows are contiguous ("M/N-major" when cols is the contraction).
template <typename E, int kRows, int kCols>
using ColMajor = cute::Layout<cute::Shape<cute::Int<kRows>, cute::Int<kCols>>,
                              cute::Stride<cute::_1, cute::Int<kRows + kPad<E>>>>;

template <typename Layout>
constexpr int kCosize = decltype(cute::cosize(Layout{}))::value;

}  // namespace jax_natten::gemm
