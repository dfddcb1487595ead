"""PN, NN, IN and the fused forward in pure JAX with the contracts of the FFI kernels
(`jax_natten.primitives`), leading axes folded into batch like the FFI handlers:
`Operators(JnpShards())` in an `UnfusedBackend` (or under a `FusedBackend`) runs the kernel
backends' custom_vjp, vmap and sharding rules on any device."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jax_natten.backends import reference
from jax_natten.backends.extra_kv import accumulation_dtype, split_heads
from jax_natten.backends.reference import Slots, flat_tokens, neighbor_logits, neighbor_sum
from jax_natten.neighborhood import Neighborhood, token_slot_tables


def _fold_batch(x, nbhd: Neighborhood):
    """All axes before the spatial ones folded into one batch axis."""
    return x.reshape((-1,) + x.shape[x.ndim - nbhd.rank - 2:])


class JnpShards:
    """`pn`, `nn`, `inverse` and `fused_forward` of `primitives.FfiShards`, in jnp."""

    def unavailable_reason(self, jax_platform=None, capability=None):
        """None: jnp runs on every platform."""
        return None

    # `custom_partitioning` takes no closed-over constants (the slot tables): each operator traces
    # inside its own jit, whose jaxpr keeps them.
    @functools.partial(jax.jit, static_argnums=(0, 4, 5, 6, 7))
    def pn(self, query, key, rpb, nbhd: Neighborhood, scale, empty_value, out_dtype):
        q, k = _fold_batch(query, nbhd), _fold_batch(key, nbhd)
        slots = Slots(q.shape[1:-2], nbhd)
        logits = neighbor_logits(split_heads(q, k.shape[-2]), flat_tokens(k), slots, scale, rpb)
        _, valid, _ = token_slot_tables(q.shape[1:-2], nbhd)
        logits = jnp.where(valid[:, None, None, :], logits, empty_value)
        return logits.reshape(query.shape[:-1] + (nbhd.window_size,)).astype(out_dtype)

    @functools.partial(jax.jit, static_argnums=(0, 3, 4))
    def nn(self, weights, value, nbhd: Neighborhood, scale):
        w, v = _fold_batch(weights, nbhd), _fold_batch(value, nbhd)
        acc = accumulation_dtype(value.dtype)
        out = neighbor_sum(split_heads(w, v.shape[-2]).astype(acc), flat_tokens(v).astype(acc), Slots(w.shape[1:-2], nbhd))
        return (scale * out).reshape(weights.shape[:-1] + value.shape[-1:]).astype(value.dtype)

    @functools.partial(jax.jit, static_argnums=(0, 3, 4, 5))
    def inverse(self, weights, values, nbhd: Neighborhood, heads_kv, scale):
        # IN is NN transposed in its value argument: the VJP of NN with `values` as cotangent.
        w, x = _fold_batch(weights, nbhd), _fold_batch(values, nbhd)
        acc = accumulation_dtype(values.dtype)
        key_shape = x.shape[:-2] + (heads_kv, x.shape[-1])
        _, transpose = jax.vjp(lambda v: self.nn(w.astype(acc), v, nbhd, scale), jnp.zeros(key_shape, acc))
        (out,) = transpose(x.astype(acc))
        return out.reshape(values.shape[:-2] + (heads_kv, values.shape[-1])).astype(values.dtype)

    @functools.partial(jax.jit, static_argnums=(0, 5, 6))
    def fused_forward(self, query, key, value, rpb, nbhd: Neighborhood, scale):
        q, k, v = (_fold_batch(x, nbhd) for x in (query, key, value))
        out, lse = reference.attention(q, k, v, nbhd, scale, rpb)
        return out.reshape(query.shape[:-1] + value.shape[-1:]), lse.astype(jnp.float32).reshape(query.shape[:-1])
