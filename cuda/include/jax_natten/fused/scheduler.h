// Which Q tile a CTA owns and which KV tiles it visits. A Q tile is a box of the token grid in
// in-group coordinates of one dilation group (per axis: group g_a, coordinates [u0_a, u0_a +
// q_tile[a]) clipped to the group). Windows never shrink or move back along a group, so the
// union of the box's windows is, per axis, [window(first).start, window(last).end): a box, cut
// into KV tiles of kv_tile[a] coordinates starting at that start. Also used by the planner's
// C++-free twin in jax_natten/fused_plan.py (same arithmetic over neighborhood.py).
#pragma once

#include <cute/config.hpp>

#include "jax_natten/fused/params.h"
#include "jax_natten/neighborhood.h"

namespace jax_natten::fused {

// The kernel loops over kMaxRank axes with constant trip counts (so that per-axis arrays stay in
// registers): the axes past grid.rank become trivial ones (length, kernel size and tiles 1),
// which change no token index, window or bias offset. Every launch passes its params through this.
JAX_NATTEN_HOST_DEVICE FusedParams pad_axes(FusedParams p) {
  for (int a = p.grid.rank; a < kMaxRank; ++a) {
    p.grid.axis[a] = AxisParams{1, 1, 1, 1, false};
    p.q_tile[a] = 1;
    p.kv_tile[a] = 1;
  }
  p.grid.rank = kMaxRank;
  return p;
}

JAX_NATTEN_HOST_DEVICE int ceil_div(int a, int b) { return (a + b - 1) / b; }

// Q tiles along one axis per dilation group (sized for the longest group).
JAX_NATTEN_HOST_DEVICE int q_tiles_per_group(const AxisParams& p, int q_tile) {
  return ceil_div(ceil_div(p.length, p.dilation), q_tile);
}

// Q tiles per (batch, head): the launch grid's x extent.
// Over the params' own axes: the same count before and after pad_axes (the FFI handler checks it
// on unpadded params, whose axes past the rank are zero; looping over kMaxRank there divided by a
// zero tile, a SIGFPE that an H200 run found and the emulation, which only sees padded params, could not).
JAX_NATTEN_HOST_DEVICE int64_t count_q_tiles(const FusedParams& p) {
  int64_t n = 1;
  for (int a = 0; a < p.grid.rank; ++a) n *= int64_t(p.grid.axis[a].dilation) * q_tiles_per_group(p.grid.axis[a], p.q_tile[a]);
  return n;
}

// KV tiles along one axis per dilation group (sized for the longest group).
JAX_NATTEN_HOST_DEVICE int kv_tiles_per_group(const AxisParams& p, int kv_tile) {
  return ceil_div(ceil_div(p.length, p.dilation), kv_tile);
}

// KV tiles per (batch, KV head): the backward grid's x extent (backward.h) (over the params' own axes, as
// count_q_tiles).
JAX_NATTEN_HOST_DEVICE int64_t count_kv_tiles(const FusedParams& p) {
  int64_t n = 1;
  for (int a = 0; a < p.grid.rank; ++a) n *= int64_t(p.grid.axis[a].dilation) * kv_tiles_per_group(p.grid.axis[a], p.kv_tile[a]);
  return n;
}

// One axis of a CTA's work: its dilation group, its queries [u0, u0 + nq) and the union of their
// windows [kv_first, kv_end), visited as kv_tiles tiles.
struct AxisTile {
  int group;
  int group_length;
  int u0;
  int nq;
  int kv_first;
  int kv_end;
  int kv_tiles;
  // Keys in every window of the tile's queries: [common_start, common_end) (may be empty).
  int common_start;
  int common_end;
};

struct CtaTile {
  AxisTile axis[kMaxRank];
  int kv_tiles;  // product over the axes
};

// The tile of CTA `index` in [0, count_q_tiles); false if that box is past its group's end (the
// grid is sized for the longest group, so such CTAs exist and write nothing).
JAX_NATTEN_HOST_DEVICE bool make_cta_tile(const FusedParams& p, int64_t index, CtaTile* t) {
  t->kv_tiles = 1;
  CUTE_UNROLL
  for (int a = kMaxRank - 1; a >= 0; --a) {
    const AxisParams& ax = p.grid.axis[a];
    const int per_group = q_tiles_per_group(ax, p.q_tile[a]);
    const int along = static_cast<int>(index % (int64_t(ax.dilation) * per_group));
    index /= int64_t(ax.dilation) * per_group;
    AxisTile& at = t->axis[a];
    at.group = along / per_group;
    at.group_length = group_length(ax, at.group);
    at.u0 = (along % per_group) * p.q_tile[a];
    if (at.u0 >= at.group_length) return false;
    at.nq = imin(p.q_tile[a], at.group_length - at.u0);
    const Range first = in_group_window(ax, at.u0, at.group_length);
    const Range last = in_group_window(ax, at.u0 + at.nq - 1, at.group_length);
    at.kv_first = first.start;
    at.kv_end = last.end;
    at.kv_tiles = ceil_div(at.kv_end - at.kv_first, p.kv_tile[a]);
    at.common_start = last.start;
    at.common_end = first.end;
    t->kv_tiles *= at.kv_tiles;
  }
  return true;
}

// First in-group key coordinate of KV tile `j` (row-major over the axes' kv_tiles) per axis.
JAX_NATTEN_HOST_DEVICE void kv_tile_origin(const FusedParams& p, const CtaTile& t, int j, int* origin) {
  CUTE_UNROLL
  for (int a = kMaxRank - 1; a >= 0; --a) {
    origin[a] = t.axis[a].kv_first + (j % t.axis[a].kv_tiles) * p.kv_tile[a];
    j /= t.axis[a].kv_tiles;
  }
}

// True when every key of the KV tile at `origin` is in the window of every query of the tile:
// then no element needs a mask (the fast path). Rows past the group's end are never written, so
// they do not count.
JAX_NATTEN_HOST_DEVICE bool kv_tile_unmasked(const FusedParams& p, const CtaTile& t, const int* origin) {
  bool inside = true;
  CUTE_UNROLL
  for (int a = 0; a < kMaxRank; ++a) {
    inside = inside && origin[a] >= t.axis[a].common_start && origin[a] + p.kv_tile[a] <= t.axis[a].common_end;
  }
  return inside;
}

// Flat token of the in-group coordinates `u` (per axis) of the tile's groups.
JAX_NATTEN_HOST_DEVICE int64_t token_of(const FusedParams& p, const CtaTile& t, const int* u) {
  int64_t token = 0;
  CUTE_UNROLL
  for (int a = 0; a < kMaxRank; ++a) {
    token = token * p.grid.axis[a].length + int64_t(u[a]) * p.grid.axis[a].dilation + t.axis[a].group;
  }
  return token;
}

// Per-axis offsets of row `row` of a box of extents `tile` (row-major).
JAX_NATTEN_HOST_DEVICE void box_offsets(const int* tile, int row, int* offsets) {
  CUTE_UNROLL
  for (int a = kMaxRank - 1; a >= 0; --a) {
    offsets[a] = row % tile[a];
    row /= tile[a];
  }
}

// Flat token of row `row` of the tile's Q box, -1 past its group's end.
JAX_NATTEN_HOST_DEVICE int64_t q_row_token(const FusedParams& p, const CtaTile& t, int row) {
  int u[kMaxRank];
  box_offsets(p.q_tile, row, u);
  CUTE_UNROLL
  for (int a = 0; a < kMaxRank; ++a) {
    if (u[a] >= t.axis[a].nq) return -1;
    u[a] += t.axis[a].u0;
  }
  return token_of(p, t, u);
}

}  // namespace jax_natten::fused
