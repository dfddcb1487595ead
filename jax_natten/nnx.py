"""Flax nnx modules: `NeighborhoodAttention1D/2D/3D` on inputs `[batch, *spatial, embed_dim]`,
with the same parameters as the linen modules (`qkv` or `q` + `kv`, `proj`, `rpb`)."""

from __future__ import annotations

from typing import ClassVar

import jax
import jax.numpy as jnp
from flax import nnx

from jax_natten.layer import LayerConfig


class _NeighborhoodAttention(nnx.Module):
    """Neighborhood attention layer; the arguments are `LayerConfig`'s plus the projections'.
    `deterministic` (here or per call) switches dropout off; dropout draws from `rngs`."""

    rank: ClassVar[int]

    def __init__(self, embed_dim, num_heads, kernel_size, stride=1, dilation=1, is_causal=False,
                 num_kv_heads=None, qkv_bias=True, qk_scale=None, rel_pos_bias=False, attn_drop=0.0,
                 proj_drop=0.0, dtype=None, param_dtype=jnp.float32, backend=None, deterministic=False,
                 *, rngs: nnx.Rngs):
        self.config = LayerConfig(self.rank, embed_dim, num_heads, kernel_size, stride, dilation, is_causal,
                                  num_kv_heads, qk_scale, rel_pos_bias, attn_drop, backend)
        cfg = self.config
        dense = dict(use_bias=qkv_bias, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        if cfg.kv_heads == num_heads:
            self.qkv = nnx.Linear(embed_dim, 3 * embed_dim, **dense)
        else:
            self.q = nnx.Linear(embed_dim, embed_dim, **dense)
            self.kv = nnx.Linear(embed_dim, 2 * cfg.kv_heads * cfg.head_dim, **dense)
        self.rpb = nnx.data(None)
        if rel_pos_bias:
            init = jax.nn.initializers.truncated_normal(0.02)
            self.rpb = nnx.Param(init(rngs.params(), cfg.rpb_shape, param_dtype))
        self.attn_dropout = nnx.Dropout(attn_drop, deterministic=deterministic, rngs=rngs)
        self.proj = nnx.Linear(embed_dim, embed_dim, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.proj_dropout = nnx.Dropout(proj_drop, deterministic=deterministic, rngs=rngs)

    def __call__(self, x, extra_tokens=None, deterministic: bool | None = None):
        """x: `[batch, *spatial, embed_dim]`; extra_tokens: `[batch, n, embed_dim]` that every
        query also attends to (projected to keys and values as x is)."""
        cfg = self.config
        if cfg.kv_heads == cfg.num_heads:
            projections = dict(qkv=self.qkv)
        else:
            projections = dict(q=self.q, kv=self.kv)
        rpb = self.rpb[...] if self.rpb is not None else None
        off = self.attn_dropout.deterministic if deterministic is None else deterministic
        dropout = None
        if cfg.attn_drop > 0 and not off:
            dropout = lambda w: self.attn_dropout(w, deterministic=False)  # noqa: E731
        out = cfg.forward(x, extra_tokens, projections, rpb, dropout)
        return self.proj_dropout(self.proj(out), deterministic=deterministic)


class NeighborhoodAttention1D(_NeighborhoodAttention):
    rank = 1


class NeighborhoodAttention2D(_NeighborhoodAttention):
    rank = 2


class NeighborhoodAttention3D(_NeighborhoodAttention):
    rank = 3
