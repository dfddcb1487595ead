"""Public operators: NATTEN's names and heads-last layout `[batch, *spatial, heads, head_dim]`.

Each function validates its arguments (ValueError / NotImplementedError naming the argument),
chooses a backend and calls it, with the arrays varying alike under `shard_map`
(`manual_axes.varying_alike`: every backend's gradient then types right). Nothing is traced
before the checks pass.
"""

from __future__ import annotations

import numpy as np

from jax_natten import backends, checks
from jax_natten.manual_axes import varying_alike


def _attention(query, key, value, kernel_size, stride, dilation, is_causal, scale,
               additional_keys, additional_values, rpb, return_lse, backend, rank, deterministic):
    inputs = checks.attention_inputs(query, key, value, kernel_size, stride, dilation, is_causal,
                                     scale, additional_keys, additional_values, rpb, return_lse, rank)
    checks.flag("deterministic", deterministic)
    chosen = backends.choose(_attention_request(inputs), backend)
    query, key, value, rpb, additional_keys, additional_values = varying_alike(
        query, key, value, rpb, additional_keys, additional_values)
    out, lse = chosen.attention(query, key, value, inputs.nbhd, inputs.scale, rpb,
                                additional_keys, additional_values, deterministic=bool(deterministic))
    return (out, lse) if return_lse else out


def _attention_request(inputs: checks.AttentionInputs) -> backends.Request:
    return backends.make_request("attention", inputs.dtype.name, inputs.spatial_shape, inputs.heads,
                                 inputs.heads_kv, inputs.head_dim, inputs.head_dim_v, inputs.nbhd,
                                 inputs.has_rpb, inputs.has_extra_kv)


def neighborhood_attention(query, key, value, kernel_size, stride=1, dilation=1, is_causal=False,
                           scale=None, additional_keys=None, additional_values=None, rpb=None,
                           return_lse=False, backend=None, deterministic=False):
    """Neighborhood attention over 1 to 3 spatial axes (the rank is read from `query`).

    Args:
      query: `[batch, *spatial, heads, head_dim]`.
      key: `[batch, *spatial, heads_kv, head_dim]`, `heads % heads_kv == 0` (GQA/MQA).
      value: `[batch, *spatial, heads_kv, head_dim_v]`.
      kernel_size, stride, dilation: an int for every axis or a tuple with one per axis.
      is_causal: a bool for every axis or a tuple with one per axis.
      scale: multiplies `q.k`; None means `head_dim ** -0.5`, and 0.0 is a valid scale.
      additional_keys, additional_values: `[batch, n_extra, heads_kv, head_dim(_v)]` tokens
        that every query attends to as well (both or neither).
      rpb: relative positional bias `[heads, 2*k_1-1, ..., 2*k_n-1]` added to the scaled scores.
      return_lse: also return the logsumexp `[batch, *spatial, heads]` (float32; float64 for
        float64 inputs).
      backend: a name from `jax_natten.backends.names()`, or None for the best that can run.
      deterministic: gradients with the same bits run after run. Only the fused backend's
        backward adds by atomics (its dQ, in an order that varies); with True it computes dQ
        with a second kernel instead (slower). Every other backend is deterministic either way.

    Returns:
      `[batch, *spatial, heads, head_dim_v]` in the input dtype, and the LSE if asked for.
    """
    return _attention(query, key, value, kernel_size, stride, dilation, is_causal, scale,
                      additional_keys, additional_values, rpb, return_lse, backend, rank=None,
                      deterministic=deterministic)


def _make_attention(rank):
    def na(query, key, value, kernel_size, stride=1, dilation=1, is_causal=False, scale=None,
           additional_keys=None, additional_values=None, rpb=None, return_lse=False, backend=None,
           deterministic=False):
        return _attention(query, key, value, kernel_size, stride, dilation, is_causal, scale,
                          additional_keys, additional_values, rpb, return_lse, backend, rank, deterministic)

    na.__name__ = na.__qualname__ = f"na{rank}d"
    na.__doc__ = (f"{rank}-D neighborhood attention: `neighborhood_attention` for inputs "
                  f"`[batch, {', '.join(f'X{i}' for i in range(rank))}, heads, head_dim]`.")
    return na


def _make_qk(rank):
    def na_qk(query, key, kernel_size, stride=1, dilation=1, is_causal=False, rpb=None, backend=None):
        nbhd = checks.qk_inputs(query, key, kernel_size, stride, dilation, is_causal, rpb, rank)
        request = backends.make_request("qk", np.dtype(query.dtype).name, query.shape[1:-2], query.shape[-2],
                                        key.shape[-2], query.shape[-1], query.shape[-1], nbhd, rpb is not None)
        query, key, rpb = varying_alike(query, key, rpb)
        return backends.choose(request, backend).qk(query, key, nbhd, rpb)

    na_qk.__name__ = na_qk.__qualname__ = f"na{rank}d_qk"
    na_qk.__doc__ = (f"{rank}-D PN operator: unscaled `q.k (+ rpb)` for every neighbor, "
                     "`[batch, *spatial, heads, prod(kernel_size)]` (row-major over kernel offsets; "
                     "-inf in the empty slots of causal windows). Scale `query` first, as NAT does.")
    return na_qk


def _make_av(rank):
    def na_av(attn, value, kernel_size, stride=1, dilation=1, is_causal=False, backend=None):
        nbhd = checks.av_inputs(attn, value, kernel_size, stride, dilation, is_causal, rank)
        request = backends.make_request("av", np.dtype(attn.dtype).name, attn.shape[1:-2], attn.shape[-2],
                                        value.shape[-2], value.shape[-1], value.shape[-1], nbhd)
        attn, value = varying_alike(attn, value)
        return backends.choose(request, backend).av(attn, value, nbhd)

    na_av.__name__ = na_av.__qualname__ = f"na{rank}d_av"
    na_av.__doc__ = (f"{rank}-D NN operator: `sum_t attn[..., t] * value[neighbor t]`, "
                     "`[batch, *spatial, heads, head_dim_v]`; empty causal slots are ignored.")
    return na_av


na1d, na2d, na3d = (_make_attention(r) for r in (1, 2, 3))
na1d_qk, na2d_qk, na3d_qk = (_make_qk(r) for r in (1, 2, 3))
na1d_av, na2d_av, na3d_av = (_make_av(r) for r in (1, 2, 3))


def explain(query, key, value, kernel_size, stride=1, dilation=1, is_causal=False, scale=None,
            additional_keys=None, additional_values=None, rpb=None):
    """Which backend `neighborhood_attention(..., backend=None)` would run for these inputs, and
    why every other backend would not. Arrays may be `jax.ShapeDtypeStruct`s."""
    inputs = checks.attention_inputs(query, key, value, kernel_size, stride, dilation, is_causal,
                                     scale, additional_keys, additional_values, rpb, False)
    return backends.explain_request(_attention_request(inputs))
