// Masks of the GEMM-based kernels: the tokens of a box as rows in shared memory, whether a key
// lies in a query's window and in which slot, the empty slots of causal windows, and the bias
// entry of a (query, key) pair. (Which boxes a CTA works on is tile_scheduler.h's.)
#pragma once

#include <cstdint>

#include "jax_natten/exec/context.h"
#include "jax_natten/gemm/tile_scheduler.h"
#include "jax_natten/neighborhood.h"

namespace jax_natten::gemm {

// One token of a box as the kernels need it, kept in shared memory: its flat token (-1 when the
// index is not a token of the box), its in-group coordinates and, for queries, its window.
struct Row {
  int64_t token;
  int coord[kMaxRank];
  Range window[kMaxRank];
};

JAX_NATTEN_HOST_DEVICE void fill_row(const Grid& grid, const Box& box, int64_t index, bool with_window, Row& row) {
  int local[kMaxRank];
  bool valid = true;
  #pragma unroll
  for (int a = kMaxRank - 1; a >= 0; --a) {
    if (a >= grid.rank) continue;
    local[a] = static_cast<int>(index % box.extent[a]);
    index /= box.extent[a];
    valid = valid && local[a] < box.count[a];
  }
  if (!valid || index != 0) {
    row.token = -1;
    return;
  }
  int64_t token = 0;
  #pragma unroll
  for (int a = 0; a < kMaxRank; ++a) {
    if (a >= grid.rank) break;
    const int u = box.start[a] + local[a];
    const int position = box_position(grid, box, a, u);
    token = token * grid.axis[a].length + position;
    row.coord[a] = u;
    if (with_window) row.window[a] = window(grid.axis[a], position);
  }
  row.token = token;
}

// Rows first .. first + count - 1 of the box into rows[0 .. count), by the whole CTA.
template <class Config, class Ctx>
JAX_NATTEN_CTA void fill_rows(const Ctx& ctx, const Grid& grid, const Box& box, int64_t first, int count,
                              bool with_window, Row* rows) {
  for (int i = ctx.thread_index(); i < count; i += Config::kThreads) fill_row(grid, box, first + i, with_window, rows[i]);
}

// Whether in-group key coordinates `key` lie in the window of the query `query`; if so, `slot`
// is the key's slot in the query's window (row-major over the per-axis offsets).
JAX_NATTEN_HOST_DEVICE bool window_slot(const Grid& grid, const Row& query, const int* key, int& slot) {
  bool inside = true;
  slot = 0;
  #pragma unroll
  for (int a = 0; a < kMaxRank; ++a) {
    if (a >= grid.rank) break;
    const int offset = key[a] - query.window[a].start;
    inside = inside && offset >= 0 && key[a] < query.window[a].end;
    slot = slot * grid.axis[a].kernel_size + offset;
  }
  return inside;
}

// Whether `slot` of the query's window is an empty slot of a causal window (no key).
JAX_NATTEN_HOST_DEVICE bool slot_empty(const Grid& grid, const Row& query, int slot) {
  bool empty = false;
  #pragma unroll
  for (int a = kMaxRank - 1; a >= 0; --a) {
    if (a >= grid.rank) continue;
    empty = empty || slot % grid.axis[a].kernel_size >= query.window[a].end - query.window[a].start;
    slot /= grid.axis[a].kernel_size;
  }
  return empty;
}

// Entry of the [2k_1-1, ...] bias table for the key at in-group coordinates `key` of the query.
JAX_NATTEN_HOST_DEVICE int bias_entry(const Grid& grid, const Row& query, const int* key) {
  int entry = 0;
  #pragma unroll
  for (int a = 0; a < kMaxRank; ++a) {
    if (a >= grid.rank) break;
    entry = bias_step(entry, grid.axis[a], query.coord[a], key[a]);
  }
  return entry;
}

}  // namespace jax_natten::gemm
