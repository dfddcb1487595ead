"""NAT / DiNAT and DiNAT_s networks as Flax nnx modules, the twins of `networks.py` (linen):
same `ModelConfig`, same layers, same initializers and the same parameter paths
(`levels_2/blocks_5/attn/qkv/kernel`, `patch_embed/proj_0/kernel`, ...), so that linen params,
nnx state and converted PyTorch checkpoints map one to one.

    model = models.create_nnx("dinat_tiny", rngs=nnx.Rngs(0), num_classes=10)
    logits = model(images)                                   # deterministic (inference)
    logits = model(images, deterministic=False)              # drop path from the `dropout` stream
"""

from __future__ import annotations

import jax.numpy as jnp
from flax import nnx

from jax_natten import dense
from jax_natten.models.config import ModelConfig
from jax_natten.models.networks import LAYER_NORM_EPS, dense_init, gelu
from jax_natten.nnx import NeighborhoodAttention2D


def _layer_norm(config: ModelConfig, width, rngs):
    return nnx.LayerNorm(width, epsilon=LAYER_NORM_EPS, dtype=config.dtype, param_dtype=config.param_dtype, rngs=rngs)


def _linear(config: ModelConfig, fan_in, fan_out, rngs, **options):
    return nnx.Linear(fan_in, fan_out, dtype=config.dtype, param_dtype=config.param_dtype, rngs=rngs, **options)


def _conv(config: ModelConfig, fan_in, fan_out, kernel, stride, padding, rngs, use_bias=True):
    return nnx.Conv(fan_in, fan_out, (kernel, kernel), strides=(stride, stride), padding=padding, use_bias=use_bias,
                    dtype=config.dtype, param_dtype=config.param_dtype, rngs=rngs)


class Mlp(nnx.Module):
    def __init__(self, config: ModelConfig, width, *, rngs: nnx.Rngs):
        hidden = int(width * config.mlp_ratio)
        self.fc1 = _linear(config, width, hidden, rngs, kernel_init=dense_init)
        self.fc2 = _linear(config, hidden, width, rngs, kernel_init=dense_init)

    def __call__(self, x):
        return self.fc2(gelu(self.fc1(x)))


