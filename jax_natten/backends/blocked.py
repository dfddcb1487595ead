"""Blocked, fused pure-JAX backend: neighborhood attention as dense tile matmuls with an online
softmax, on any platform.

Layout. The last spatial axis is regrouped into its dilation groups and cut into tiles of `tile`
in-group queries; the keys of each group are cut into blocks of `tile` keys, shifted left by
`pad` so that the keys of tile `t`'s windows (the union, the tile's key box) lie in blocks
`t .. t + box_blocks - 1`. The leading spatial axes (all but the last) are not tiled: like the
reference backend, the kernel walks their window slots, and each slot reads one key row per
query row. A step of the `lax.scan` takes `lead_slots` slots of the leading axes times
`step_blocks` blocks of the last axis: every query tile attends `lead_slots * step_blocks * tile`
keys as one matmul, masked by static tables built from `neighborhood.window`, and folds them
into a running max, sum and output (online softmax). Nothing of size tokens x window exists:
a step holds `tokens x chunk` scores, and the carries are the size of the queries.

Backward (custom_vjp) walks the same steps: recompute the step's scores, `p = exp(s - lse)`,
`ds = p * (dO.v - delta)` with `delta = rowsum(dO * O) - dLSE` (so a loss that uses the LSE gets
its gradient), `dQ += ds.k` in the carry, and the step's `dK`, `dV` go back through the transpose
of the step's key gather.

Tile rule (`plan`): the tile of the last axis is the candidate in `TILES` with the least
estimated cost, computed pairs on that axis times `1 + TILE_OVERHEAD / tile` (small matmuls run
below the machine's peak); a step then takes as many key blocks and leading slots as fit in
`CHUNK_KEYS` keys per query and `MAX_COPIES * tile` (a step's gathered keys and values are that
many times the size of K and V). Tile efficiency is attended pairs / computed pairs.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jax_natten.backends.extra_kv import accumulation_dtype
from jax_natten.neighborhood import Neighborhood, group_length, token_slot_tables, window

_HIGHEST = lax.Precision.HIGHEST

TILES = (8, 16, 32, 64, 128)
TILE_OVERHEAD = 16
CHUNK_KEYS = 128
MAX_COPIES = 2
# `backend=None` prefers this backend over the reference from this tile efficiency up: on a
# 2-core CPU its tile matmuls run at about 0.7 of XLA dense attention's FLOP rate and the
# reference's gathers at 0.15 to 0.25 (benchmarks/results/2026-12-01-cpu-blocked.md).
MIN_EFFICIENCY = 0.25


def _ceil_div(a, b):
    return -(-a // b)


@dataclasses.dataclass(frozen=True)
class Plan:
    """The tiling of one call (static, hashable)."""

    spatial_shape: tuple[int, ...]
    nbhd: Neighborhood
    tile: int
    pad: int
    box_blocks: int
    step_blocks: int
    lead_slots: int

    @property
    def length(self):
        return self.spatial_shape[-1]

    @property
    def groups(self):
        return self.nbhd.dilation[-1]

    @property
    def tiles(self):
        return _ceil_div(_ceil_div(self.length, self.groups), self.tile)

    @property
    def block_steps(self):
        return _ceil_div(self.box_blocks, self.step_blocks)

    @property
    def key_blocks(self):
        """Blocks of keys per group: every tile's box, padded to whole steps, fits."""
        return self.tiles + self.block_steps * self.step_blocks - 1

    @property
    def lead_nbhd(self):
        return Neighborhood(self.nbhd.kernel_size[:-1], self.nbhd.stride[:-1],
                            self.nbhd.dilation[:-1], self.nbhd.is_causal[:-1])

    @property
    def lead_steps(self):
        return _ceil_div(self.lead_nbhd.window_size, self.lead_slots)

    @property
    def steps(self):
        return self.lead_steps * self.block_steps

    @property
    def chunk(self):
        """Keys per query tile per step."""
        return self.lead_slots * self.step_blocks * self.tile

    def computed_pairs(self):
        lead_tokens = math.prod(self.spatial_shape[:-1])
        return lead_tokens * self.groups * self.tiles * self.tile * self.steps * self.chunk

    def attended_pairs(self):
        total = 1
        for length, params in zip(self.spatial_shape, self.nbhd.axes()):
            start, end = window(np.arange(length), length, *params)
            total *= int(np.sum(end - start))
        return total

    def efficiency(self):
        return self.attended_pairs() / self.computed_pairs()

    def __str__(self):
        return (f"blocked tiles: {self.tile} queries of the last axis x {self.groups} dilation "
                f"group(s), key box {self.box_blocks} block(s) of {self.tile}, {self.steps} step(s) "
                f"of {self.chunk} keys; tile efficiency {self.efficiency():.2f} "
                "(attended pairs / computed pairs)")


