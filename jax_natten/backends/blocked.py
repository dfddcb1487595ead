"""Blocked, fused pure-JAX backend: neighborhood attention as dense tile matmuls, on any platform.

Tiles. The inputs are regrouped once (a pad, reshape and transpose): every spatial axis split
into its dilation groups, each an undilated problem, `[batch, groups, heads_kv, group, *extent,
dim]`. Every axis is cut into tiles of `tile[a]` in-group rows; a tile is the box of the grid that
is the product of one tile per axis. Its keys are the per-axis union of its queries' windows
(from `neighborhood.window`) over every group, padded to the longest such box (`box[a]` keys).
A `lax.scan` walks the tiles; a step slices one tile's queries and its key box (dynamic slices,
for every batch, dilation group and head at once), computes the tile's scores as one matmul,
masks the pairs outside the windows (a static table of the distinct tile masks: interior tiles
share one), takes one softmax over the whole box and a second matmul, and writes the tile's
output and LSE into the carry in place. Nothing of size tokens x window exists: a step holds
one tile's scores per (batch, group, head). Scores are laid out `[..., rows, box]`: the softmax
reduces along contiguous memory, and the backward's five products read their operands as the
forward's two do (on the 2-core CPU the forward takes the same time as with box-major scores).

Backward (custom_vjp), the flash-attention backward in one pass that walks the query tiles the
same way: it recomputes each tile's scores and probabilities `p` (normalized as the forward
normalizes them, from each row's maximum and sum, not as `exp(s - lse)`, which loses precision
at large scores), `ds = p * (dO.v - delta)` with `delta = rowsum(dO * O) - dLSE` (so a loss that
uses the LSE gets its gradient), writes `dQ = ds.k`, and adds `dK += ds^T.q`, `dV += p^T.dO` into
the tile's key box (five matmuls per tile; a second pass over key tiles would recompute the
scores for dK and dV, seven). Additional keys and values are merged outside the tiles, exactly:
through the LSE forward, through the rows' maxima and sums backward.

Tile rule (`plan`): the per-axis tiles (powers of two; a GQA group's query heads share a tile's
rows) with the least estimated cost, computed pairs times `1 + MATMUL_HALF_ROWS / rows`: on a
2-core CPU a `rows x box` matmul with head_dim 64 runs at about `rows / (rows + 32)` of the
large-matrix rate (8 rows: 0.2, 64: 0.65, 128: 0.8), so larger tiles win where the window is
large. Tile efficiency is attended pairs / computed pairs.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jax_natten.backends.extra_kv import HIGHEST, accumulation_dtype, extra_logits, extra_sum, split_heads
from jax_natten.neighborhood import Neighborhood, window

TILE_SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256)
MAX_TILE_ROWS = 256
MATMUL_HALF_ROWS = 32
# `backend=None` prefers this backend over the reference from this estimated rate up (tile
# efficiency x rows / (rows + MATMUL_HALF_ROWS)). Measured on the 2-core CPU, float32, 4 heads,
# head_dim 64 (benchmarks/results/2026-12-02-cpu-blocked.md, before the one-pass backward): at
# 0.113 (3-D 8x24x24 k=3) it is 1.3x / 1.7x faster forward / forward+backward, at 0.106 (1-D 4096
# k=7) and 0.083 (2-D 56x56 k=3) the reference's forward is 1.4x / 1.5x faster (forward+backward
# about equal).
MIN_RATE = 0.11


def _ceil_div(a, b):
    return -(-a // b)


def _axis_bounds(length, params):
    """Per dilation group: the in-group key range `[a, b)` (the window) of each in-group query."""
    dilation = params[2]
    return [window(np.arange(g, length, dilation), length, *params) for g in range(dilation)]


def _tile_boxes(bounds, tile):
    """Per tile: the union `[lo, hi)` over every group of its rows' ranges (tiles of `tile`
    in-group rows; groups share box starts, so that one slice serves them all)."""
    tiles = _ceil_div(max(len(start) for start, _ in bounds), tile)
    lo, hi = np.full(tiles, np.iinfo(np.int64).max), np.zeros(tiles, np.int64)
    for start, end in bounds:
        for t in range(_ceil_div(len(start), tile)):
            lo[t] = min(lo[t], start[t * tile:(t + 1) * tile].min())
            hi[t] = max(hi[t], end[t * tile:(t + 1) * tile].max())
    lo = np.where(hi > 0, lo, 0)
    # Boxes end by the longest group's end where they can (the regrouped arrays then need no
    # padding past it): a box no longer than that starts at most that far before it.
    extent = max(1, int((hi - lo).max()))
    return np.maximum(0, np.minimum(lo, len(bounds[0][0]) - extent)), hi


def _box_extent(bounds, tile):
    lo, hi = _tile_boxes(bounds, tile)
    return max(1, int((hi - lo).max()))


@dataclasses.dataclass(frozen=True, eq=False)
class AxisTiles:
    """One axis of the tiling, over in-group coordinates (NumPy tables)."""

    tile: int
    box: int
    box_start: np.ndarray   # [tiles]: in-group coordinate of each tile's first box entry
    mask: np.ndarray        # [d, tiles, tile, box]: whether the query's window holds the box entry
    offset: np.ndarray      # [1, tiles, tile, box]: box coordinate minus row coordinate
    extent: int             # in-group length that holds every tile and box

    @property
    def tiles(self):
        return len(self.box_start)


@functools.lru_cache(maxsize=128)
def axis_tiles(length, params, tile) -> AxisTiles:
    bounds = _axis_bounds(length, params)
    lo, _ = _tile_boxes(bounds, tile)
    box = _box_extent(bounds, tile)
    tiles = len(lo)
    u = np.arange(tiles * tile).reshape(tiles, tile)
    v = lo[:, None] + np.arange(box)[None, :]
    mask = np.zeros((len(bounds), tiles, tile, box), bool)
    for g, (start, end) in enumerate(bounds):
        rows = u < len(start)
        starts, ends = (np.where(rows, np.pad(x, (0, tiles * tile - len(start))).reshape(tiles, tile), 0)
                        for x in (start, end))
        mask[g] = rows[..., None] & (starts[..., None] <= v[:, None, :]) & (v[:, None, :] < ends[..., None])
    offset = (v[:, None, :] - u[..., None])[None]
    return AxisTiles(tile, box, lo, mask, offset, max(tiles * tile, int(lo.max()) + box))


@dataclasses.dataclass(frozen=True)
class Plan:
    """The tiling of one call (static, hashable)."""

    spatial_shape: tuple[int, ...]
    nbhd: Neighborhood
    tile: tuple[int, ...]
    group: int = 1  # query heads per key/value head (they share a tile's rows)

    def axes(self):
        return [axis_tiles(length, params, tile)
                for length, params, tile in zip(self.spatial_shape, self.nbhd.axes(), self.tile)]

    @property
    def rows(self):
        """Rows of a tile's matmuls: its queries times the GQA group."""
        return self.group * math.prod(self.tile)

    def extent(self):
        """Per axis: the padded in-group length of the regrouped arrays."""
        return tuple(a.extent for a in self.axes())

    @property
    def box(self):
        return tuple(a.box for a in self.axes())

    @property
    def steps(self):
        return math.prod(a.tiles for a in self.axes())

    def computed_pairs(self):
        return math.prod(a.mask.size for a in self.axes())

    def attended_pairs(self):
        return math.prod(int(sum((end - start).sum() for start, end in _axis_bounds(length, params)))
                         for length, params in zip(self.spatial_shape, self.nbhd.axes()))

    def efficiency(self):
        return self.attended_pairs() / self.computed_pairs()

    def estimated_rate(self):
        """The share of the machine's large-matmul rate that turns into attended pairs."""
        return self.efficiency() * self.rows / (self.rows + MATMUL_HALF_ROWS)

    def __str__(self):
        shape = lambda t: "x".join(map(str, t))
        return (f"blocked tiles: {shape(self.tile)} queries x {self.group} head(s) attend key boxes of "
                f"{shape(self.box)}, {self.steps} step(s); tile efficiency {self.efficiency():.2f} "
                f"(attended pairs / computed pairs), estimated rate {self.estimated_rate():.2f}")


