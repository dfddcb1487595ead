"""Image classifiers built on neighborhood attention (Flax linen and nnx): NAT, DiNAT and
DiNAT_s with the configurations of their papers.

    from jax_natten import models
    model = models.create("dinat_tiny", num_classes=1000, dtype=jnp.bfloat16)
    variables = model.init(jax.random.key(0), images)            # images: [batch, H, W, 3]
    logits = model.apply(variables, images)                      # deterministic (inference)
    logits = model.apply(variables, images, deterministic=False, rngs={"dropout": key})

The nnx versions (`nnx_networks.py`) have the same configurations and parameter paths:

    model = models.create_nnx("dinat_tiny", rngs=nnx.Rngs(0), num_classes=1000)
    logits = model(images)                                       # deterministic (inference)

`MODELS` maps each name to its `ModelConfig`; `create` accepts any config field as a keyword
(`create("nat_mini", kernel_size=5, image_size=64)`, say).
"""

from __future__ import annotations

import dataclasses

from jax_natten.models.config import ModelConfig
from jax_natten.models.networks import DiNATs, NAT
from jax_natten.models.nnx_networks import Classifier as NnxClassifier

# NAT (arXiv:2204.07143) and DiNAT (arXiv:2209.15001): overlapping convolutional tokenizer and
# downsamplers, 7x7 neighborhoods; DiNAT alternates plain and dilated layers, the dilation
# being as large as the feature map allows (feature maps 56/28/14/7 at 224, 96/48/24/12 at 384).
_NAT_224 = ((1, 8, 1), (1, 4, 1, 4), (1, 2) * 9, (1,) * 5)
_NAT_384 = ((1, 13, 1), (1, 6, 1, 6), (1, 3) * 9, (1,) * 5)
_NAT_MINI_224 = ((1, 8, 1), (1, 4, 1, 4), (1, 2) * 3, (1,) * 5)
# DiNAT_s: Swin-like patch embedding and patch merging, no layer scale.
_DINAT_S_224 = ((1, 8), (1, 4), (1, 2) * 9, (1, 1))
_DINAT_S_TINY_224 = ((1, 8), (1, 4), (1, 2) * 3, (1, 1))
_DINAT_S_384 = ((1, 13), (1, 6), (1, 3) * 9, (1, 1))

_MINI = dict(family="nat", embed_dim=64, depths=(3, 4, 6, 5), num_heads=(2, 4, 8, 16), mlp_ratio=3.0,
             drop_path_rate=0.2)
_TINY = dict(family="nat", embed_dim=64, depths=(3, 4, 18, 5), num_heads=(2, 4, 8, 16), mlp_ratio=3.0,
             drop_path_rate=0.2)
_SMALL = dict(family="nat", embed_dim=96, depths=(3, 4, 18, 5), num_heads=(3, 6, 12, 24), mlp_ratio=2.0,
              drop_path_rate=0.3)
_BASE = dict(family="nat", embed_dim=128, depths=(3, 4, 18, 5), num_heads=(4, 8, 16, 32), mlp_ratio=2.0,
             drop_path_rate=0.5)
_LARGE = dict(family="nat", embed_dim=192, depths=(3, 4, 18, 5), num_heads=(4, 8, 16, 32), mlp_ratio=2.0,
              drop_path_rate=0.35)
_S_SMALL = dict(family="dinat_s", embed_dim=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24), mlp_ratio=4.0,
                drop_path_rate=0.3)

MODELS = {
    "nat_mini": ModelConfig(**_MINI),
    "nat_tiny": ModelConfig(**_TINY),
    "nat_small": ModelConfig(**_SMALL, layer_scale=1e-5),
    "nat_base": ModelConfig(**_BASE, layer_scale=1e-5),
    "dinat_mini": ModelConfig(**_MINI, dilations=_NAT_MINI_224),
    "dinat_tiny": ModelConfig(**_TINY, dilations=_NAT_224),
    "dinat_small": ModelConfig(**_SMALL, dilations=_NAT_224),
    "dinat_base": ModelConfig(**_BASE, dilations=_NAT_224),
    "dinat_large": ModelConfig(**_LARGE, dilations=_NAT_224),
    "dinat_large_384": ModelConfig(**_LARGE, dilations=_NAT_384, image_size=384),
    "dinat_s_tiny": ModelConfig(family="dinat_s", embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24),
                                mlp_ratio=4.0, drop_path_rate=0.2, dilations=_DINAT_S_TINY_224),
    "dinat_s_small": ModelConfig(**_S_SMALL, dilations=_DINAT_S_224),
    "dinat_s_base": ModelConfig(**{**_S_SMALL, "embed_dim": 128, "num_heads": (4, 8, 16, 32), "drop_path_rate": 0.5},
                                dilations=_DINAT_S_224),
    "dinat_s_large": ModelConfig(**{**_S_SMALL, "embed_dim": 192, "num_heads": (4, 8, 16, 32),
                                    "drop_path_rate": 0.35}, dilations=_DINAT_S_224),
    "dinat_s_large_384": ModelConfig(**{**_S_SMALL, "embed_dim": 192, "num_heads": (4, 8, 16, 32),
                                        "drop_path_rate": 0.35}, dilations=_DINAT_S_384, image_size=384),
}


def _config(name: str, **overrides) -> ModelConfig:
    """`MODELS[name]` with `overrides` replacing fields."""
    if name not in MODELS:
        raise ValueError(f"model {name!r}: unknown; choose one of {sorted(MODELS)}.")
    return dataclasses.replace(MODELS[name], **overrides)


def create(name: str, **overrides):
    """The Flax linen module of model `name` (a key of `MODELS`); `overrides` replace config
    fields (`num_classes`, `dtype`, `backend`, `drop_path_rate`, ...)."""
    return network(_config(name, **overrides))


def create_nnx(name: str, *, rngs, **overrides):
    """The Flax nnx module of model `name`, its parameters drawn from `rngs` (an `nnx.Rngs`;
    drop path draws from its `dropout` stream, else its default one); `overrides` as in `create`."""
    return nnx_network(_config(name, **overrides), rngs=rngs)


def network(config: ModelConfig):
    """The Flax module for `config`."""
    return NAT(config) if config.family == "nat" else DiNATs(config)


def nnx_network(config: ModelConfig, *, rngs):
    """The Flax nnx module for `config`, with the linen module's parameter paths."""
    return NnxClassifier(config, rngs=rngs)


__all__ = ["MODELS", "DiNATs", "ModelConfig", "NAT", "NnxClassifier", "create", "create_nnx", "network",
           "nnx_network"]
