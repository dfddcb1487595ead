// The neighborhood of SPEC.md, one axis at a time: the only C++ copy of the window rule, used by
// every kernel. Its Python twin is jax_natten/neighborhood.py; the window_bounds FFI target
// exists so that tests can hold the two against each other.
//
// Coordinates: position i on an axis with dilation d lies in group g = i % d at in-group
// coordinate u = i / d. Windows are half-open in-group ranges [start, end); in-group key v of
// group g is the position v * d + g.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define JAX_NATTEN_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define JAX_NATTEN_HOST_DEVICE inline
#endif

namespace jax_natten {

struct AxisParams {
  int length;
  int kernel_size;
  int stride;
  int dilation;
  bool is_causal;
};

struct Range {
  int start;
  int end;
};

JAX_NATTEN_HOST_DEVICE int imin(int a, int b) { return a < b ? a : b; }
JAX_NATTEN_HOST_DEVICE int imax(int a, int b) { return a > b ? a : b; }

JAX_NATTEN_HOST_DEVICE int group_length(const AxisParams& p, int group) {
  return p.length / p.dilation + (group < p.length % p.dilation ? 1 : 0);
}

// Window of the query at in-group coordinate u of a group of length lg.
JAX_NATTEN_HOST_DEVICE Range in_group_window(const AxisParams& p, int u, int lg) {
  int group_first = p.stride * (u / p.stride);
  if (p.is_causal) {
    int leader = imin(group_first + p.stride - 1, lg - 1);
    return {imax(leader - p.kernel_size + 1, 0), u + 1};
  }
  int leader = imin(group_first + p.stride / 2, lg - 1);
  int start = imin(imax(leader - p.kernel_size / 2, 0), lg - p.kernel_size);
  return {start, start + p.kernel_size};
}

// In-group window [start, end) of the keys that the query at `position` attends to.
JAX_NATTEN_HOST_DEVICE Range window(const AxisParams& p, int position) {
  return in_group_window(p, position / p.dilation, group_length(p, position % p.dilation));
}

// In-group range [start, end) of the queries whose window holds the key at `position`. Window
// starts and ends never decrease along a group, so these queries are contiguous and two binary
// searches find them.
JAX_NATTEN_HOST_DEVICE Range inverse_window(const AxisParams& p, int position) {
  int v = position / p.dilation;
  int lg = group_length(p, position % p.dilation);
  int lo = 0, hi = lg;  // first query whose window ends after v
  while (lo < hi) {
    int mid = (lo + hi) / 2;
    if (in_group_window(p, mid, lg).end > v) hi = mid; else lo = mid + 1;
  }
  int first = lo;
  hi = lg;  // first query whose window starts after v
  while (lo < hi) {
    int mid = (lo + hi) / 2;
    if (in_group_window(p, mid, lg).start > v) hi = mid; else lo = mid + 1;
  }
  return {first, lo};
}

// The bias-table index formula, the only copy in C++ (Python's is neighborhood.py's): a [2k_1-1,
// 2k_2-1, ...] table, row-major, holds on each axis the entry key - query + k - 1 for in-group
// coordinates query and key. bias_step appends one axis to the flat index `entry` of the axes
// before it.
JAX_NATTEN_HOST_DEVICE int bias_step(int entry, const AxisParams& p, int query, int key) {
  return entry * (2 * p.kernel_size - 1) + key - query + p.kernel_size - 1;
}

constexpr int kMaxRank = 3;

// The token grid of one call: per-axis parameters of a row-major [*spatial] layout.
struct Grid {
  int rank;
  AxisParams axis[kMaxRank];
};

// Key that the query at flat token `token` reads in window slot `slot` (row-major over the
// per-axis kernel offsets), with its flat offset into the [heads, 2k_1-1, ...] bias table.
struct Neighbor {
  int64_t token;
  int bias_offset;
  bool valid;  // false for the empty slots of causal windows
};

JAX_NATTEN_HOST_DEVICE Neighbor neighbor(const Grid& grid, int64_t token, int slot) {
  int offsets[kMaxRank];
  int positions[kMaxRank];
  for (int a = grid.rank - 1; a >= 0; --a) {
    offsets[a] = slot % grid.axis[a].kernel_size;
    slot /= grid.axis[a].kernel_size;
    positions[a] = static_cast<int>(token % grid.axis[a].length);
    token /= grid.axis[a].length;
  }
  Neighbor n{0, 0, true};
  for (int a = 0; a < grid.rank; ++a) {
    const AxisParams& p = grid.axis[a];
    Range w = window(p, positions[a]);
    int v = w.start + offsets[a];
    n.valid = n.valid && v < w.end;
    n.token = n.token * p.length + v * p.dilation + positions[a] % p.dilation;
    n.bias_offset = bias_step(n.bias_offset, p, positions[a] / p.dilation, v);
  }
  return n;
}

}  // namespace jax_natten
