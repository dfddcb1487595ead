// Staging of operands in shared memory: rows of a [batch, tokens, heads, dim] tensor gathered by
// token (the neighborhood gather fused into the smem load), and the rounding of attention weights
// to the MMA's element type (the kernels gather those by window slot).
#pragma once

#include <cstdint>

#include "jax_natten/gemm/config.h"
#include "jax_natten/gemm/tile.h"
#include "jax_natten/numeric.h"

namespace jax_natten::gemm {

// Where a [batch, tokens, heads, dim] tensor's row of one token starts, for a fixed batch
// element and head.
struct RowSource {
  int64_t batch_tokens;  // b * tokens
  int heads;
  int head;
  int dim;

  __device__ __forceinline__ int64_t offset(int64_t token) const { return ((batch_tokens + token) * heads + head) * dim; }
};

// dst(r, c) = src[row rows[r].token][col0 + c] for r < kRows, c < kCols, zero where the row is not
// a token or col0 + c >= dim. dst's columns must be contiguous, 16-byte aligned in runs of
// 16 bytes; dim is a multiple of 8, so each 16-byte vector is wholly inside or outside [0, dim).
template <int kRows, int kCols, typename T, typename Dst>
__device__ __forceinline__ void gather_rows(const Dst& dst, const T* __restrict__ src, RowSource source,
                                            const Row* rows, int col0) {
  constexpr int kVector = 16 / sizeof(T);
  constexpr int kVectorsPerRow = kCols / kVector;
  static_assert(kCols % kVector == 0, "rows are copied in 16-byte vectors");
  for (int i = threadIdx.x; i < kRows * kVectorsPerRow; i += kThreads) {
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
__device__ __forceinline__ E to_element(TW w) {
  return E(to_float(w));
}

}  // namespace jax_natten::gemm
