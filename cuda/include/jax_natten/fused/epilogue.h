// The fused forward's epilogue: O = accumulator / row sum in the output dtype, and the float32
// LSE, written straight from registers for the valid rows of the Q tile.
#pragma once

#include <cute/tensor.hpp>

#include <cstdint>

#include "jax_natten/fused/params.h"

namespace jax_natten::fused {

// out_rc / coords_rc: ((rows), (columns)) views of the O accumulator and of its (row, column)
// tile coordinates; row_token[r]: the flat token of row r, or -1 past the group's end.
template <class Elem, class Softmax, class Out, class Coords>
CUTE_HOST_DEVICE void store_output(const FusedParams& p, int64_t batch, int head, const Softmax& softmax,
                                   const Out& out_rc, const Coords& coords_rc, const int64_t* row_token) {
  Elem* out = static_cast<Elem*>(p.out);
  CUTE_UNROLL
  for (int r = 0; r < cute::size<0>(out_rc); ++r) {
    if (row_token[r] < 0) continue;
    const int64_t row = (batch * p.tokens + row_token[r]) * p.heads + head;
    const float inverse = softmax.inverse_sum(r);
    CUTE_UNROLL
    for (int c = 0; c < cute::size<1>(out_rc); ++c) {
      const int d = cute::get<1>(coords_rc(r, c));
      if (d < p.dim_v) out[row * p.dim_v + d] = Elem(out_rc(r, c) * inverse);
    }
    if (cute::get<1>(coords_rc(r, 0)) == 0) p.lse[row] = softmax.lse(r);
  }
}

}  // namespace jax_natten::fused
