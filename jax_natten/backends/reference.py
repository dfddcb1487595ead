"""Pure-JAX reference backend: exact SPEC semantics on any platform, differentiable by autodiff.

Memory stays O(tokens x window): a `lax.scan` walks the window's slots, and each step gathers
the one key (or value) that every query reads at that slot. The step is rematerialized so that
autodiff keeps no gathered copy of K or V per slot. Inside, arrays have flattened tokens and
split heads, `[batch, tokens, heads_kv, group, dim]`: query head `h` is `(h // group, h % group)`
and reads key/value head `h // group`, as SPEC's GQA rule says.
"""

from __future__ import annotations

import functools
import operator

import jax
import jax.numpy as jnp
from jax import lax

from jax_natten.backends.extra_kv import HIGHEST, accumulation_dtype, extra_logits, extra_sum, split_heads
from jax_natten.neighborhood import Neighborhood, axis_neighbors


class Slots:
    """The slot tables of one call; slot `t` is row-major over the per-axis kernel offsets."""

    def __init__(self, spatial_shape, nbhd: Neighborhood):
        self.shape = tuple(spatial_shape)
        self.kernel_size = nbhd.kernel_size
        self.any_causal = nbhd.any_causal
        tables = [axis_neighbors(length, *params) for length, params in zip(self.shape, nbhd.axes())]
        self.keys = [t.keys for t in tables]
        self.valid = [t.valid for t in tables]
        self.rpb_index = [t.rpb_index for t in tables]

    def _columns(self, tables, slot):
        """Column of each axis' table at `slot`, shaped to broadcast over the spatial axes."""
        rank = len(self.shape)
        columns = []
        for axis, (table, k) in enumerate(zip(tables, self.kernel_size)):
            offset = (slot // functools.reduce(operator.mul, self.kernel_size[axis + 1:], 1)) % k
            column = jnp.take(jnp.asarray(table), offset, axis=1)
            columns.append(column.reshape((-1,) + (1,) * (rank - 1 - axis)))
        return columns

    def _flat(self, x):
        return jnp.broadcast_to(x, self.shape).reshape(-1)

    def key_index(self, slot):
        """Flat token index of the key every query reads at `slot`, `[tokens]`."""
        flat = 0
        for column, length in zip(self._columns(self.keys, slot), self.shape):
            flat = flat * length + column
        return self._flat(flat)

    def is_valid(self, slot):
        """Whether `slot` holds a key, `[tokens]` (only causal windows leave slots empty)."""
        return self._flat(functools.reduce(operator.and_, self._columns(self.valid, slot)))

    def bias(self, rpb, slot):
        """Relative positional bias at `slot`, `[tokens, heads]`."""
        table = rpb[(slice(None), *self._columns(self.rpb_index, slot))]
        return table.reshape(rpb.shape[0], -1).T


def flat_tokens(x):
    """`[batch, *spatial, heads_kv, dim]` -> `[batch, tokens, heads_kv, dim]`."""
    return x.reshape(x.shape[0], -1, *x.shape[-2:])


def _gather_tokens(x, index):
    return jnp.take(x, index, axis=1, mode="clip")


def neighbor_logits(q, k, slots: Slots, scale, rpb):
    """`scale * q.k (+ rpb)` per slot, `[batch, tokens, heads_kv, group, window]`; empty slots -inf."""
    acc = accumulation_dtype(q.dtype)
    window = functools.reduce(operator.mul, slots.kernel_size)

    @jax.checkpoint
    def step(_, slot):
        k_slot = _gather_tokens(k, slots.key_index(slot))
        logits = scale * jnp.einsum("bthgd,bthd->bthg", q, k_slot, precision=HIGHEST,
                                    preferred_element_type=acc)
        if rpb is not None:
            logits = logits + slots.bias(rpb, slot).astype(acc).reshape(logits.shape[1:])
        if slots.any_causal:
            logits = jnp.where(slots.is_valid(slot)[:, None, None], logits, -jnp.inf)
        return None, logits

    _, logits = lax.scan(step, None, jnp.arange(window))
    return jnp.moveaxis(logits, 0, -1)


def neighbor_sum(weights, v, slots: Slots):
    """`sum_t weights[..., t] * v[key_t]`, weights `[batch, tokens, heads_kv, group, window]`."""
    acc = weights.dtype
    window = weights.shape[-1]

    @jax.checkpoint
    def step(out, xs):
        slot, w_slot = xs
        if slots.any_causal:
            w_slot = jnp.where(slots.is_valid(slot)[:, None, None], w_slot, 0)
        v_slot = _gather_tokens(v, slots.key_index(slot))
        return out + jnp.einsum("bthg,bthd->bthgd", w_slot, v_slot, precision=HIGHEST,
                                preferred_element_type=acc), None

    # Zeros that vary over shard_map's mesh axes like both operands: scan needs the carry's
    # input and output types to match.
    shape = weights.shape[:-1] + v.shape[-1:]
    init = jnp.zeros_like(weights, shape=shape) + jnp.zeros_like(v, shape=shape, dtype=acc)
    out, _ = lax.scan(step, init, (jnp.arange(window), jnp.moveaxis(weights, -1, 0)))
    return out


def softmax_with_lse(logits):
    """(logsumexp, softmax) over the last axis. The weights are normalized by their sum, not as
    `exp(logits - lse)`: at scores near 1e4 the float32 LSE is off by up to half an ulp (~5e-4),
    which `exp(logits - lse)` would turn into a 5e-4 relative error in every weight."""
    top = lax.stop_gradient(jnp.max(logits, axis=-1, keepdims=True))  # finite: no query attends to nothing
    weights = jnp.exp(logits - top)
    total = jnp.sum(weights, axis=-1, keepdims=True)
    return (top + jnp.log(total))[..., 0], weights / total


def attention(query, key, value, nbhd: Neighborhood, scale, rpb=None,
              additional_keys=None, additional_values=None):
    """Neighborhood attention; returns `(out, lse)` (lse in the accumulation dtype)."""
    slots = Slots(query.shape[1:-2], nbhd)
    logits = neighbor_logits(split_heads(query, key.shape[-2]), flat_tokens(key), slots, scale, rpb)
    if additional_keys is not None:
        logits = jnp.concatenate([logits, extra_logits(query, additional_keys, scale)], axis=-1)
    lse, probs = softmax_with_lse(logits)
    window = nbhd.window_size
    out = neighbor_sum(probs[..., :window], flat_tokens(value), slots)
    if additional_values is not None:
        out = out + extra_sum(probs[..., window:], additional_values)
    out = out.reshape(query.shape[:-1] + value.shape[-1:]).astype(query.dtype)
    return out, lse.reshape(query.shape[:-1])


def qk(query, key, nbhd: Neighborhood, rpb=None):
    """PN: `[batch, *spatial, heads, window]` logits `q.k (+ rpb)`, -inf in empty causal slots."""
    slots = Slots(query.shape[1:-2], nbhd)
    logits = neighbor_logits(split_heads(query, key.shape[-2]), flat_tokens(key), slots, 1.0, rpb)
    return logits.reshape(query.shape[:-1] + (nbhd.window_size,)).astype(query.dtype)


def av(attn, value, nbhd: Neighborhood):
    """NN: `[batch, *spatial, heads, head_dim_v]` weighted sums; empty causal slots are ignored."""
    slots = Slots(attn.shape[1:-2], nbhd)
    weights = split_heads(attn, value.shape[-2]).astype(accumulation_dtype(attn.dtype))
    out = neighbor_sum(weights, flat_tokens(value), slots)
    return out.reshape(attn.shape[:-1] + value.shape[-1:]).astype(attn.dtype)
