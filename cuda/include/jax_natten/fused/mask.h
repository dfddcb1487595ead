// Per-element masks of the fused forward: which (query row, key column) pairs of a tile are in
// the neighborhood, and their relative-position-bias entry. Only KV tiles that are not inside
// every window of the Q tile (scheduler.h: kv_tile_unmasked) evaluate these.
#pragma once

#include "jax_natten/fused/scheduler.h"
#include "jax_natten/neighborhood.h"

namespace jax_natten::fused {

// The window of one query row of the tile, per axis, in in-group key coordinates; empty for rows
// past the group's end (padding), which then attend nothing.
struct RowWindow {
  Range axis[kMaxRank];
  int u[kMaxRank];  // the query's in-group coordinates (for the bias)
};

JAX_NATTEN_HOST_DEVICE RowWindow row_window(const FusedParams& p, const CtaTile& t, int row) {
  RowWindow w;
  int offsets[kMaxRank];
  box_offsets(p.q_tile, row, offsets);
  CUTE_UNROLL
  for (int a = 0; a < kMaxRank; ++a) {
    w.u[a] = t.axis[a].u0 + offsets[a];
    w.axis[a] = offsets[a] < t.axis[a].nq ? in_group_window(p.grid.axis[a], w.u[a], t.axis[a].group_length)
                                          : Range{0, 0};
  }
  return w;
}

// Key i of every KV tile (row i of the K/V tiles, column i of S): its per-axis offsets in the KV
// tile box, one byte each, and the distance of its token from the token of the box's origin.
// The same for every KV tile of a CTA, so the CTA computes it once into shared memory: neither
// the gathers nor the masks divide by the box extents in the loop.
template <int BK>
struct KeyTable {
  static_assert(BK <= 256 && kMaxRank <= 4, "a box offset per byte of an int");
  int offsets[BK];
  int64_t token_deltas[BK];
};

template <int BK>
JAX_NATTEN_HOST_DEVICE void set_key(const FusedParams& p, const CtaTile& t, int key, KeyTable<BK>& table) {
  int offsets[kMaxRank], origin[kMaxRank];
  box_offsets(p.kv_tile, key, offsets);
  int packed = 0;
  CUTE_UNROLL
  for (int a = 0; a < kMaxRank; ++a) {
    packed |= offsets[a] << (8 * a);
    origin[a] = 0;
  }
  table.offsets[key] = packed;
  table.token_deltas[key] = token_of(p, t, offsets) - token_of(p, t, origin);
}

// The in-group key coordinates of the key with packed box offsets `offsets` of the KV tile at
// `origin`.
JAX_NATTEN_HOST_DEVICE void key_coords(int offsets, const int* origin, int* v) {
  CUTE_UNROLL
  for (int a = 0; a < kMaxRank; ++a) v[a] = origin[a] + ((offsets >> (8 * a)) & 0xff);
}

JAX_NATTEN_HOST_DEVICE bool in_window(const RowWindow& w, const int* v) {
  bool ok = true;
  CUTE_UNROLL
  for (int a = 0; a < kMaxRank; ++a) ok = ok && v[a] >= w.axis[a].start && v[a] < w.axis[a].end;
  return ok;
}

// Flat offset into one head's [2k_1 - 1, ...] bias table of the pair (row, key v).
JAX_NATTEN_HOST_DEVICE int bias_offset(const FusedParams& p, const RowWindow& w, const int* v) {
  int offset = 0;
  CUTE_UNROLL
  for (int a = 0; a < kMaxRank; ++a) {
    offset = bias_step(offset, p.grid.axis[a], w.u[a], v[a]);
  }
  return offset;
}

}  // namespace jax_natten::fused
