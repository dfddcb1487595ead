"""NAT / DiNAT and DiNAT_s networks (Flax linen) on images `[batch, height, width, channels]`.

Parameter paths follow the PyTorch state-dict keys of the NAT/DiNAT reference implementation
(SHI-Labs/Neighborhood-Attention-Transformer), so that checkpoints map one to one: a key's
dotted path becomes the Flax path with list indices joined to their name
(`levels.2.blocks.5.attn.qkv.weight` -> `levels_2/blocks_5/attn/qkv/kernel`,
`patch_embed.proj.0.weight` -> `patch_embed/proj_0/kernel`); Linear and Conv weights become
`kernel` (transposed to Flax's input-major layout), LayerNorm weights `scale`; `attn.rpb`,
`gamma1` and `gamma2` keep their names. NAT/DiNAT name their levels `levels_i`, DiNAT_s
`layers_i`.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jax_natten import dense
from jax_natten.linen import NeighborhoodAttention2D
from jax_natten.models.config import ModelConfig

# PyTorch's LayerNorm default, which the reference checkpoints were trained with.
LAYER_NORM_EPS = 1e-5
dense_init = nn.initializers.truncated_normal(0.02)


def layer_norm(config: ModelConfig, name: str):
    return nn.LayerNorm(epsilon=LAYER_NORM_EPS, dtype=config.dtype, param_dtype=config.param_dtype, name=name)


def drop_path(module: nn.Module, x, rate: float, deterministic: bool):
    """Stochastic depth: drop the whole residual branch of a sample with probability `rate`,
    scaling the kept ones by 1 / (1 - rate)."""
    if deterministic or rate == 0.0:
        return x
    keep = 1.0 - rate
    mask = jax.random.bernoulli(module.make_rng("dropout"), keep, (x.shape[0],) + (1,) * (x.ndim - 1))
    return jnp.where(mask, x / keep, 0).astype(x.dtype)


@jax.custom_jvp
def gelu(x):
    """Exact (erf) GELU, PyTorch's `nn.GELU()` that the reference checkpoints were trained with:
    `jax.nn.gelu(x, approximate=False)`, with its derivative `Phi(x) + x * phi(x)` written out.

    Why: in jax 0.12.0.1 the derivative of `lax.erfc`, which `jax.nn.gelu` uses, calls
    `lax.polynomial` without casting its constant coefficients to the varying manual axes of
    `x`, so differentiating the exact GELU inside `shard_map` (check_vma=True, the default)
    raises "Primitive polynomial requires varying manual axes to match". The derivative below
    uses erfc and exp only in the forward direction, where no such cast is missing.
    """
    return jax.nn.gelu(x, approximate=False)


@gelu.defjvp
def _gelu_jvp(primals, tangents):
    (x,), (dx,) = primals, tangents
    cdf = 0.5 * jax.lax.erfc(-x * np.sqrt(0.5).astype(x.dtype))
    pdf = jnp.exp(-0.5 * x * x) * np.sqrt(0.5 / np.pi).astype(x.dtype)
    return gelu(x), dx * (cdf + x * pdf)


class Mlp(nn.Module):
    config: ModelConfig
    width: int

    @nn.compact
    def __call__(self, x):
        dense = dict(dtype=self.config.dtype, param_dtype=self.config.param_dtype, kernel_init=dense_init)
        x = nn.Dense(int(self.width * self.config.mlp_ratio), name="fc1", **dense)(x)
        x = gelu(x)
        return nn.Dense(self.width, name="fc2", **dense)(x)


class DenseAttention(nn.Module):
    """Dense self attention over all tokens of the feature map, with the parameters of the
    neighborhood attention layer (`qkv`, `proj`; no bias table): the models' dense baseline, on
    cuDNN where it accepts the level's shapes and XLA elsewhere (jax_natten/dense.py)."""

    config: ModelConfig
    width: int
    heads: int

    @nn.compact
    def __call__(self, x):
        cfg = self.config
        dtypes = dict(dtype=cfg.dtype, param_dtype=cfg.param_dtype)
        qkv = nn.Dense(3 * self.width, use_bias=cfg.qkv_bias, name="qkv", **dtypes)(x)
        q, k, v = (t.reshape(t.shape[0], -1, self.heads, self.width // self.heads) for t in jnp.split(qkv, 3, -1))
        out = dense.attention(q, k, v).reshape(x.shape)
        return nn.Dense(self.width, name="proj", **dtypes)(out)


class TransformerLayer(nn.Module):
    """Pre-norm layer: x + NA(norm1(x)), then x + MLP(norm2(x)), each branch through drop path
    (and, with layer_scale, per-channel scales gamma1 / gamma2)."""

    config: ModelConfig
    level: int
    layer: int

    @nn.compact
    def __call__(self, x, deterministic: bool):
        cfg = self.config
        width = cfg.width(self.level)
        rate = cfg.drop_path(self.level, self.layer)
        if cfg.attention == "dense":
            attention = DenseAttention(cfg, width, cfg.num_heads[self.level], name="attn")
        else:
            attention = NeighborhoodAttention2D(
                embed_dim=width, num_heads=cfg.num_heads[self.level], kernel_size=cfg.kernel_size,
                dilation=cfg.dilation(self.level, self.layer), qkv_bias=cfg.qkv_bias, rel_pos_bias=cfg.rel_pos_bias,
                dtype=cfg.dtype, param_dtype=cfg.param_dtype, backend=cfg.backend, name="attn")
        branch = attention(layer_norm(cfg, "norm1")(x))
        if cfg.layer_scale is not None:
            branch = branch * self.param("gamma1", nn.initializers.constant(cfg.layer_scale), (width,),
                                         cfg.param_dtype)
        x = x + drop_path(self, branch, rate, deterministic)
        branch = Mlp(cfg, width, name="mlp")(layer_norm(cfg, "norm2")(x))
        if cfg.layer_scale is not None:
            branch = branch * self.param("gamma2", nn.initializers.constant(cfg.layer_scale), (width,),
                                         cfg.param_dtype)
        return x + drop_path(self, branch, rate, deterministic)


def _conv(config: ModelConfig, features, kernel, stride, padding, name, use_bias=True):
    return nn.Conv(features, (kernel, kernel), strides=(stride, stride), padding=padding, use_bias=use_bias,
                   dtype=config.dtype, param_dtype=config.param_dtype, name=name)


class ConvTokenizer(nn.Module):
    """NAT's stem: two overlapping 3x3 stride-2 convolutions (to embed_dim / 2, then embed_dim)
    and a LayerNorm: 4x downsampling."""

    config: ModelConfig

    @nn.compact
    def __call__(self, images):
        cfg = self.config
        x = _conv(cfg, cfg.embed_dim // 2, 3, 2, ((1, 1), (1, 1)), "proj_0")(images)
        x = _conv(cfg, cfg.embed_dim, 3, 2, ((1, 1), (1, 1)), "proj_1")(x)
        return layer_norm(cfg, "norm")(x)


class ConvDownsampler(nn.Module):
    """NAT's downsampler: a 3x3 stride-2 convolution to twice the width, then a LayerNorm."""

    config: ModelConfig
    width: int

    @nn.compact
    def __call__(self, x):
        x = _conv(self.config, 2 * self.width, 3, 2, ((1, 1), (1, 1)), "reduction", use_bias=False)(x)
        return layer_norm(self.config, "norm")(x)


class PatchEmbed(nn.Module):
    """DiNAT_s's stem: non-overlapping 4x4 patches (the image zero-padded at the bottom/right to
    a multiple of 4), then a LayerNorm."""

    config: ModelConfig

    @nn.compact
    def __call__(self, images):
        pad_h, pad_w = -images.shape[1] % 4, -images.shape[2] % 4
        images = jnp.pad(images, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)))
        x = _conv(self.config, self.config.embed_dim, 4, 4, "VALID", "proj")(images)
        return layer_norm(self.config, "norm")(x)


class PatchMerging(nn.Module):
    """DiNAT_s's downsampler (Swin's): each 2x2 block of tokens concatenated in the order
    (0,0), (1,0), (0,1), (1,1) (row, column), a LayerNorm, and a linear map to twice the width.
    Odd sizes are zero-padded at the bottom/right."""

    config: ModelConfig
    width: int

    @nn.compact
    def __call__(self, x):
        x = jnp.pad(x, ((0, 0), (0, x.shape[1] % 2), (0, x.shape[2] % 2), (0, 0)))
        x = jnp.concatenate([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], axis=-1)
        x = layer_norm(self.config, "norm")(x)
        return nn.Dense(2 * self.width, use_bias=False, dtype=self.config.dtype, param_dtype=self.config.param_dtype,
                        kernel_init=dense_init, name="reduction")(x)


class Level(nn.Module):
    """A level's layers, then (except after the last level) its downsampler."""

    config: ModelConfig
    level: int

    @nn.compact
    def __call__(self, x, deterministic: bool):
        cfg = self.config
        for layer in range(cfg.depths[self.level]):
            x = TransformerLayer(cfg, self.level, layer, name=f"blocks_{layer}")(x, deterministic)
        if self.level < len(cfg.depths) - 1:
            downsampler = ConvDownsampler if cfg.family == "nat" else PatchMerging
            x = downsampler(cfg, cfg.width(self.level), name="downsample")(x)
        return x


class _Classifier(nn.Module):
    """Stem, levels, final LayerNorm, global average pooling, linear head."""

    config: ModelConfig

    stem = None
    level_name = None

    @nn.compact
    def __call__(self, images, deterministic: bool = True):
        """images: `[batch, height, width, in_channels]`; returns logits `[batch, num_classes]`."""
        cfg = self.config
        cfg.check_images(images.shape)
        x = self.stem(cfg, name="patch_embed")(images)
        for level in range(len(cfg.depths)):
            x = Level(cfg, level, name=f"{self.level_name}_{level}")(x, deterministic)
        x = layer_norm(cfg, "norm")(x).mean(axis=(1, 2))
        return nn.Dense(cfg.num_classes, dtype=cfg.dtype, param_dtype=cfg.param_dtype, kernel_init=dense_init,
                        name="head")(x)


class NAT(_Classifier):
    """NAT, and DiNAT when the config has dilations."""

    stem = ConvTokenizer
    level_name = "levels"


class DiNATs(_Classifier):
    """DiNAT_s: DiNAT's layers on Swin's patch embedding and patch merging."""

    stem = PatchEmbed
    level_name = "layers"
