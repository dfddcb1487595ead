// The split-TF32 scheme that gives the tensor cores' TF32 MMA float32 accuracy (the gemm kernels'
// tile_gemm.cuh and the fused forward's mainloop.h): each float32 operand x becomes big + small,
// both TF32 values, and a product takes three TF32 MMAs, small terms first:
// a*b ~ as*bb + ab*bs + ab*bb (the dropped as*bs is below float32 rounding).
#pragma once

#include <cute/tensor.hpp>

#include "jax_natten/neighborhood.h"

namespace jax_natten {

// big is x rounded to TF32, small the remainder (exact in float32) rounded to TF32, so big +
// small carries 21 of float32's 24 mantissa bits.
template <typename Src, typename Big, typename Small>
JAX_NATTEN_HOST_DEVICE void split_tf32(const Src& src, Big& big, Small& small) {
  CUTE_UNROLL
  for (int i = 0; i < cute::size(src); ++i) {
    const float x = src(i);
    big(i) = cute::tfloat32_t(x);
    small(i) = cute::tfloat32_t(x - static_cast<float>(big(i)));
  }
}

}  // namespace jax_natten
