"""Static configuration of the NAT / DiNAT / DiNAT_s image classifiers."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp

from jax_natten import checks

FAMILIES = ("nat", "dinat_s")
ATTENTION = ("neighborhood", "dense")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """A hierarchical neighborhood attention classifier.

    family: "nat" (NAT and DiNAT: two overlapping 3x3 stride-2 convolutions as tokenizer, a
      3x3 stride-2 convolution between levels) or "dinat_s" (Swin-like: 4x4 patch embedding,
      2x2 patch merging).
    depths, num_heads: per level; level i has width embed_dim * 2**i.
    dilations: per level, one dilation per layer (None: 1 everywhere, i.e. NAT).
    layer_scale: initial value of the per-channel residual scales (None: no scales).
    rel_pos_bias: NAT/DiNAT's relative positional bias in every layer (the papers' models have
      it; models built on NATTEN 0.20+ modules do not).
    image_size: the input resolution the dilations were chosen for (informational: any input
      whose feature maps fit every kernel_size * dilation runs).
    attention: "neighborhood", or "dense" for the same network with every token of a level
      attending to all of them (`jax.nn.dot_product_attention`, cuDNN on GPUs): the baseline of
      the model-level benchmarks.
    """

    family: str
    embed_dim: int
    depths: tuple
    num_heads: tuple
    mlp_ratio: float
    drop_path_rate: float
    kernel_size: int = 7
    dilations: tuple | None = None
    layer_scale: float | None = None
    image_size: int = 224
    num_classes: int = 1000
    in_channels: int = 3
    qkv_bias: bool = True
    rel_pos_bias: bool = True
    dtype: jnp.dtype | None = None
    param_dtype: jnp.dtype = jnp.float32
    backend: str | None = None
    attention: str = "neighborhood"

    def __post_init__(self):
        if not isinstance(self.family, str) or self.family not in FAMILIES:
            raise ValueError(f"family={self.family!r}: choose one of {FAMILIES}.")
        if not isinstance(self.attention, str) or self.attention not in ATTENTION:
            raise ValueError(f"attention={self.attention!r}: choose one of {ATTENTION}.")
        for name in ("embed_dim", "image_size", "num_classes", "in_channels"):
            checks.positive_int(name, getattr(self, name))
        for name in ("depths", "num_heads"):
            value = getattr(self, name)
            if not isinstance(value, (tuple, list)):
                raise ValueError(f"{name}={value!r}: it must be a tuple with one positive integer per level.")
            for entry in value:
                checks.positive_int(f"{name}={value!r}: entry", entry)
        if len(self.depths) != len(self.num_heads) or not self.depths:
            raise ValueError(f"depths={self.depths} and num_heads={self.num_heads} need one entry per level.")
        if checks.positive_int("kernel_size", self.kernel_size) < 2:
            raise ValueError(f"kernel_size={self.kernel_size!r}: it must be >= 2.")
        if checks.real_number("mlp_ratio", self.mlp_ratio) <= 0:
            raise ValueError(f"mlp_ratio={self.mlp_ratio!r}: it must be > 0.")
        checks.real_number("layer_scale", self.layer_scale, allow_none=True)
        for level, heads in enumerate(self.num_heads):
            if self.width(level) % heads:
                raise ValueError(f"embed_dim={self.embed_dim}, num_heads={self.num_heads}: level {level} has width "
                                 f"{self.width(level)} (embed_dim * 2**level), not a multiple of its {heads} heads.")
        if self.dilations is not None:
            if not isinstance(self.dilations, (tuple, list)) or len(self.dilations) != len(self.depths) or any(
                    not isinstance(d, (tuple, list)) or len(d) != depth for d, depth in zip(self.dilations, self.depths)):
                raise ValueError(f"dilations={self.dilations}: one tuple per level with one dilation per layer "
                                 f"(depths={self.depths}).")
            for level in self.dilations:
                for entry in level:
                    checks.positive_int(f"dilations={self.dilations!r}: entry", entry)
        if not 0.0 <= checks.real_number("drop_path_rate", self.drop_path_rate) < 1.0:
            raise ValueError(f"drop_path_rate={self.drop_path_rate!r}: it must be in [0, 1).")

    def width(self, level: int) -> int:
        return self.embed_dim * 2 ** level

    def dilation(self, level: int, layer: int) -> int:
        return 1 if self.dilations is None else self.dilations[level][layer]

    def drop_path(self, level: int, layer: int) -> float:
        """Stochastic depth rate, rising linearly from 0 to drop_path_rate over all layers."""
        total = sum(self.depths)
        index = sum(self.depths[:level]) + layer
        return 0.0 if total == 1 else self.drop_path_rate * index / (total - 1)

    def feature_shapes(self, image_shape):
        """The (height, width) of each level's feature map for an image of `image_shape`."""
        height, width = image_shape
        if self.family == "nat":
            # Two stride-2 convolutions with padding 1, then one per level.
            for _ in range(2):
                height, width = (height + 1) // 2, (width + 1) // 2
        else:
            height, width = -(-height // 4), -(-width // 4)
        shapes = []
        for _ in self.depths:
            shapes.append((height, width))
            height, width = (height + 1) // 2, (width + 1) // 2
        return shapes

    def check_images(self, shape):
        """ValueError unless `shape` is `[batch, height, width, in_channels]` with feature maps
        that fit every layer (`check_image`)."""
        if len(shape) != 4 or shape[-1] != self.in_channels:
            raise ValueError(f"images have shape {tuple(shape)}; expected [batch, height, width, "
                             f"{self.in_channels}].")
        self.check_image(shape[1:3])

    def check_image(self, image_shape):
        """ValueError when a level's feature map is smaller than a layer's kernel_size * dilation."""
        if self.attention == "dense":
            return
        for level, shape in enumerate(self.feature_shapes(image_shape)):
            for layer in range(self.depths[level]):
                span = self.kernel_size * self.dilation(level, layer)
                if min(shape) < span:
                    raise ValueError(
                        f"images of {tuple(image_shape)}: level {level} has a {shape[0]}x{shape[1]} feature map, "
                        f"smaller than kernel_size * dilation = {self.kernel_size} * "
                        f"{self.dilation(level, layer)} of its layer {layer}; use larger images or a config "
                        f"for this resolution (image_size={self.image_size}).")
