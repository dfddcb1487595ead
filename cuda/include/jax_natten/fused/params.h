// The only thing that crosses from the fused FFI handlers into the fused forward and backward kernels.
#pragma once

#include <cstdint>

#include "jax_natten/neighborhood.h"

namespace jax_natten::fused {

// out[b, x, h, :] = sum_{y in nbhd(x)} softmax_y(scale * q[b, x, h] . k[b, y, h / group] + rpb) v[b, y, h / group]
// lse[b, x, h]    = log sum_{y in nbhd(x)} exp(scale * q . k + rpb)   (float32, natural log)
// Layouts: q [batch, tokens, heads, dim], k [batch, tokens, heads_kv, dim],
// v [batch, tokens, heads_kv, dim_v], out [batch, tokens, heads, dim_v], lse [batch, tokens, heads].
struct FusedParams {
  Grid grid;
  // A Q tile is a box of q_tile[a] in-group coordinates per axis within one dilation group; a KV
  // tile a box of kv_tile[a]. Their products are the kernel's compile-time tile rows BQ and BK.
  int q_tile[kMaxRank];
  int kv_tile[kMaxRank];
  int64_t batch;
  int64_t tokens;
  int heads;
  int heads_kv;
  int dim;    // of q and k; at most the instantiation's head-dim class, a multiple of 8
  int dim_v;  // of v and out; likewise
  float scale;
  const void* q;
  const void* k;
  const void* v;
  const void* rpb;  // [heads, prod(2 k_a - 1)] or null; only for stride 1, not causal
  void* out;
  float* lse;
};

// The backward's inputs and outputs next to the forward's (whose out and lse it does not use):
// d_out [batch, tokens, heads, dim_v] in the input dtype, lse and delta [batch, tokens, heads]
// float32, d_query [batch, tokens, heads, dim] float32, d_key / d_value like key / value.
// deterministic: d_query written once per element by the Q-tile kernel (backward_dq.h), the same
// bits run after run; otherwise added to by the KV-tile kernel's atomics (zeroed by the launch),
// in an order that varies. In the KV-tile kernel's own params d_query is null in that mode.
struct BackwardParams {
  FusedParams fwd;
  const void* d_out;
  const float* lse;
  const float* delta;
  float* d_query;
  void* d_key;
  void* d_value;
  bool deterministic;
};

}  // namespace jax_natten::fused
