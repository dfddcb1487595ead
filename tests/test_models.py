"""Model zoo: every registered configuration against its paper's parameter count, the networks'
forward pass written out by hand for a small config, drop path, and argument errors."""

from __future__ import annotations

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jax_natten as jn
from jax_natten import models

# Millions of parameters (1000 classes) in the NAT, DiNAT and DiNAT_s papers' tables.
PAPER_PARAMS = {
    "nat_mini": 20, "nat_tiny": 28, "nat_small": 51, "nat_base": 90,
    "dinat_mini": 20, "dinat_tiny": 28, "dinat_small": 51, "dinat_base": 90, "dinat_large": 200,
    "dinat_large_384": 200,
    "dinat_s_tiny": 28, "dinat_s_small": 50, "dinat_s_base": 88, "dinat_s_large": 197, "dinat_s_large_384": 197,
}

SMALL_NAT = dict(embed_dim=16, depths=(2, 1), num_heads=(2, 4), mlp_ratio=2.0, drop_path_rate=0.1,
                 kernel_size=3, dilations=((1, 2), (1,)), num_classes=5)


def parameter_count(config):
    shapes = jax.eval_shape(models.network(config).init, jax.random.key(0),
                            jnp.zeros((1, config.image_size, config.image_size, 3), jnp.float32))
    return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(shapes))


def test_registry_matches_papers():
    assert set(models.MODELS) == set(PAPER_PARAMS)


@pytest.mark.parametrize("name", sorted(PAPER_PARAMS))
def test_parameter_count_matches_paper(name):
    millions = parameter_count(models.MODELS[name]) / 1e6
    assert abs(millions - PAPER_PARAMS[name]) / PAPER_PARAMS[name] < 0.02, millions