def plan(spatial_shape, nbhd: Neighborhood, group=1, tile=None) -> Plan:
    """The tiling `attention` uses for this problem (the tile rule of the module docstring)."""
    spatial_shape = tuple(spatial_shape)
    if tile is None:
        per_axis = []
        for length, params in zip(spatial_shape, nbhd.axes()):
            group_max = _ceil_div(length, params[2])
            bounds = _axis_bounds(length, params)
            per_axis.append([(t, _ceil_div(group_max, t) * t * _box_extent(bounds, t) * params[2])
                             for t in TILE_SIZES if t < 2 * group_max])

        def cost(choice):
            rows = group * math.prod(t for t, _ in choice)
            return math.prod(pairs for _, pairs in choice) * (1 + MATMUL_HALF_ROWS / rows)

        choices = [c for c in itertools.product(*per_axis) if group * math.prod(t for t, _ in c) <= MAX_TILE_ROWS]
        tile = tuple(t for t, _ in min(choices or [tuple(axis[0] for axis in per_axis)], key=cost))
    return Plan(spatial_shape, nbhd, tuple(tile), group)


def _step_tables(axes):
    """Per step (the tiles in row-major order), stacked for `lax.scan`: per axis the first row,
    the first box entry and the `[1, tile, box]` offsets; and the step's row of `_mask_table`."""
    per_axis, codes = _step_mask_codes(axes)
    positions = tuple((jnp.asarray((t * a.tile).astype(np.int32)), jnp.asarray(a.box_start[t].astype(np.int32)),
                       jnp.asarray(np.moveaxis(a.offset[:, t], 1, 0).astype(np.int32)))
                      for a, t in zip(axes, per_axis))
    _, step_mask = np.unique(codes, axis=0, return_inverse=True)
    return positions, jnp.asarray(step_mask.reshape(-1).astype(np.int32))


