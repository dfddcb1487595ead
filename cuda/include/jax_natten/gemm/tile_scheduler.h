// Tile scheduling of the GEMM-based kernels: which tokens a CTA owns, and the union box of the
// tokens they interact with. (The per-token masks and window slots are mask.h's.)
//
// A tile is a box of in-group coordinates of ONE dilation group per axis (Config::kTileM tokens:
// with 64, 64 in 1-D, 8 x 8 in 2-D, 4 x 4 x 4 in 3-D). Keeping one group per axis makes the tokens a tile interacts
// with a box too: window starts and ends never decrease along a group (neighborhood.h), so the
// union of the windows of the tile's queries is, per axis, [window(first).start,
// window(last).end), and the union of the inverse windows of a tile of keys is
// [inverse_window(first).start, inverse_window(last).end).
#pragma once

#include <algorithm>
#include <climits>
#include <cstdint>
#include <string>

#include "jax_natten/exec/context.h"
#include "jax_natten/neighborhood.h"
#include "jax_natten/params.h"

namespace jax_natten::gemm {

// Device loops over axes run over all kMaxRank axes, unrolled, and skip the axes past the rank:
// every per-axis index is then a compile-time constant, so per-axis arrays stay in registers
// instead of local memory.

JAX_NATTEN_HOST_DEVICE int ceil_div(int a, int b) { return (a + b - 1) / b; }

// Tiles of one axis: `dilation` groups, each cut into tiles of the longest group's length.
JAX_NATTEN_HOST_DEVICE int axis_tiles(const AxisParams& p, int extent) {
  return p.dilation * ceil_div(ceil_div(p.length, p.dilation), extent);
}

template <class Config>
JAX_NATTEN_HOST_DEVICE int64_t count_tiles(const Grid& grid) {
  int64_t tiles = 1;
  for (int a = 0; a < grid.rank; ++a) tiles *= axis_tiles(grid.axis[a], Config::tile_extent(grid.rank));
  return tiles;
}

// A box of in-group coordinates inside one dilation group per axis. Its tokens are indexed
// row-major over `extent`; coordinates at or past `count` on some axis are not tokens (the
// part of a tile past the end of its group).
struct Box {
  int group[kMaxRank];
  int start[kMaxRank];
  int extent[kMaxRank];
  int count[kMaxRank];
};

// Tile `index` of the grid, numbered row-major over the axes, each axis numbered (group, tile).
template <class Config>
JAX_NATTEN_HOST_DEVICE Box tile_box(const Grid& grid, int64_t index) {
  Box box;
  const int extent = Config::tile_extent(grid.rank);
  #pragma unroll
  for (int a = kMaxRank - 1; a >= 0; --a) {
    if (a >= grid.rank) continue;
    const AxisParams& p = grid.axis[a];
    const int per_group = ceil_div(ceil_div(p.length, p.dilation), extent);
    const int t = static_cast<int>(index % (int64_t(p.dilation) * per_group));
    index /= int64_t(p.dilation) * per_group;
    box.group[a] = t / per_group;
    box.start[a] = (t % per_group) * extent;
    box.extent[a] = extent;
    box.count[a] = imin(extent, group_length(p, box.group[a]) - box.start[a]);
  }
  return box;
}

// Whether the box holds no token (a tile past the end of a shorter dilation group).
JAX_NATTEN_HOST_DEVICE bool box_empty(const Grid& grid, const Box& box) {
  bool empty = false;
  #pragma unroll
  for (int a = 0; a < kMaxRank; ++a) empty = empty || (a < grid.rank && box.count[a] <= 0);
  return empty;
}

JAX_NATTEN_HOST_DEVICE int64_t box_size(const Grid& grid, const Box& box) {
  int64_t size = 1;
  #pragma unroll
  for (int a = 0; a < kMaxRank; ++a) size *= a < grid.rank ? box.extent[a] : 1;
  return size;
}

// Position on axis a of in-group coordinate u of the box's group.
JAX_NATTEN_HOST_DEVICE int box_position(const Grid& grid, const Box& box, int a, int u) {
  return u * grid.axis[a].dilation + box.group[a];
}

// The keys that the queries of `tile` attend to: the union of their windows.
JAX_NATTEN_HOST_DEVICE Box window_union(const Grid& grid, const Box& tile) {
  Box u;
  #pragma unroll
  for (int a = 0; a < kMaxRank; ++a) {
    if (a >= grid.rank) break;
    const AxisParams& p = grid.axis[a];
    const Range first = window(p, box_position(grid, tile, a, tile.start[a]));
    const Range last = window(p, box_position(grid, tile, a, tile.start[a] + tile.count[a] - 1));
    u.group[a] = tile.group[a];
    u.start[a] = first.start;
    u.extent[a] = u.count[a] = last.end - first.start;
  }
  return u;
}

// The queries that attend to the keys of `tile`: the union of their inverse windows.
JAX_NATTEN_HOST_DEVICE Box inverse_window_union(const Grid& grid, const Box& tile) {
  Box u;
  #pragma unroll
  for (int a = 0; a < kMaxRank; ++a) {
    if (a >= grid.rank) break;
    const AxisParams& p = grid.axis[a];
    const Range first = inverse_window(p, box_position(grid, tile, a, tile.start[a]));
    const Range last = inverse_window(p, box_position(grid, tile, a, tile.start[a] + tile.count[a] - 1));
    u.group[a] = tile.group[a];
    u.start[a] = first.start;
    u.extent[a] = u.count[a] = imax(last.end - first.start, 0);
  }
  return u;
}

// The launch grid of a GEMM kernel `what` (x over (tile, column block), y over (batch, head)
// pairs, which the kernels loop over past the grid's y limit), or why p cannot run: rows are
// staged in shared memory as 16-byte vectors, hence head_dim % 8 == 0.
template <class Config>
std::string launch_grid(const UnfusedParams& p, int64_t column_blocks, int64_t batch_heads, exec::Dim3* blocks) {
  if (p.dim % 8 != 0) return "head_dim must be a multiple of 8, got " + std::to_string(p.dim);
  const int64_t x = count_tiles<Config>(p.grid) * column_blocks;
  if (x > INT_MAX) return "too many tiles for one launch";
  *blocks = {static_cast<unsigned int>(x), static_cast<unsigned int>(std::min<int64_t>(batch_heads, 65535)), 1};
  return {};
}

}  // namespace jax_natten::gemm