def _last_axis_bounds(length, params, tile):
    """Per group: in-group length and the window `[a, b)` of each in-group query."""
    _, _, dilation, _ = params
    bounds = []
    for g in range(dilation):
        lg = int(group_length(length, dilation, g))
        start, end = window(np.arange(lg) * dilation + g, length, *params)
        bounds.append((lg, start, end))
    return bounds


def _box(bounds, tile):
    """(pad, box_blocks): blocks of `tile` keys from `t * tile - pad` cover tile `t`'s windows."""
    pad, box_end = 0, 0
    for lg, start, end in bounds:
        for t in range(_ceil_div(lg, tile)):
            lo, hi = start[t * tile:(t + 1) * tile].min(), end[t * tile:(t + 1) * tile].max()
            pad = max(pad, t * tile - int(lo))
            box_end = max(box_end, int(hi) - t * tile)
    return pad, _ceil_div(pad + box_end, tile)


def plan(spatial_shape, nbhd: Neighborhood, tile=None) -> Plan:
    """The tiling `attention` uses for this problem (the tile rule of the module docstring)."""
    spatial_shape = tuple(spatial_shape)
    length, params = spatial_shape[-1], list(nbhd.axes())[-1]
    group_max = _ceil_div(length, params[2])
    if tile is None:
        candidates = [t for t in TILES if t < 2 * group_max] or [TILES[0]]

        def cost(t):
            pad, blocks = _box(_last_axis_bounds(length, params, t), t)
            return _ceil_div(group_max, t) * t * blocks * t * (1 + TILE_OVERHEAD / t)

        tile = min(candidates, key=cost)
    pad, box_blocks = _box(_last_axis_bounds(length, params, tile), tile)
    # A step's gathered keys are `chunk / tile` times the size of K: at most MAX_COPIES.
    fit = max(1, min(CHUNK_KEYS, MAX_COPIES * tile) // tile)
    step_blocks = max(b for b in range(1, min(fit, box_blocks) + 1) if box_blocks % b == 0)
    lead_window = math.prod(nbhd.kernel_size[:-1])
    room = max(1, min(CHUNK_KEYS, MAX_COPIES * tile) // (step_blocks * tile))
    # The most leading slots per step that pads the slot count by at most a tenth.
    lead_slots = max(m for m in range(1, min(room, lead_window) + 1)
                     if _ceil_div(lead_window, m) * m <= 1.1 * lead_window)
    return Plan(spatial_shape, nbhd, tile, pad, box_blocks, step_blocks, lead_slots)


@dataclasses.dataclass(frozen=True)
class _Tables:
    """Static index and mask tables of a plan (NumPy)."""

    query_index: np.ndarray   # [groups * tiles * tile]: last-axis position of each tiled query (length = pad)
    output_index: np.ndarray  # [length]: tiled slot of each query
    key_index: np.ndarray     # [groups * key_blocks * tile]: last-axis position of each blocked key
    last_mask: np.ndarray     # [block_steps, groups, tiles, tile, step_blocks * tile]
    last_bias: np.ndarray     # same shape: offset into the last axis of the bias table
    lead_keys: np.ndarray     # [lead_steps, lead_tokens, lead_slots]: flat key row per query row
    lead_valid: np.ndarray    # same shape
    lead_bias: np.ndarray     # same shape: flat offset into the leading axes of the bias table


@functools.lru_cache(maxsize=64)
def _tables(p: Plan) -> _Tables:
    length, params = p.length, list(p.nbhd.axes())[-1]
    k, d = params[0], params[2]
    width = p.block_steps * p.step_blocks * p.tile
    query_index = np.full((d, p.tiles * p.tile), length)
    key_index = np.full((d, p.key_blocks * p.tile), length)
    output_index = np.zeros(length, np.int64)
    mask = np.zeros((d, p.tiles * p.tile, width), bool)
    bias = np.zeros((d, p.tiles * p.tile, width), np.int64)
    for g, (lg, start, end) in enumerate(_last_axis_bounds(length, params, p.tile)):
        u = np.arange(lg)
        query_index[g, :lg] = u * d + g
        output_index[u * d + g] = g * p.tiles * p.tile + u
        v = np.arange(p.key_blocks * p.tile) - p.pad
        inside = (v >= 0) & (v < lg)
        key_index[g, inside] = v[inside] * d + g
        # Key `j` of tile `t`'s box is in-group key `t * tile - pad + j`.
        box = (u // p.tile * p.tile - p.pad)[:, None] + np.arange(width)[None, :]
        mask[g, :lg] = (box >= start[:, None]) & (box < end[:, None])
        bias[g, :lg] = np.clip(box - u[:, None] + k - 1, 0, 2 * k - 2)
    shape = (d, p.tiles, p.tile, p.block_steps, p.step_blocks * p.tile)
    last_mask = np.moveaxis(mask.reshape(shape), 3, 0)
    last_bias = np.moveaxis(bias.reshape(shape), 3, 0)

    lead_shape = p.spatial_shape[:-1]
    keys, valid, lead_bias = token_slot_tables(lead_shape, p.lead_nbhd)
    padded = p.lead_steps * p.lead_slots
    extra = padded - keys.shape[1]
    keys, lead_bias = (np.pad(x, ((0, 0), (0, extra))) for x in (keys, lead_bias))
    valid = np.pad(valid, ((0, 0), (0, extra)))
    per_step = lambda x: np.moveaxis(x.reshape(x.shape[0], p.lead_steps, p.lead_slots), 1, 0)
    return _Tables(query_index.reshape(-1).astype(np.int32), output_index.astype(np.int32),
                   key_index.reshape(-1).astype(np.int32), last_mask, last_bias.astype(np.int32),
                   per_step(keys).astype(np.int32), per_step(valid), per_step(lead_bias).astype(np.int32))


# ---------------------------------------------------------------------------------------------
# Layouts. Queries: [batch, lead_tokens, groups, tiles, heads_kv, group, tile, dim].
# Blocked keys: [batch, lead_tokens, groups, key_blocks, tile, heads_kv, dim].
# ---------------------------------------------------------------------------------------------


def _take_last_axis(x, index, rank):
    """Gather along the last spatial axis, leading spatial axes flattened: `[batch, lead, n, ...]`."""
    x = x.reshape((x.shape[0], -1) + x.shape[rank:])
    return jnp.take(x, jnp.asarray(index), axis=2, mode="fill", fill_value=0)


def _query_layout(x, p: Plan, heads_kv):
    """`[batch, *spatial, heads, dim]` (dim may be absent: pass `x[..., None]`) -> query tiles."""
    t = _take_last_axis(x, _tables(p).query_index, p.nbhd.rank)
    b, lead, _, heads, dim = t.shape
    t = t.reshape(b, lead, p.groups, p.tiles, p.tile, heads_kv, heads // heads_kv, dim)
    return t.transpose(0, 1, 2, 3, 5, 6, 4, 7)


def _from_query_layout(t, p: Plan, out_shape):
    b, lead, _, _, heads_kv, group, _, dim = t.shape
    t = t.transpose(0, 1, 2, 3, 6, 4, 5, 7).reshape(b, lead, -1, heads_kv * group, dim)
    return jnp.take(t, jnp.asarray(_tables(p).output_index), axis=2).reshape(out_shape)


def _key_layout(x, p: Plan):
    t = _take_last_axis(x, _tables(p).key_index, p.nbhd.rank)
    b, lead, _, heads_kv, dim = t.shape
    return t.reshape(b, lead, p.groups, p.key_blocks, p.tile, heads_kv, dim)


def _chunk(blocks, p: Plan, rows, block_step):
    """The keys of one step for every query tile: `[batch, lead, groups, tiles, heads_kv, chunk, dim]`.

    Block step `c` gives tile `t` blocks `t + c * step_blocks + j`; `rows` `[lead, lead_slots]`
    picks the key row of each query row and slot."""
    first = block_step * p.step_blocks
    window_blocks = lax.dynamic_slice_in_dim(blocks, first, p.tiles + p.step_blocks - 1, axis=3)
    shifted = jnp.stack([window_blocks[:, :, :, j:j + p.tiles] for j in range(p.step_blocks)], axis=4)
    gathered = jnp.take(shifted, rows, axis=1)  # [b, lead, slots, groups, tiles, sb, tile, hkv, d]
    b, lead, slots, g, t, sb, tile, hkv, dim = gathered.shape
    return gathered.transpose(0, 1, 3, 4, 7, 2, 5, 6, 8).reshape(b, lead, g, t, hkv, slots * sb * tile, dim)


def _step_tables(p: Plan):
    """Per-step tables stacked for `lax.scan`: block step, key rows, mask, bias offsets."""
    tab = _tables(p)
    lead_step, block_step = np.divmod(np.arange(p.steps), p.block_steps)
    rows = tab.lead_keys[lead_step]                                   # [steps, lead, slots]
    # Mask and bias: [steps, lead, groups, tiles, tile, chunk] (chunk = slots x step keys).
    mask = tab.lead_valid[lead_step][:, :, None, None, None, :, None] & \
        tab.last_mask[block_step][:, None, :, :, :, None, :]
    width = 2 * p.nbhd.kernel_size[-1] - 1
    bias = tab.lead_bias[lead_step][:, :, None, None, None, :, None] * width + \
        tab.last_bias[block_step][:, None, :, :, :, None, :]
    shape = mask.shape[:5] + (p.chunk,)
    return block_step.astype(np.int32), rows, mask.reshape(shape), bias.reshape(shape)


def _step_bias(rpb, offsets, heads_kv):
    """`[lead, groups, tiles, heads_kv, group, tile, chunk]` bias of one step."""
    table = rpb.reshape(rpb.shape[0], -1)[:, offsets]                # [heads, lead, g, t, tile, chunk]
    table = table.reshape((heads_kv, -1) + table.shape[1:])
    return jnp.moveaxis(table, (0, 1), (3, 4))


def _scores(q, kc, mask, bias, scale, acc):
    s = scale * jnp.einsum("brgthpqd,brgthcd->brgthpqc", q, kc, precision=_HIGHEST,
                           preferred_element_type=acc)
    if bias is not None:
        s = s + bias.astype(acc)
    return jnp.where(mask[:, :, :, None, None], s, -jnp.inf)


def _extra_scores(q, extra_keys, scale, acc):
    return scale * jnp.einsum("brgthpqd,bnhd->brgthpqn", q, extra_keys.astype(acc), precision=_HIGHEST,
                              preferred_element_type=acc)


def _finite(x):
    return jnp.where(jnp.isfinite(x), x, 0)


def _forward(query, key, value, rpb, extra_keys, extra_values, p: Plan, scale):
    acc = accumulation_dtype(query.dtype)
    heads_kv = key.shape[-2]
    q = _query_layout(query.astype(acc), p, heads_kv)
    kb, vb = _key_layout(key.astype(acc), p), _key_layout(value.astype(acc), p)
    block_step, rows, mask, bias = _step_tables(p)

    shape = q.shape[:-1]
    zeros = jnp.zeros_like(q, shape=shape) + jnp.zeros_like(kb, shape=shape)
    if extra_keys is None:
        m, l = zeros - jnp.inf, zeros
        o = jnp.zeros_like(q, shape=shape + vb.shape[-1:]) + jnp.zeros_like(vb, shape=shape + vb.shape[-1:])
    else:
        s = _extra_scores(q, extra_keys, scale, acc)
        m = s.max(-1)
        e = jnp.exp(s - m[..., None])
        l = e.sum(-1)
        o = jnp.einsum("brgthpqn,bnhd->brgthpqd", e, extra_values.astype(acc), precision=_HIGHEST)

    def step(carry, xs):
        m, l, o = carry
        c, r, mk, bs = xs
        kc, vc = _chunk(kb, p, r, c), _chunk(vb, p, r, c)
        s = _scores(q, kc, mk, None if rpb is None else _step_bias(rpb, bs, heads_kv), scale, acc)
        m_new = jnp.maximum(m, s.max(-1))
        m_safe = _finite(m_new)
        e = jnp.exp(s - m_safe[..., None])
        correction = jnp.exp(m - m_safe)
        l = l * correction + e.sum(-1)
        o = o * correction[..., None] + jnp.einsum("brgthpqc,brgthcd->brgthpqd", e, vc, precision=_HIGHEST)
        return (m_new, l, o), None

    (m, l, o), _ = lax.scan(step, (m, l, o), tuple(map(jnp.asarray, (block_step, rows, mask, bias))))
    o = o / jnp.where(l > 0, l, 1)[..., None]
    lse = m + jnp.log(l)
    out = _from_query_layout(o, p, query.shape[:-1] + value.shape[-1:]).astype(query.dtype)
    lse = _from_query_layout(lse[..., None], p, query.shape[:-1])
    return out, lse


def _backward(query, key, value, rpb, extra_keys, extra_values, out, lse, d_out, d_lse, p: Plan, scale):
    acc = accumulation_dtype(query.dtype)
    heads_kv = key.shape[-2]
    q, q_transpose = jax.vjp(lambda x: _query_layout(x, p, heads_kv), query.astype(acc))
    kb, k_transpose = jax.vjp(lambda x: _key_layout(x, p), key.astype(acc))
    vb, v_transpose = jax.vjp(lambda x: _key_layout(x, p), value.astype(acc))
    do = _query_layout(d_out.astype(acc), p, heads_kv)
    delta = jnp.sum(d_out.astype(acc) * out.astype(acc), -1) - d_lse.astype(acc)
    delta = _query_layout(delta[..., None], p, heads_kv)[..., 0]
    lse_t = _finite(_query_layout(lse[..., None], p, heads_kv)[..., 0])
    block_step, rows, mask, bias = _step_tables(p)

    d_extra = (None, None)
    dq = jnp.zeros_like(q)
    if extra_keys is not None:
        e = jnp.exp(_extra_scores(q, extra_keys, scale, acc) - lse_t[..., None])
        dp = jnp.einsum("brgthpqd,bnhd->brgthpqn", do, extra_values.astype(acc), precision=_HIGHEST)
        ds = e * (dp - delta[..., None])
        dq = scale * jnp.einsum("brgthpqn,bnhd->brgthpqd", ds, extra_keys.astype(acc), precision=_HIGHEST)
        d_extra = (scale * jnp.einsum("brgthpqn,brgthpqd->bnhd", ds, q, precision=_HIGHEST),
                   jnp.einsum("brgthpqn,brgthpqd->bnhd", e, do, precision=_HIGHEST))

    def step(carry, xs):
        dq, dkb, dvb, drpb = carry
        c, r, mk, bs = xs
        kc, k_back = jax.vjp(lambda x: _chunk(x, p, r, c), kb)
        vc, v_back = jax.vjp(lambda x: _chunk(x, p, r, c), vb)
        if rpb is None:
            step_bias = None
        else:
            step_bias, bias_back = jax.vjp(lambda t: _step_bias(t, bs, heads_kv), rpb.astype(acc))
        s = _scores(q, kc, mk, step_bias, scale, acc)
        e = jnp.exp(s - lse_t[..., None])
        dp = jnp.einsum("brgthpqd,brgthcd->brgthpqc", do, vc, precision=_HIGHEST)
        ds = e * (dp - delta[..., None])
        dq = dq + scale * jnp.einsum("brgthpqc,brgthcd->brgthpqd", ds, kc, precision=_HIGHEST)
        dkb = dkb + k_back(scale * jnp.einsum("brgthpqc,brgthpqd->brgthcd", ds, q, precision=_HIGHEST))[0]
        dvb = dvb + v_back(jnp.einsum("brgthpqc,brgthpqd->brgthcd", e, do, precision=_HIGHEST))[0]
        if rpb is not None:
            drpb = drpb + bias_back(ds.sum(0))[0]
        return (dq, dkb, dvb, drpb), None

    drpb = None if rpb is None else jnp.zeros(rpb.shape, acc)
    carry = (dq, jnp.zeros_like(kb), jnp.zeros_like(vb), drpb)
    (dq, dkb, dvb, drpb), _ = lax.scan(step, carry, tuple(map(jnp.asarray, (block_step, rows, mask, bias))))
    grads = (q_transpose(dq)[0].astype(query.dtype), k_transpose(dkb)[0].astype(key.dtype),
             v_transpose(dvb)[0].astype(value.dtype), None if rpb is None else drpb.astype(rpb.dtype))
    d_extra = tuple(None if x is None else x.astype(query.dtype) for x in d_extra)
    return grads + d_extra


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
    p = plan(query.shape[1:-2], nbhd)
    return _attention(query, key, value, rpb, additional_keys, additional_values, p, float(scale))
