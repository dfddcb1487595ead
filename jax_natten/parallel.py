"""Spatial (context) parallelism: neighborhood attention on inputs split along their first
spatial axis over a mesh axis, with halo exchanges (`lax.ppermute`) of the neighborhood radius.

Why the result is exact (stride 1 on the split axis; SPEC's window rule, neighborhood.py):
a query at global position `i` in dilation group `g = i % d`, in-group coordinate `u = i // d`,
reads the in-group window starting at `clip(u - k//2, 0, Lg - k)` (causal: `[max(u-k+1, 0), u]`),
so every key it reads lies within `h = (k-1)*d` tokens of it. Each shard runs the ordinary
single-device attention on a block `[A, B)` of the global axis made of its own tokens and halos:

- `A` is a multiple of `d` (the shard length is, and so is `h`), so a token's dilation group and
  in-group coordinate in the block are its global ones shifted by `A/d`; the relative bias index
  `v - u + k - 1` is shift-invariant.
- Either `A = 0`, or the block holds the `h` tokens before the shard (`k-1` per group): then every
  own query has `k-1` in-group predecessors both globally and in the block, and the lower clip
  (at 0) is inactive in both. Likewise either `B` is the global end (the upper clip bound
  `Lg - k` is the same after the shift), or the block holds `h` tokens after the shard and the
  upper clip is inactive in both. So each own query gets its global window, shifted, and all of
  its keys are in the block.

The edge shards therefore leave out the halo beyond the global border (their block ends there),
which makes three block shapes; `lax.switch` on the shard index picks the one of this shard.
Causal windows never look ahead: they take only the left halo. The queries in a halo are zeros
and their outputs are dropped, so only keys and values travel: per shard `h` tokens from each
neighbor in the forward pass, and the same halos of dK and dV back in the backward pass.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax
from jax.sharding import PartitionSpec as P

from jax_natten import checks, functional


def _split_axis_halo(query, kernel_size, stride, dilation, is_causal, shards):
    """`(halo, is_causal)` of the split axis; ValueError when it cannot be split this way."""
    local = query.shape[1]
    global_shape = (local * shards,) + tuple(query.shape[2:-2])
    nbhd = checks.neighborhood(global_shape, kernel_size, stride, dilation, is_causal)
    k, s, d, causal = next(iter(nbhd.axes()))
    if s != 1:
        raise ValueError(f"stride={stride!r}: the split (first spatial) axis has stride {s}; "
                         "spatial sharding needs stride 1 on it.")
    if local % d:
        raise ValueError(f"dilation={dilation!r}: the shard length {local} of the first spatial axis "
                         f"is not a multiple of its dilation {d}; shards must keep whole dilation groups.")
    halo = (k - 1) * d
    if halo > local:
        raise ValueError(f"kernel_size={kernel_size!r}, dilation={dilation!r}: the halo "
                         f"(kernel_size-1)*dilation = {halo} is wider than the shard length {local} "
                         f"of the first spatial axis ({shards} shards); use fewer shards.")
    return halo, causal


def halo_attention(query, key, value, kernel_size, axis_name, stride=1, dilation=1, is_causal=False,
                   scale=None, additional_keys=None, additional_values=None, rpb=None,
                   return_lse=False, backend=None):
    """`neighborhood_attention` for use inside `shard_map`: `query`, `key` and `value` are this
    shard's blocks of the first spatial axis, split in order over mesh axis `axis_name`; the other
    arguments are as in `neighborhood_attention` (additional tokens and bias whole on every shard).
    Returns this shard's block of the output (and of the LSE)."""
    shards = lax.axis_size(axis_name)

    def attend(q, k, v):
        return functional.neighborhood_attention(
            q, k, v, kernel_size, stride, dilation, is_causal, scale, additional_keys,
            additional_values, rpb, return_lse=True, backend=backend)

    if shards == 1:
        out, lse = attend(query, key, value)
        return (out, lse) if return_lse else out
    halo, causal = _split_axis_halo(query, kernel_size, stride, dilation, is_causal, shards)
    local = query.shape[1]
    to_next = [(i, i + 1) for i in range(shards - 1)]
    to_previous = [(i + 1, i) for i in range(shards - 1)]

    def from_previous(x):
        return lax.ppermute(x[:, local - halo:], axis_name, to_next)

    def from_next(x):
        return lax.ppermute(x[:, :halo], axis_name, to_previous)

    blank = jnp.zeros_like(query[:, :halo])
    left = [blank, from_previous(key), from_previous(value)]
    right = None if causal else [blank, from_next(key), from_next(value)]
    own = [query, key, value]

    def keep(start):
        def run(*blocks):
            out, lse = attend(*blocks)
            return out[:, start:start + local], lse[:, start:start + local]
        return run

    def concat(*parts):
        return [jnp.concatenate(xs, axis=1) for xs in zip(*parts)]

    index = lax.axis_index(axis_name)
    if causal:
        first, rest = keep(0), keep(halo)
        out, lse = lax.cond(index == 0, lambda: first(*own), lambda: rest(*concat(left, own)))
    else:
        branches = [lambda: keep(0)(*concat(own, right)),
                    lambda: keep(halo)(*concat(left, own, right)),
                    lambda: keep(halo)(*concat(left, own))]
        branch = jnp.where(index == 0, 0, jnp.where(index == shards - 1, 2, 1))
        out, lse = lax.switch(branch, branches)
    return (out, lse) if return_lse else out


def spatially_sharded_attention(query, key, value, kernel_size, mesh, axis_name, stride=1, dilation=1,
                                is_causal=False, scale=None, additional_keys=None, additional_values=None,
                                rpb=None, return_lse=False, backend=None):
    """`neighborhood_attention` with the first spatial axis split over mesh axis `axis_name`
    (`halo_attention` under `shard_map`); other axes and the additional tokens and bias are
    replicated. The first spatial axis' length must divide by the mesh axis' size."""
    shards = mesh.shape[axis_name]
    if query.shape[1] % shards:
        raise ValueError(f"axis_name={axis_name!r}: the first spatial axis has length {query.shape[1]}, "
                         f"not divisible by the {shards} shards of the mesh axis.")
    split = P(None, axis_name)

    def body(q, k, v, extra_keys, extra_values, bias):
        return halo_attention(q, k, v, kernel_size, axis_name, stride, dilation, is_causal, scale,
                              extra_keys, extra_values, bias, return_lse=True, backend=backend)

    out, lse = jax.shard_map(body, mesh=mesh, in_specs=(split, split, split, P(), P(), P()),
                             out_specs=(split, split))(query, key, value, additional_keys, additional_values, rpb)
    return (out, lse) if return_lse else out
