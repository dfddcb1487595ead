"""What the Flax modules of `jax_natten.linen` and `jax_natten.nnx` share: their static
configuration (checked once, at construction) and the attention between the projections."""

from __future__ import annotations

import dataclasses
import math
import numbers

import jax
import jax.numpy as jnp
import numpy as np

from jax_natten import backends, checks, functional


@dataclasses.dataclass(frozen=True)
class LayerConfig:
    """Static configuration of a neighborhood attention layer (NATTEN's module arguments, plus
    GQA, relative positional bias, attention dropout and backend choice)."""

    rank: int
    embed_dim: int
    num_heads: int
    kernel_size: tuple | int
    stride: tuple | int = 1
    dilation: tuple | int = 1
    is_causal: tuple | bool = False
    num_kv_heads: int | None = None
    qk_scale: float | None = None
    rel_pos_bias: bool = False
    attn_drop: float = 0.0
    backend: str | None = None

    def __post_init__(self):
        if not isinstance(self.rank, numbers.Integral) or isinstance(self.rank, (bool, np.bool_)) \
                or self.rank not in (1, 2, 3):
            raise ValueError(f"rank={self.rank!r}: neighborhood attention layers are 1-D, 2-D or 3-D.")
        checks.positive_int("embed_dim", self.embed_dim)
        checks.positive_int("num_heads", self.num_heads)
        if self.embed_dim % self.num_heads:
            raise ValueError(f"embed_dim={self.embed_dim} must be a multiple of num_heads={self.num_heads}.")
        if self.num_kv_heads is not None:
            checks.positive_int("num_kv_heads", self.num_kv_heads)
            checks.heads_divide("num_heads", self.num_heads, "num_kv_heads", self.num_kv_heads)
        checks.real_number("qk_scale", self.qk_scale, allow_none=True)
        if not 0.0 <= checks.real_number("attn_drop", self.attn_drop) < 1.0:
            raise ValueError(f"attn_drop={self.attn_drop!r}: it must be in [0, 1).")
        if not isinstance(self.rel_pos_bias, (bool, np.bool_)):
            raise ValueError(f"rel_pos_bias={self.rel_pos_bias!r}: it must be a bool.")
        if self.backend is not None and (not isinstance(self.backend, str) or self.backend not in backends.names()):
            raise ValueError(f"backend={self.backend!r}: unknown backend; choose one of {backends.names()} or None.")
        self.neighborhood((2 ** 30,) * self.rank)  # every rule but kernel_size * dilation <= length

    def neighborhood(self, spatial_shape):
        """The checked per-axis parameters for an input of `spatial_shape`."""
        return checks.neighborhood(spatial_shape, self.kernel_size, self.stride, self.dilation, self.is_causal)

    @property
    def head_dim(self):
        return self.embed_dim // self.num_heads

    @property
    def kv_heads(self):
        return self.num_kv_heads or self.num_heads

    @property
    def rpb_shape(self):
        kernel = self.neighborhood((2 ** 30,) * self.rank).kernel_size
        return (self.num_heads, *(2 * k - 1 for k in kernel))

    def check_input(self, x):
        if x.ndim != self.rank + 2 or x.shape[-1] != self.embed_dim:
            raise ValueError(
                f"input has shape {tuple(x.shape)}; a {self.rank}-D layer needs "
                f"[batch, {self.rank} spatial axes, embed_dim={self.embed_dim}]."
            )

    def project(self, tokens, qkv=None, q=None, kv=None):
        """Queries, keys and values of `tokens` (`[..., embed_dim]`) split into heads, through the
        fused projection `qkv`, or through `q` and `kv` (GQA)."""
        if qkv is not None:
            query, key, value = jnp.split(qkv(tokens), 3, axis=-1)
        else:
            query = q(tokens)
            key, value = jnp.split(kv(tokens), 2, axis=-1)
        return (split_heads(query, self.num_heads), split_heads(key, self.kv_heads),
                split_heads(value, self.kv_heads))

    def forward(self, x, extra_tokens, projections, rpb, dropout):
        """The layer up to its output projection: `x` `[batch, *spatial, embed_dim]` and optional
        `extra_tokens` `[batch, n, embed_dim]` through `projections` (`project`'s keywords), then
        `attend` (the bias table `rpb` in the projections' dtype); returns
        `[batch, *spatial, embed_dim]`."""
        self.check_input(x)
        q, k, v = self.project(x, **projections)
        if rpb is not None:
            rpb = rpb.astype(q.dtype)
        extra_k = extra_v = None
        if extra_tokens is not None:
            _, extra_k, extra_v = self.project(extra_tokens, **projections)
        return merge_heads(self.attend(q, k, v, rpb, extra_k, extra_v, dropout))

    def attend(self, q, k, v, rpb, extra_k, extra_v, dropout):
        """Attention of projected `q, k, v` (`[batch, *spatial, heads, head_dim]`). With
        `dropout` (a function of the attention weights, or None), the weights are materialized:
        unfused operators, softmax in XLA, dropout, weighted sum; otherwise one call that any
        backend (fused ones included) can run."""
        nbhd = dict(kernel_size=self.kernel_size, stride=self.stride, dilation=self.dilation, is_causal=self.is_causal)
        scale = self.head_dim ** -0.5 if self.qk_scale is None else self.qk_scale
        if dropout is None:
            return functional.neighborhood_attention(
                q, k, v, scale=scale, rpb=rpb, additional_keys=extra_k, additional_values=extra_v,
                backend=self.backend, **nbhd)
        if extra_k is not None:
            raise NotImplementedError("attention dropout with extra tokens: only without dropout (attn_drop=0 or deterministic).")
        qk = getattr(functional, f"na{self.rank}d_qk")
        av = getattr(functional, f"na{self.rank}d_av")
        logits = qk(q * jnp.asarray(scale, q.dtype), k, rpb=rpb, backend=self.backend, **nbhd)
        weights = dropout(jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(v.dtype))
        return av(weights, v, backend=self.backend, **nbhd)


def split_heads(x, heads):
    """`[..., heads * head_dim]` -> `[..., heads, head_dim]`."""
    return x.reshape(*x.shape[:-1], heads, x.shape[-1] // heads)


def merge_heads(x):
    return x.reshape(*x.shape[:-2], math.prod(x.shape[-2:]))
