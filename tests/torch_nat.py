"""Small PyTorch NAT, DiNAT and DiNAT_s classifiers for the conversion tests, built from torch.nn
layers and an attention module given by the caller (NATTEN 0.21's `NeighborhoodAttention2D`, or
`DenseRPBAttention` below). Their submodule names give the state-dict keys of the checkpoints of
SHI-Labs/Neighborhood-Attention-Transformer (`patch_embed.proj.0.weight`,
`levels.1.blocks.0.attn.qkv.weight`, `layers.0.downsample.reduction.weight`, ...); the layers
are written here from that architecture's description. Inputs are NCHW images, as there.

Imports torch: import this module only after `conftest.import_natten()`.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

import oracle


class DenseRPBAttention(nn.Module):
    """NATTEN 0.17's 2-D neighborhood attention with relative positional bias (`qkv`, `rpb`,
    `proj`), as dense masked attention: the mask and the bias table lookup come from the test
    oracle (SPEC's rules), not from jax_natten."""

    def __init__(self, embed_dim, num_heads, kernel_size, dilation=1):
        super().__init__()
        self.num_heads = num_heads
        self.kernel_size = kernel_size
        self.dilation = dilation
        self.qkv = nn.Linear(embed_dim, 3 * embed_dim)
        self.rpb = nn.Parameter(torch.randn(num_heads, 2 * kernel_size - 1, 2 * kernel_size - 1))
        self.proj = nn.Linear(embed_dim, embed_dim)

    def forward(self, x):
        batch, height, width, channels = x.shape
        head_dim = channels // self.num_heads
        qkv = self.qkv(x).reshape(batch, height * width, 3, self.num_heads, head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each [batch, heads, tokens, head_dim]
        mask = oracle.dense_mask((height, width), self.kernel_size, dilation=self.dilation)
        index = oracle.dense_bias_index((height, width), self.kernel_size, dilation=self.dilation)
        bias = self.rpb[(slice(None), *(torch.as_tensor(i) for i in index))]  # [heads, tokens, tokens]
        scores = (q * head_dim ** -0.5) @ k.transpose(-1, -2) + bias
        scores = scores.masked_fill(~torch.as_tensor(np.asarray(mask)), float("-inf"))
        out = scores.softmax(-1) @ v
        return self.proj(out.transpose(1, 2).reshape(batch, height, width, channels))


class Mlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class TransformerLayer(nn.Module):
    """Pre-norm block: attention and MLP residual branches, with optional layer scale."""

    def __init__(self, dim, mlp_ratio, attention, layer_scale=None):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = attention
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.layer_scale = layer_scale is not None
        if self.layer_scale:
            self.gamma1 = nn.Parameter(layer_scale * torch.ones(dim))
            self.gamma2 = nn.Parameter(layer_scale * torch.ones(dim))

    def forward(self, x):
        attn = self.attn(self.norm1(x))
        mlp_in = x + (self.gamma1 * attn if self.layer_scale else attn)
        mlp = self.mlp(self.norm2(mlp_in))
        return mlp_in + (self.gamma2 * mlp if self.layer_scale else mlp)


class ConvTokenizer(nn.Module):
    """NAT's stem: two 3x3 stride-2 convolutions (padding 1), then LayerNorm; NCHW in, NHWC out."""

    def __init__(self, in_chans, dim):
        super().__init__()
        self.proj = nn.Sequential(nn.Conv2d(in_chans, dim // 2, 3, 2, 1), nn.Conv2d(dim // 2, dim, 3, 2, 1))
        self.norm = nn.LayerNorm(dim)

    def forward(self, x):
        return self.norm(self.proj(x).permute(0, 2, 3, 1))


class ConvDownsampler(nn.Module):
    """NAT's downsampler: 3x3 stride-2 convolution without bias to twice the channels, LayerNorm."""

    def __init__(self, dim):
        super().__init__()
        self.reduction = nn.Conv2d(dim, 2 * dim, 3, 2, 1, bias=False)
        self.norm = nn.LayerNorm(2 * dim)

    def forward(self, x):
        return self.norm(self.reduction(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1))


class PatchEmbed(nn.Module):
    """DiNAT_s's stem: a patch_size x patch_size convolution with that stride, LayerNorm."""

    def __init__(self, in_chans, dim, patch_size):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, patch_size, patch_size)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x):
        return self.norm(self.proj(x).permute(0, 2, 3, 1))


class PatchMerging(nn.Module):
    """DiNAT_s's (Swin's) downsampler: pad to even sizes, concatenate the 2x2 neighbors in the
    order (even row, even col), (odd, even), (even, odd), (odd, odd), LayerNorm, Linear to 2C."""

    def __init__(self, dim):
        super().__init__()
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(4 * dim)

    def forward(self, x):
        _, height, width, _ = x.shape
        x = nn.functional.pad(x, (0, 0, 0, width % 2, 0, height % 2))
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], -1)
        return self.reduction(self.norm(x))


class Stage(nn.Module):
    def __init__(self, blocks, downsample):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.downsample = downsample

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return x if self.downsample is None else self.downsample(x)


class Classifier(nn.Module):
    """NAT/DiNAT (`stages="levels"`, ConvTokenizer, ConvDownsampler) or DiNAT_s
    (`stages="layers"`, PatchEmbed, PatchMerging): stem, stages, LayerNorm, mean over tokens,
    linear head."""

    def __init__(self, variant, in_chans, embed_dim, depths, num_heads, kernel_size, dilations,
                 mlp_ratio, num_classes, make_attention, layer_scale=None):
        super().__init__()
        nat = variant in ("nat", "dinat")
        self.patch_embed = ConvTokenizer(in_chans, embed_dim) if nat else PatchEmbed(in_chans, embed_dim, 4)
        stages = []
        for i, depth in enumerate(depths):
            dim = embed_dim * 2 ** i
            blocks = [TransformerLayer(dim, mlp_ratio,
                                       make_attention(dim, num_heads[i], kernel_size, dilations[i][j]),
                                       layer_scale)
                      for j in range(depth)]
            downsample = None
            if i < len(depths) - 1:
                downsample = ConvDownsampler(dim) if nat else PatchMerging(dim)
            stages.append(Stage(blocks, downsample))
        self.stages_name = "levels" if nat else "layers"
        setattr(self, self.stages_name, nn.ModuleList(stages))
        self.norm = nn.LayerNorm(embed_dim * 2 ** (len(depths) - 1))
        self.head = nn.Linear(embed_dim * 2 ** (len(depths) - 1), num_classes)

    def forward(self, x):
        x = self.patch_embed(x)
        for stage in getattr(self, self.stages_name):
            x = stage(x)
        return self.head(self.norm(x).mean(dim=(1, 2)))


def randomize(model, seed):
    """Random values in every parameter (LayerNorm and layer scale too, so that their mapping
    matters)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            fan_in = int(np.prod(param.shape[1:]))
            scale = 1.0 if name.endswith("rpb") else fan_in ** -0.5 if param.ndim > 1 else 0.5
            param.copy_(torch.randn(param.shape, generator=generator) * scale)
            if param.ndim == 1 and name.endswith(("norm1.weight", "norm2.weight", "norm.weight")):
                param.add_(1.0)
    return model
