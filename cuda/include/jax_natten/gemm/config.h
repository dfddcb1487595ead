// The tile configuration of the GEMM-based unfused kernels (their variant axis), and the element
// types, MMA atoms and shared-memory layouts that follow from it.
//
// Every CTA multiplies kTileM x kTileN tiles with a contraction step of kTileK:
//   PN: M = queries,  N = union keys per chunk,   K = head_dim per step;
//   NN: M = queries,  N = head_dim_v per CTA,     K = union keys per step;
//   IN: M = keys,     N = head_dim per CTA,       K = union queries per step.
// The kernels (pn.cuh, nn.cuh, in.cuh) take the configuration as a template argument; which ones
// are built is CMakeLists.txt's list of instantiations (UNFUSED_IMPLEMENTATIONS).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cute/atom/mma_traits_sm80.hpp>
#include <cute/tensor.hpp>

#include "jax_natten/neighborhood.h"
#if !defined(__CUDACC__)
#include "jax_natten/exec/host_mma.h"  // HostContext's mma_op, which Config's tiled MMA names in the emulation
#endif

namespace jax_natten::gemm {

// The largest e with e^k <= n.
constexpr int integer_root(int n, int k) {
  int e = 1;
  for (;;) {
    int power = 1;
    for (int i = 0; i < k; ++i) power *= e + 1;
    if (power > n) return e;
    ++e;
  }
}

// kTileM x kTileN output tiles, contraction steps of kTileK, kWarpsM x kWarpsN warps over the
// tile. A CTA's tile is a box of tokens of one dilation group per axis (tile_scheduler.h): a
// segment of kTileM tokens in 1-D, a square in 2-D, a cube in 3-D, so kTileM is a square and a
// cube.
template <int kTileM_, int kTileN_, int kTileK_, int kWarpsM_, int kWarpsN_>
struct TileConfig {
  static constexpr int kTileM = kTileM_;
  static constexpr int kTileN = kTileN_;
  static constexpr int kTileK = kTileK_;
  static constexpr int kWarpsM = kWarpsM_;
  static constexpr int kWarpsN = kWarpsN_;
  static constexpr int kThreads = 32 * kWarpsM * kWarpsN;

  // Per-axis extent of a tile in a grid of rank `rank` (1 to 3); the product is always kTileM.
  static constexpr int kExtent2 = integer_root(kTileM, 2);
  static constexpr int kExtent3 = integer_root(kTileM, 3);
  JAX_NATTEN_HOST_DEVICE static int tile_extent(int rank) { return rank == 1 ? kTileM : (rank == 2 ? kExtent2 : kExtent3); }

  static_assert(kExtent2 * kExtent2 == kTileM && kExtent3 * kExtent3 * kExtent3 == kTileM,
                "a tile is a segment, a square or a cube of kTileM tokens");
  // The SM80 atoms are 16 x 8 x 16 (float16, bfloat16) and 16 x 8 x 8 (TF32); operand rows are
  // staged as 16-byte vectors (8 float16 or 4 float32 columns).
  static_assert(kTileM % (16 * kWarpsM) == 0 && kTileN % (8 * kWarpsN) == 0 && kTileK % 16 == 0 && kTileN % 8 == 0,
                "the warps' atoms must tile kTileM x kTileN x kTileK");
};

// The configuration of the built kernels (CMakeLists.txt): 64 x 64 tiles, steps of 32, 4 warps.
using Tile64x64x32 = TileConfig<64, 64, 32, 2, 2>;

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

// The CTA's TiledMMA for operands of element type E, accumulating in float32, on the
// configuration's warp grid of SM80 tensor-core atoms (valid on sm_80 and sm_90). float32
// operands use the TF32 atom three times per product, on a split of each operand into a TF32
// value and its TF32 remainder (tile_gemm.cuh): float32 accuracy on tensor cores, not TF32's. The
// execution context Ctx names the atom (exec/context.h): the instruction on the GPU, its
// emulation on the host.
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
template <typename Ctx, typename E, class Config>
struct TiledMmaFor {
  using type = decltype(cute::make_tiled_mma(
      cute::MMA_Atom<typename Ctx::template mma_op<typename MmaOpFor<E>::type>>{},
      cute::Layout<cute::Shape<cute::Int<Config::kWarpsM>, cute::Int<Config::kWarpsN>, cute::_1>>{}));
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