@pytest.mark.parametrize("name", ["dinat_tiny", "dinat_large_384", "dinat_s_tiny"])
def test_dilations_fit_their_resolution(name):
    config = models.MODELS[name]
    config.check_image((config.image_size, config.image_size))
    with pytest.raises(ValueError, match="kernel_size \\* dilation"):
        config.check_image((config.image_size // 2, config.image_size // 2))


def layer_norm(x, p):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / jnp.sqrt(var + 1e-5) * p["scale"] + p["bias"]


def conv(x, p, stride, padding):
    return jax.lax.conv_general_dilated(x, p["kernel"], (stride, stride), padding,
                                        dimension_numbers=("NHWC", "HWIO", "NHWC")) + p.get("bias", 0)


def nat_by_hand(params, config, images):
    """NAT/DiNAT written out with jax.lax and jax_natten.na2d, from the parameter tree."""
    pe = params["patch_embed"]
    x = conv(conv(images, pe["proj_0"], 2, ((1, 1), (1, 1))), pe["proj_1"], 2, ((1, 1), (1, 1)))
    x = layer_norm(x, pe["norm"])
    for level, depth in enumerate(config.depths):
        lp = params[f"levels_{level}"]
        heads = config.num_heads[level]
        for layer in range(depth):
            bp = lp[f"blocks_{layer}"]
            h = layer_norm(x, bp["norm1"])
            qkv = h @ bp["attn"]["qkv"]["kernel"] + bp["attn"]["qkv"]["bias"]
            q, k, v = (t.reshape(*t.shape[:-1], heads, -1) for t in jnp.split(qkv, 3, -1))
            out = jn.na2d(q, k, v, config.kernel_size, dilation=config.dilation(level, layer),
                          rpb=bp["attn"]["rpb"], backend="reference")
            x = x + out.reshape(x.shape) @ bp["attn"]["proj"]["kernel"] + bp["attn"]["proj"]["bias"]
            h = layer_norm(x, bp["norm2"])
            h = jax.nn.gelu(h @ bp["mlp"]["fc1"]["kernel"] + bp["mlp"]["fc1"]["bias"], approximate=False)
            x = x + h @ bp["mlp"]["fc2"]["kernel"] + bp["mlp"]["fc2"]["bias"]
        if level < len(config.depths) - 1:
            x = layer_norm(conv(x, lp["downsample"]["reduction"], 2, ((1, 1), (1, 1))), lp["downsample"]["norm"])
    x = layer_norm(x, params["norm"]).mean((1, 2))
    return x @ params["head"]["kernel"] + params["head"]["bias"]


@pytest.mark.slow
def test_nat_forward_matches_hand_written():
    config = models.ModelConfig(family="nat", **SMALL_NAT)
    images = jnp.asarray(np.random.default_rng(0).standard_normal((2, 29, 31, 3)), jnp.float32)
    model = models.network(config)
    params = model.init(jax.random.key(1), images)["params"]
    got = model.apply({"params": params}, images)
    want = nat_by_hand(params, config, images)
    assert got.shape == (2, 5)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_without_relative_positional_bias():
    config = models.ModelConfig(family="nat", **SMALL_NAT, rel_pos_bias=False)
    images = jnp.zeros((1, 24, 24, 3), jnp.float32)
    params = models.network(config).init(jax.random.key(0), images)["params"]
    assert "rpb" not in params["levels_0"]["blocks_0"]["attn"]
    with_bias = models.network(models.ModelConfig(family="nat", **SMALL_NAT)).init(jax.random.key(0), images)
    assert "rpb" in with_bias["params"]["levels_0"]["blocks_0"]["attn"]


def test_dinat_s_shapes_and_patch_merging_order():
    config = models.ModelConfig(family="dinat_s", **{**SMALL_NAT, "dilations": ((1, 1), (1,))})
    images = jnp.asarray(np.random.default_rng(2).standard_normal((2, 30, 26, 3)), jnp.float32)
    model = models.network(config)
    variables = model.init(jax.random.key(0), images)
    assert model.apply(variables, images).shape == (2, 5)
    merging = models.networks.PatchMerging(config, 1)
    x = jnp.arange(16, dtype=jnp.float32).reshape(1, 4, 4, 1)
    merged = merging.apply(merging.init(jax.random.key(0), x), x, method=lambda m, t: jnp.concatenate(
        [t[:, 0::2, 0::2], t[:, 1::2, 0::2], t[:, 0::2, 1::2], t[:, 1::2, 1::2]], -1))
    np.testing.assert_array_equal(merged[0, 0, 0], [0, 4, 1, 5])


@pytest.mark.slow
def test_drop_path_only_when_not_deterministic():
    config = models.ModelConfig(family="nat", **{**SMALL_NAT, "drop_path_rate": 0.5})
    images = jnp.asarray(np.random.default_rng(3).standard_normal((8, 24, 24, 3)), jnp.float32)
    model = models.network(config)
    variables = model.init(jax.random.key(0), images)
    inference = model.apply(variables, images)
    np.testing.assert_array_equal(inference, model.apply(variables, images, deterministic=True))
    first = model.apply(variables, images, deterministic=False, rngs={"dropout": jax.random.key(1)})
    second = model.apply(variables, images, deterministic=False, rngs={"dropout": jax.random.key(2)})
    assert not np.allclose(first, inference) and not np.allclose(first, second)
    with pytest.raises(Exception, match="dropout"):
        model.apply(variables, images, deterministic=False)


def test_bfloat16_compute_with_float32_params():
    config = models.ModelConfig(family="nat", **SMALL_NAT, dtype=jnp.bfloat16)
    images = jnp.ones((1, 24, 24, 3), jnp.float32)
    model = models.network(config)
    variables = model.init(jax.random.key(0), images)
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(variables))
    logits = model.apply(variables, images)
    assert logits.dtype == jnp.bfloat16 and bool(jnp.all(jnp.isfinite(logits)))


def test_create_and_errors():
    model = models.create("nat_mini", num_classes=10, image_size=64)
    assert isinstance(model, nn.Module) and model.config.num_classes == 10
    with pytest.raises(ValueError, match="unknown"):
        models.create("nat_huge")
    with pytest.raises(ValueError, match="family"):
        models.ModelConfig(family="swin", **SMALL_NAT)
    with pytest.raises(ValueError, match="dilations"):
        models.ModelConfig(family="nat", **{**SMALL_NAT, "dilations": ((1,), (1,))})
    with pytest.raises(ValueError, match="num_heads"):
        models.ModelConfig(family="nat", **{**SMALL_NAT, "num_heads": (3, 4)})
    with pytest.raises(ValueError, match="drop_path_rate"):
        dataclasses.replace(models.MODELS["nat_mini"], drop_path_rate=1.0)
    small = models.network(models.ModelConfig(family="nat", **SMALL_NAT))
    with pytest.raises(ValueError, match="expected \\[batch, height, width, 3\\]"):
        small.init(jax.random.key(0), jnp.zeros((1, 16, 16)))
    with pytest.raises(ValueError, match="feature map"):
        small.init(jax.random.key(0), jnp.zeros((1, 8, 8, 3)))
