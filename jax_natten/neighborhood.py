"""The neighborhood of docs/semantics.md: the one place in Python where the window rule lives.

The rule is written once over an array namespace: on NumPy arrays (static tables, computed at
trace time from Python integers) or on jax arrays, traced ones included (masks and index maps
computed inside `jit`); the functions that take positions follow their type, the table builders
take `xp`. `window` also takes traced lengths, kernel sizes, strides and dilations (not
`is_causal`); the table builders need them static, as their shapes depend on them. Every
backend, the benchmark and the CUDA wrappers take their windows from this module; the C++ twin
is `cuda/include/jax_natten/neighborhood.h`.

Coordinates: a query `i` on an axis of length `L` with dilation `d` lies in dilation group
`g = i % d` at in-group coordinate `u = i // d`. Windows are half-open ranges `[a, b)` of
in-group key coordinates; key `v` of group `g` is the position `v * d + g`.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True)
class Neighborhood:
    """Validated per-axis parameters of one neighborhood attention call (hashable, static)."""

    kernel_size: tuple[int, ...]
    stride: tuple[int, ...]
    dilation: tuple[int, ...]
    is_causal: tuple[bool, ...]

    @property
    def rank(self) -> int:
        return len(self.kernel_size)

    @property
    def window_size(self) -> int:
        """Slots per query: `prod(kernel_size)` (causal windows leave some slots empty)."""
        return math.prod(self.kernel_size)

    @property
    def any_causal(self) -> bool:
        return any(self.is_causal)

    def axes(self):
        """Per-axis `(kernel_size, stride, dilation, is_causal)` tuples."""
        return zip(self.kernel_size, self.stride, self.dilation, self.is_causal)


def array_namespace(x):
    """`jax.numpy` for jax arrays (traced or not), NumPy for anything else."""
    return jnp if isinstance(x, jax.Array) else np


def group_length(length: int, dilation: int, group):
    """Length of dilation group `group` on an axis of `length` (the first `length % d` are longer)."""
    return length // dilation + (group < length % dilation)


def window(position, length: int, kernel_size: int, stride: int, dilation: int, is_causal: bool):
    """In-group window `[a, b)` of the queries at `position` (int array) on one axis."""
    xp = array_namespace(position)
    position = xp.asarray(position)
    group = position % dilation
    u = position // dilation
    lg = group_length(length, dilation, group)
    if is_causal:
        leader = xp.minimum(stride * (u // stride) + stride - 1, lg - 1)
        start = xp.maximum(leader - kernel_size + 1, 0)
        return start, u + 1
    leader = xp.minimum(stride * (u // stride) + stride // 2, lg - 1)
    start = xp.clip(leader - kernel_size // 2, 0, lg - kernel_size)
    return start, start + kernel_size


@dataclasses.dataclass(frozen=True)
class AxisNeighbors:
    """Slot tables of one axis, each `[length, kernel_size]`: slot `t` of query `i` is key
    `keys[i, t]` when `valid[i, t]` (causal windows leave trailing slots empty; their `keys`
    entry is the query itself so that gathers stay in range)."""

    keys: np.ndarray
    valid: np.ndarray
    rpb_index: np.ndarray


def axis_neighbors(length, kernel_size, stride, dilation, is_causal, xp=np) -> AxisNeighbors:
    position = xp.arange(length)
    start, end = window(position, length, kernel_size, stride, dilation, is_causal)
    v = start[:, None] + xp.arange(kernel_size)[None, :]
    valid = v < end[:, None]
    keys = xp.where(valid, v * dilation + (position % dilation)[:, None], position[:, None])
    rpb_index = v - (position // dilation)[:, None] + kernel_size - 1
    return AxisNeighbors(keys.astype(xp.int32), valid, rpb_index.astype(xp.int32))


def inverse_window(position, length, kernel_size, stride, dilation, is_causal):
    """In-group range `[first, end)` of the queries whose window holds the key at `position`.

    Window starts and ends never decrease along a group, so these queries are contiguous; the
    backward pass (dK, dV) sums over exactly them.
    """
    xp = array_namespace(position)
    position = xp.asarray(position)
    v = position // dilation
    first = end = xp.zeros_like(position)
    for g in range(dilation):
        starts, ends = window(xp.arange(g, length, dilation), length, kernel_size, stride, dilation, is_causal)
        in_group = position % dilation == g
        first = xp.where(in_group, xp.searchsorted(ends, v, side="right"), first)
        end = xp.where(in_group, xp.searchsorted(starts, v, side="right"), end)
    return first.astype(position.dtype), end.astype(position.dtype)


def token_slot_tables(spatial_shape, nbhd: Neighborhood, xp=np):
    """N-D slot tables over flat tokens, each `[tokens, window]`: the flat key token, whether the
    slot holds a key, and the flat offset into a `[2k_1-1, ..., 2k_n-1]` bias table."""
    rank = len(spatial_shape)
    keys, valid, bias = xp.zeros((), int), xp.ones((), bool), xp.zeros((), int)
    for axis, (length, params) in enumerate(zip(spatial_shape, nbhd.axes())):
        table = axis_neighbors(length, *params, xp=xp)
        # Axis `axis` varies along token axis `axis` and slot axis `rank + axis`.
        shape = [1] * (2 * rank)
        shape[axis], shape[rank + axis] = length, params[0]
        keys = keys * length + table.keys.reshape(shape)
        valid = valid & table.valid.reshape(shape)
        bias = bias * (2 * params[0] - 1) + table.rpb_index.reshape(shape)
    full = tuple(spatial_shape) + nbhd.kernel_size
    tokens = math.prod(spatial_shape)
    return tuple(xp.broadcast_to(x, full).reshape(tokens, nbhd.window_size) for x in (keys, valid, bias))


def attended_keys(spatial_shape, nbhd: Neighborhood, query) -> np.ndarray:
    """Boolean mask of `spatial_shape`: the keys that the query at coordinates `query` attends
    (the product of its per-axis windows)."""
    mask = np.ones((), bool)
    for length, position, params in zip(spatial_shape, query, nbhd.axes()):
        table = axis_neighbors(length, *params)
        on_axis = np.zeros(length, bool)
        on_axis[table.keys[position][table.valid[position]]] = True
        mask = mask[..., None] & on_axis
    return mask
