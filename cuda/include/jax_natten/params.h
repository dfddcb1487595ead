// The only thing that crosses from an FFI handler into kernel code for the unfused operators.
#pragma once

#include <cstdint>

#include "jax_natten/neighborhood.h"

namespace jax_natten {

// PN:  out[b, x, h, t]  = scale * q[b, x, h] . k[b, nbr_t(x), h / group] + rpb[h, bias(x, t)]
// NN:  out[b, x, h, :]  = scale * sum_t w[b, x, h, t] * v[b, nbr_t(x), h / group, :]
// IN:  out[b, y, hk, :] = scale * sum_{x, t : nbr_t(x) = y, h in group hk} w[b, x, h, t] * a[b, x, h, :]
struct UnfusedParams {
  Grid grid;
  int64_t batch;      // every axis before the spatial ones (vmapped axes are folded in here)
  int64_t tokens;     // product of the spatial lengths
  int heads;          // query heads
  int heads_kv;       // key/value heads; heads % heads_kv == 0
  int dim;            // PN: the contracted head_dim; NN, IN: the head_dim of the output
  int window;         // slots per query, prod(kernel_size)
  int64_t rpb_batch;  // PN: copies of the bias table (1, or the vmapped size); 0 without bias
  int rpb_window;     // PN: entries per head of the bias table, prod(2k - 1)
  float scale;
  float empty_value;  // PN: written to the empty slots of causal windows
};

// The pointer operands that each operator's kernels take after the parameters (every
// implementation's the same), as a type list for the dispatch (unfused_ffi.h).
template <class... A>
struct Operands {};
template <typename TW, typename T>
using PnOperands = Operands<const T* /*query*/, const T* /*key*/, const T* /*rpb*/, TW* /*out*/>;
template <typename TW, typename T>
using NnOperands = Operands<const TW* /*weights*/, const T* /*value*/, T* /*out*/>;
template <typename TW, typename T>
using InOperands = Operands<const TW* /*weights*/, const T* /*values*/, T* /*out*/>;

}  // namespace jax_natten
