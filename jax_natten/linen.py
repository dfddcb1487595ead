"""Flax linen modules: `NeighborhoodAttention1D/2D/3D` on inputs `[batch, *spatial, embed_dim]`.

Parameters: `qkv` (one Dense to 3 * embed_dim, as in NATTEN's modules) or, with GQA, `q` and
`kv`; `proj`; and `rpb` (`[heads, 2k-1, ...]`) when `rel_pos_bias`. Dropout draws from the
"dropout" RNG stream when `deterministic=False`.
"""

from __future__ import annotations

from typing import ClassVar

import flax.linen as nn
import jax.numpy as jnp

from jax_natten.layer import LayerConfig


class _NeighborhoodAttention(nn.Module):
    """Neighborhood attention layer; the arguments are `LayerConfig`'s plus the projections'."""

    rank: ClassVar[int]
    embed_dim: int
    num_heads: int
    kernel_size: tuple | int
    stride: tuple | int = 1
    dilation: tuple | int = 1
    is_causal: tuple | bool = False
    num_kv_heads: int | None = None
    qkv_bias: bool = True
    qk_scale: float | None = None
    rel_pos_bias: bool = False
    attn_drop: float = 0.0
    proj_drop: float = 0.0
    dtype: jnp.dtype | None = None
    param_dtype: jnp.dtype = jnp.float32
    backend: str | None = None

    def setup(self):
        self.config = LayerConfig(self.rank, self.embed_dim, self.num_heads, self.kernel_size, self.stride,
                                  self.dilation, self.is_causal, self.num_kv_heads, self.qk_scale,
                                  self.rel_pos_bias, self.attn_drop, self.backend)
        dense = dict(use_bias=self.qkv_bias, dtype=self.dtype, param_dtype=self.param_dtype)
        if self.config.kv_heads == self.num_heads:
            self.qkv = nn.Dense(3 * self.embed_dim, **dense)
        else:
            self.q = nn.Dense(self.embed_dim, **dense)
            self.kv = nn.Dense(2 * self.config.kv_heads * self.config.head_dim, **dense)
        if self.rel_pos_bias:
            self.rpb = self.param("rpb", nn.initializers.truncated_normal(0.02), self.config.rpb_shape,
                                  self.param_dtype)
        self.attn_dropout = nn.Dropout(self.attn_drop)
        self.proj = nn.Dense(self.embed_dim, dtype=self.dtype, param_dtype=self.param_dtype)
        self.proj_dropout = nn.Dropout(self.proj_drop)

    def __call__(self, x, extra_tokens=None, deterministic: bool = True):
        """x: `[batch, *spatial, embed_dim]`; extra_tokens: `[batch, n, embed_dim]` that every
        query also attends to (projected to keys and values as x is)."""
        if self.config.kv_heads == self.num_heads:
            projections = dict(qkv=self.qkv)
        else:
            projections = dict(q=self.q, kv=self.kv)
        rpb = self.rpb if self.rel_pos_bias else None
        dropout = None
        if self.attn_drop > 0 and not deterministic:
            dropout = lambda w: self.attn_dropout(w, deterministic=False)  # noqa: E731
        out = self.config.forward(x, extra_tokens, projections, rpb, dropout)
        return self.proj_dropout(self.proj(out), deterministic=deterministic)


class NeighborhoodAttention1D(_NeighborhoodAttention):
    rank = 1


class NeighborhoodAttention2D(_NeighborhoodAttention):
    rank = 2


class NeighborhoodAttention3D(_NeighborhoodAttention):
    rank = 3