def _step_mask_codes(axes):
    """Each step's tile on every axis, and the index of its mask among the axis's distinct ones."""
    per_axis = np.unravel_index(np.arange(math.prod(a.tiles for a in axes)), [a.tiles for a in axes])
    return per_axis, np.stack([_axis_mask_codes(a)[1][t] for a, t in zip(axes, per_axis)], axis=1)


@functools.lru_cache(maxsize=128)
def _axis_mask_codes(a: AxisTiles):
    """The distinct `[d, tile, box]` masks of the axis's tiles and each tile's index among them
    (interior tiles share one)."""
    flat = np.moveaxis(a.mask, 1, 0).reshape(a.tiles, -1)
    unique, code = np.unique(flat, axis=0, return_inverse=True)
    return unique.reshape((-1, a.mask.shape[0], a.tile, a.box)), code.reshape(-1)


def _mask_table(axes):
    """`[distinct step masks, groups, rows, box]`: whether each (row, box entry) pair attends."""
    _, codes = _step_mask_codes(axes)
    table = []
    for combination in np.unique(codes, axis=0):
        masks = [_axis_mask_codes(a)[0][c] for a, c in zip(axes, combination)]
        table.append(_rows_by_box(functools.reduce(np.logical_and, _broadcast_axes(masks)), masks))
    return jnp.asarray(np.stack(table))


def _broadcast_axes(tables):
    """Per-axis `[d, tile, box]` tables broadcast to `[d_1.., tile_1.., box_1..]`."""
    rank, out = len(tables), []
    for a, table in enumerate(tables):
        shape = [1] * (3 * rank)
        for j in range(3):
            shape[j * rank + a] = table.shape[j]
        out.append(table.reshape(shape))
    return out