class DenseAttention(nnx.Module):
    """Dense self attention over the whole feature map (`qkv`, `proj`): the dense baseline, on cuDNN
    where it accepts the level's shapes and XLA elsewhere (jax_natten/dense.py)."""

    def __init__(self, config: ModelConfig, width, heads, *, rngs: nnx.Rngs):
        self.heads = heads
        self.qkv = _linear(config, width, 3 * width, rngs, use_bias=config.qkv_bias)
        self.proj = _linear(config, width, width, rngs)

    def __call__(self, x):
        width = x.shape[-1]
        qkv = self.qkv(x)
        q, k, v = (t.reshape(t.shape[0], -1, self.heads, width // self.heads) for t in jnp.split(qkv, 3, -1))
        out = dense.attention(q, k, v).reshape(x.shape)
        return self.proj(out)


class TransformerLayer(nnx.Module):
    """Pre-norm layer: x + NA(norm1(x)), then x + MLP(norm2(x)), each branch through drop path
    (and, with layer_scale, per-channel scales gamma1 / gamma2)."""

    def __init__(self, config: ModelConfig, level, layer, *, rngs: nnx.Rngs):
        cfg = config
        width = cfg.width(level)
        self.norm1 = _layer_norm(cfg, width, rngs)
        if cfg.attention == "dense":
            self.attn = DenseAttention(cfg, width, cfg.num_heads[level], rngs=rngs)
        else:
            self.attn = NeighborhoodAttention2D(
                width, cfg.num_heads[level], kernel_size=cfg.kernel_size, dilation=cfg.dilation(level, layer),
                qkv_bias=cfg.qkv_bias, rel_pos_bias=cfg.rel_pos_bias, dtype=cfg.dtype, param_dtype=cfg.param_dtype,
                backend=cfg.backend, deterministic=True, rngs=rngs)
        self.norm2 = _layer_norm(cfg, width, rngs)
        self.mlp = Mlp(cfg, width, rngs=rngs)
        self.gamma1 = self.gamma2 = nnx.data(None)
        if cfg.layer_scale is not None:
            self.gamma1 = nnx.Param(jnp.full((width,), cfg.layer_scale, cfg.param_dtype))
            self.gamma2 = nnx.Param(jnp.full((width,), cfg.layer_scale, cfg.param_dtype))
        # Stochastic depth: one keep/drop decision per sample, broadcast over the feature map.
        self.drop_path = nnx.Dropout(cfg.drop_path(level, layer), broadcast_dims=(1, 2, 3), rngs=rngs)

    def __call__(self, x, deterministic: bool):
        branch = self.attn(self.norm1(x))
        if self.gamma1 is not None:
            branch = branch * self.gamma1[...]
        x = x + self.drop_path(branch, deterministic=deterministic)
        branch = self.mlp(self.norm2(x))
        if self.gamma2 is not None:
            branch = branch * self.gamma2[...]
        return x + self.drop_path(branch, deterministic=deterministic)


class ConvTokenizer(nnx.Module):
    """NAT's stem: two overlapping 3x3 stride-2 convolutions and a LayerNorm."""

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        half = config.embed_dim // 2
        self.proj_0 = _conv(config, config.in_channels, half, 3, 2, ((1, 1), (1, 1)), rngs)
        self.proj_1 = _conv(config, half, config.embed_dim, 3, 2, ((1, 1), (1, 1)), rngs)
        self.norm = _layer_norm(config, config.embed_dim, rngs)

    def __call__(self, images):
        return self.norm(self.proj_1(self.proj_0(images)))


class ConvDownsampler(nnx.Module):
    """NAT's downsampler: a 3x3 stride-2 convolution to twice the width, then a LayerNorm."""

    def __init__(self, config: ModelConfig, width, *, rngs: nnx.Rngs):
        self.reduction = _conv(config, width, 2 * width, 3, 2, ((1, 1), (1, 1)), rngs, use_bias=False)
        self.norm = _layer_norm(config, 2 * width, rngs)

    def __call__(self, x):
        return self.norm(self.reduction(x))


class PatchEmbed(nnx.Module):
    """DiNAT_s's stem: 4x4 patches (zero-padded at the bottom/right), then a LayerNorm."""

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        self.proj = _conv(config, config.in_channels, config.embed_dim, 4, 4, "VALID", rngs)
        self.norm = _layer_norm(config, config.embed_dim, rngs)

    def __call__(self, images):
        images = jnp.pad(images, ((0, 0), (0, -images.shape[1] % 4), (0, -images.shape[2] % 4), (0, 0)))
        return self.norm(self.proj(images))


class PatchMerging(nnx.Module):
    """DiNAT_s's downsampler: 2x2 blocks concatenated in the order (0,0), (1,0), (0,1), (1,1),
    a LayerNorm, a linear map to twice the width; odd sizes zero-padded at the bottom/right."""

    def __init__(self, config: ModelConfig, width, *, rngs: nnx.Rngs):
        self.norm = _layer_norm(config, 4 * width, rngs)
        self.reduction = _linear(config, 4 * width, 2 * width, rngs, use_bias=False, kernel_init=dense_init)

    def __call__(self, x):
        x = jnp.pad(x, ((0, 0), (0, x.shape[1] % 2), (0, x.shape[2] % 2), (0, 0)))
        x = jnp.concatenate([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], axis=-1)
        return self.reduction(self.norm(x))


class Level(nnx.Module):
    """A level's layers (`blocks_i`), then (except after the last level) its downsampler."""

    def __init__(self, config: ModelConfig, level, *, rngs: nnx.Rngs):
        self.depth = config.depths[level]
        for layer in range(self.depth):
            setattr(self, f"blocks_{layer}", TransformerLayer(config, level, layer, rngs=rngs))
        self.downsample = nnx.data(None)
        if level < len(config.depths) - 1:
            downsampler = ConvDownsampler if config.family == "nat" else PatchMerging
            self.downsample = downsampler(config, config.width(level), rngs=rngs)

    def __call__(self, x, deterministic: bool):
        for layer in range(self.depth):
            x = getattr(self, f"blocks_{layer}")(x, deterministic)
        return x if self.downsample is None else self.downsample(x)


class Classifier(nnx.Module):
    """NAT (DiNAT with dilations) or DiNAT_s, by `config.family`: stem, levels (`levels_i` for
    NAT/DiNAT, `layers_i` for DiNAT_s, as in the linen networks), final LayerNorm, global average
    pooling, linear head."""

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        self.config = config
        stem = ConvTokenizer if config.family == "nat" else PatchEmbed
        self.patch_embed = stem(config, rngs=rngs)
        for level in range(len(config.depths)):
            setattr(self, self._level_name(level), Level(config, level, rngs=rngs))
        last = config.width(len(config.depths) - 1)
        self.norm = _layer_norm(config, last, rngs)
        self.head = _linear(config, last, config.num_classes, rngs, kernel_init=dense_init)

    def _level_name(self, level):
        return f"{'levels' if self.config.family == 'nat' else 'layers'}_{level}"

    def __call__(self, images, deterministic: bool = True):
        """images: `[batch, height, width, in_channels]`; returns logits `[batch, num_classes]`."""
        cfg = self.config
        cfg.check_images(images.shape)
        x = self.patch_embed(images)
        for level in range(len(cfg.depths)):
            x = getattr(self, self._level_name(level))(x, deterministic)
        return self.head(self.norm(x).mean(axis=(1, 2)))
