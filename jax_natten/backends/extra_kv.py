"""The additional keys and values (`additional_keys`, `additional_values`), which every query
attends to besides its neighborhood: the one implementation that every backend uses, on heads
split into GQA groups, `[batch, tokens, heads_kv, group, dim]` (query head `h` is
`(h // group, h % group)` and reads key/value head `h // group`, SPEC's GQA rule).
"""

from __future__ import annotations

import jax.numpy as jnp
from jax import lax

HIGHEST = lax.Precision.HIGHEST


def accumulation_dtype(dtype):
    """float32 for 16-bit inputs; float32 and float64 inputs accumulate in their own dtype."""
    return jnp.promote_types(dtype, jnp.float32)


def split_heads(x, heads_kv):
    """`[batch, *spatial, heads, dim]` -> `[batch, tokens, heads_kv, group, dim]`."""
    return x.reshape(x.shape[0], -1, heads_kv, x.shape[-2] // heads_kv, x.shape[-1])


def extra_logits(query, additional_keys, scale):
    """`scale * q.k` against the additional keys, `[batch, tokens, heads_kv, group, n_extra]`."""
    q = split_heads(query, additional_keys.shape[-2])
    return scale * jnp.einsum("bthgd,bnhd->bthgn", q, additional_keys, precision=HIGHEST,
                              preferred_element_type=accumulation_dtype(query.dtype))


def extra_sum(probs, additional_values):
    """`sum_n probs[..., n] * additional_values[n]`, `[batch, tokens, heads_kv, group, head_dim_v]`."""
    return jnp.einsum("bthgn,bnhd->bthgd", probs, additional_values, precision=HIGHEST,
                      preferred_element_type=probs.dtype)