def _rows_by_box(combined, tables):
    """`[d_1.., tile_1.., box_1..]` -> `[groups, rows, box]`."""
    groups, rows, box = (math.prod(t.shape[j] for t in tables) for j in range(3))
    return combined.reshape(groups, rows, box)


def _regroup(x, p: Plan, heads_kv):
    """`[batch, *spatial, heads, (dim)]` -> `[batch, groups, heads_kv, group, *extent, (dim)]`:
    each axis split into its dilation groups (position `u * d + g` is in-group row `u` of group
    `g`), zero-padded to the plan's extent."""
    rank, batch = p.nbhd.rank, x.shape[0]
    dims = x.shape[rank + 2:]
    extent, dilation = p.extent(), p.nbhd.dilation
    pad = [(0, 0)] + [(0, d * e - n) for n, d, e in zip(x.shape[1:rank + 1], dilation, extent)] + \
        [(0, 0)] * (1 + len(dims))
    x = jnp.pad(x, pad).reshape((batch,) + tuple(i for e, d in zip(extent, dilation) for i in (e, d))
                                + (heads_kv, x.shape[rank + 1] // heads_kv) + dims)
    order = [0] + [2 + 2 * a for a in range(rank)] + [2 * rank + 1, 2 * rank + 2] + \
        [1 + 2 * a for a in range(rank)] + list(range(2 * rank + 3, 2 * rank + 3 + len(dims)))
    x = x.transpose(order)
    return x.reshape((batch, math.prod(dilation)) + x.shape[rank + 1:])


def _ungroup(x, p: Plan):
    """The inverse of `_regroup`: `[batch, *spatial, heads, (dim)]`."""
    rank, batch = p.nbhd.rank, x.shape[0]
    extent, dilation = p.extent(), p.nbhd.dilation
    dims = x.shape[4 + rank:]
    x = x.reshape((batch,) + dilation + x.shape[2:])
    order = [0] + [i for a in range(rank) for i in (rank + 3 + a, 1 + a)] + [rank + 1, rank + 2] + \
        list(range(2 * rank + 3, 2 * rank + 3 + len(dims)))
    x = x.transpose(order)
    x = x.reshape((batch,) + tuple(e * d for e, d in zip(extent, dilation)) + (-1,) + dims)
    return x[(slice(None),) + tuple(slice(0, n) for n in p.spatial_shape)]


def _tile(x, starts, sizes):
    """The box of regrouped `x` at per-axis `starts`, its spatial axes flattened: `[batch,
    groups, heads_kv, group, rows, (dim)]`."""
    zero = jnp.zeros((), jnp.int32)
    rest = x.shape[4 + len(starts):]
    piece = lax.dynamic_slice(x, (zero,) * 4 + tuple(starts) + (zero,) * len(rest), x.shape[:4] + tuple(sizes) + rest)
    return piece.reshape(x.shape[:4] + (-1,) + rest)


def _place(carry, tile, starts, sizes, add=False):
    """Writes a `_tile`-shaped `tile` back at `starts` (or adds it to what is there)."""
    zero = jnp.zeros((), jnp.int32)
    rest = carry.shape[4 + len(starts):]
    tile = tile.reshape(carry.shape[:4] + tuple(sizes) + rest)
    index = (zero,) * 4 + tuple(starts) + (zero,) * len(rest)
    if add:
        tile = tile + lax.dynamic_slice(carry, index, tile.shape)
    return lax.dynamic_update_slice(carry, tile, index)


def _bias(rpb, offsets, kernel_size, heads_kv):
    """`[heads_kv, group, rows, box]` bias of one step: the table entry of `key - query`."""
    flat = 0
    for k, offset in zip(kernel_size, _broadcast_axes(offsets)):
        flat = flat * (2 * k - 1) + jnp.clip(offset + k - 1, 0, 2 * k - 2)
    flat = _rows_by_box(flat, offsets)[0]
    return rpb.reshape(heads_kv, rpb.shape[0] // heads_kv, -1)[:, :, flat]


def _finite(x):
    return jnp.where(jnp.isfinite(x), x, 0)


# Tiles: queries `[batch, groups, heads_kv, group, rows, dim]`, a key box `[batch, groups,
# heads_kv, box, dim]`, scores `[batch, groups, heads_kv, group, rows, box]`.
def _scores(qt, kt, mask, bias):
    s = jnp.einsum("bzhpmd,bzhnd->bzhpmn", qt, kt, precision=HIGHEST)
    if bias is not None:
        s = s + bias
    return jnp.where(mask[None, :, None, None], s, -jnp.inf)


def _softmax_parts(s, extra=None):
    """Each row's maximum `m` (0 for a row with no finite score), `exp(s - m)` and the row's sum;
    with `extra`, the additional tokens' per-row (maximum, sum), the maximum and sum over both."""
    m = s.max(-1)
    if extra is not None:
        m = jnp.maximum(m, extra[0])
    m = _finite(m)
    e = jnp.exp(s - m[..., None])
    total = e.sum(-1)
    if extra is not None:
        total = total + extra[1] * jnp.exp(extra[0] - m)
    return m, e, total


def _plain_values(e, vt):
    return jnp.einsum("bzhpmn,bzhnd->bzhpmd", e, vt, precision=HIGHEST)


def _masked_values(e, vt):
    finite = jnp.isfinite(vt)
    reads = jnp.einsum("bzhpmn,bzhnd->bzhpmd", (e > 0).astype(e.dtype), (~finite).astype(e.dtype),
                       precision=HIGHEST) > 0
    return jnp.where(reads, _plain_values(e, vt), _plain_values(e, jnp.where(finite, vt, 0)))


@jax.custom_batching.custom_vmap
def _weighted_values(e, vt):
    """`e.v` over a key box. A non-finite value reaches only the rows that attend to it (the
    README's policy): the box also holds keys outside a row's window, whose weight 0 would turn a
    NaN or Inf into NaN, so a box with one takes the product of its finite part and, where a row
    attends to a non-finite entry, the plain product."""
    return lax.cond(jnp.isfinite(vt).all(), _plain_values, _masked_values, e, vt)


@_weighted_values.def_vmap
def _weighted_values_vmap(axis_size, in_batched, e, vt):
    # The mapped axis joins the batch axis: one branch for the whole batch (vmap of the cond
    # itself would run both branches and select).
    e, vt = (x if batched else jnp.broadcast_to(x, (axis_size,) + x.shape) for x, batched in zip((e, vt), in_batched))
    out = _weighted_values(e.reshape((-1,) + e.shape[2:]), vt.reshape((-1,) + vt.shape[2:]))
    return out.reshape((axis_size,) + e.shape[1:-1] + vt.shape[-1:]), True


def _walk(axes, step, carry):
    """`lax.scan` of `step(carry, rows, boxes, offsets, mask_index)` over the tiles."""
    def body(carry, xs):
        positions, mask_index = xs
        rows, boxes, offsets = zip(*positions)
        return step(carry, rows, boxes, offsets, mask_index), None

    return lax.scan(body, carry, _step_tables(axes))[0]


def _forward(query, key, value, rpb, extra_keys, extra_values, p: Plan, scale):
    acc = accumulation_dtype(query.dtype)
    heads_kv = key.shape[-2]
    q = query.astype(acc) * scale
    qr, kr, vr = (_regroup(x, p, heads_kv) for x in (q, key.astype(acc), value.astype(acc)))
    bias_table = None if rpb is None else rpb.astype(acc)
    axes = p.axes()
    tiles, boxes_shape = tuple(a.tile for a in axes), tuple(a.box for a in axes)
    masks = _mask_table(axes)

    def step(carry, rows, boxes, offsets, mask_index):
        out, lse = carry
        qt = _tile(qr, rows, tiles)
        kt, vt = (_tile(x, boxes, boxes_shape)[:, :, :, 0] for x in (kr, vr))
        bias = None if rpb is None else _bias(bias_table, offsets, p.nbhd.kernel_size, heads_kv)
        m, e, total = _softmax_parts(_scores(qt, kt, masks[mask_index], bias))
        o = _weighted_values(e, vt) / jnp.where(total > 0, total, 1)[..., None]
        return _place(out, o, rows, tiles), _place(lse, m + jnp.log(total), rows, tiles)

    out, lse = _walk(axes, step, (jnp.zeros_like(qr, shape=qr.shape[:-1] + vr.shape[-1:]), jnp.zeros_like(qr[..., 0])))
    out, lse = _ungroup(out, p), _ungroup(lse, p)
    if extra_keys is not None:
        s = extra_logits(q, extra_keys.astype(acc), 1.0)
        lse_extra = jax.nn.logsumexp(s, axis=-1)
        out_extra = extra_sum(jnp.exp(s - lse_extra[..., None]), extra_values.astype(acc)).reshape(out.shape)
        lse_extra = lse_extra.reshape(lse.shape)
        merged = jnp.logaddexp(lse, lse_extra)
        out = out * jnp.exp(lse - merged)[..., None] + out_extra * jnp.exp(lse_extra - merged)[..., None]
        lse = merged
    return out.astype(query.dtype), lse


def _backward(query, key, value, rpb, extra_keys, extra_values, out, lse, d_out, d_lse, p: Plan, scale):
    acc = accumulation_dtype(query.dtype)
    heads_kv = key.shape[-2]
    q, k, v, do = query.astype(acc) * scale, key.astype(acc), value.astype(acc), d_out.astype(acc)
    delta = jnp.sum(do * out.astype(acc), -1) - d_lse.astype(acc)
    # The probabilities are recomputed as the forward computes them, from each row's maximum
    # score and sum over its window (and the additional tokens), not as exp(s - lse): lse holds
    # the scores' magnitude, and at scores near 1e4 its float32 rounding alone puts 4e-5 on every
    # probability of the row.
    extra_r = None  # the additional tokens' per-row (maximum, sum), regrouped
    if extra_keys is not None:
        s_extra = extra_logits(q, extra_keys.astype(acc), 1.0)
        extra_max, _, extra_total = _softmax_parts(s_extra)
        extra_r = tuple(_regroup(x.reshape(lse.shape), p, heads_kv) for x in (extra_max, extra_total))
    qr, kr, vr, dor, deltar = (_regroup(x, p, heads_kv) for x in (q, k, v, do, delta))
    axes = p.axes()
    tiles, boxes_shape = tuple(a.tile for a in axes), tuple(a.box for a in axes)
    masks = _mask_table(axes)

    def step(carry, rows, boxes, offsets, mask_index):
        dq, dk, dv, d_rpb, row_max, row_total = carry
        qt, dot = (_tile(x, rows, tiles) for x in (qr, dor))
        delta_t = _tile(deltar, rows, tiles)[..., None]
        kt, vt = (_tile(x, boxes, boxes_shape)[:, :, :, 0] for x in (kr, vr))
        bias, bias_back = (None, None) if rpb is None else jax.vjp(
            lambda table: _bias(table, offsets, p.nbhd.kernel_size, heads_kv), rpb.astype(acc))
        extra = None if extra_r is None else tuple(_tile(x, rows, tiles) for x in extra_r)
        m, e, total = _softmax_parts(_scores(qt, kt, masks[mask_index], bias), extra)
        e = e / jnp.where(total > 0, total, 1)[..., None]
        ds = e * (jnp.einsum("bzhpmd,bzhnd->bzhpmn", dot, vt, precision=HIGHEST) - delta_t)
        if rpb is not None:
            d_rpb = d_rpb + bias_back(ds.sum((0, 1)))[0]
        dq_t = scale * jnp.einsum("bzhpmn,bzhnd->bzhpmd", ds, kt, precision=HIGHEST)
        # `q` holds the scale: this is `scale * ds^T.q`.
        dk_t = jnp.einsum("bzhpmn,bzhpmd->bzhnd", ds, qt, precision=HIGHEST)
        dv_t = jnp.einsum("bzhpmn,bzhpmd->bzhnd", e, dot, precision=HIGHEST)
        if extra_r is not None:  # the additional tokens' probabilities need the rows' normalizers
            row_max, row_total = _place(row_max, m, rows, tiles), _place(row_total, total, rows, tiles)
        return (_place(dq, dq_t, rows, tiles), _place(dk, dk_t[:, :, :, None], boxes, boxes_shape, add=True),
                _place(dv, dv_t[:, :, :, None], boxes, boxes_shape, add=True), d_rpb, row_max, row_total)

    # Like rpb (attention() makes it vary with the query under shard_map), as the per-step sums do.
    d_rpb = None if rpb is None else jnp.zeros_like(rpb, acc)
    normalizers = (None, None) if extra_r is None else (jnp.zeros_like(deltar), jnp.ones_like(deltar))
    dq, dk, dv, d_rpb, row_max, row_total = _walk(
        axes, step, (jnp.zeros_like(qr), jnp.zeros_like(kr), jnp.zeros_like(vr), d_rpb, *normalizers))
    dq, dk, dv = (_ungroup(x, p) for x in (dq, dk, dv))

    d_extra = (None, None)
    if extra_keys is not None:
        ek, ev = extra_keys.astype(acc), extra_values.astype(acc)
        row_max, row_total = (split_heads(_ungroup(x, p)[..., None], heads_kv) for x in (row_max, row_total))
        e = jnp.exp(s_extra - row_max) / jnp.where(row_total > 0, row_total, 1)
        split_do = split_heads(do, heads_kv)
        dp = jnp.einsum("bthgd,bnhd->bthgn", split_do, ev, precision=HIGHEST)
        ds = e * (dp - split_heads(delta[..., None], heads_kv))
        dq = dq + scale * extra_sum(ds, ek).reshape(dq.shape)
        d_extra = (jnp.einsum("bthgn,bthgd->bnhd", ds, split_heads(q, heads_kv), precision=HIGHEST),
                   jnp.einsum("bthgn,bthgd->bnhd", e, split_do, precision=HIGHEST))
    grads = (dq.astype(query.dtype), dk.astype(key.dtype), dv.astype(value.dtype),
             None if rpb is None else d_rpb.astype(rpb.dtype))
    return grads + tuple(None if x is None else x.astype(query.dtype) for x in d_extra)


@functools.partial(jax.custom_vjp, nondiff_argnums=(6, 7))
def _attention(query, key, value, rpb, extra_keys, extra_values, p: Plan, scale):
    return _forward(query, key, value, rpb, extra_keys, extra_values, p, scale)


def _attention_fwd(query, key, value, rpb, extra_keys, extra_values, p, scale):
    out, lse = _forward(query, key, value, rpb, extra_keys, extra_values, p, scale)
    return (out, lse), (query, key, value, rpb, extra_keys, extra_values, out, lse)


def _attention_bwd(p, scale, residuals, cotangents):
    d_out, d_lse = cotangents
    return _backward(*residuals, d_out, d_lse, p, scale)


_attention.defvjp(_attention_fwd, _attention_bwd)


def attention(query, key, value, nbhd: Neighborhood, scale, rpb=None,
              additional_keys=None, additional_values=None):
    """Neighborhood attention; returns `(out, lse)` (lse in the accumulation dtype)."""
    p = plan(query.shape[1:-2], nbhd, query.shape[-2] // key.shape[-2])
    return _attention(query, key, value, rpb, additional_keys, additional_values, p, float(scale))

