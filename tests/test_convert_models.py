"""Checkpoint conversion of whole NAT / DiNAT / DiNAT_s classifiers: small PyTorch models with the
key names of SHI-Labs/Neighborhood-Attention-Transformer (tests/torch_nat.py) and random weights,
converted with `convert.nat_to_linen` and `convert.nat_to_nnx`, against our `jax_natten.models`
networks, linen and nnx (reference backend): same logits in float32. With relative positional bias the torch attention is dense
masked attention built from the test oracle; without it, NATTEN 0.21's own module (flex
backend)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import oracle
from conftest import import_natten
from jax_natten import convert, models

IMAGE = 52  # feature maps 13, 7, 4: odd sizes, and dilations up to 4 on the first level


def small_config(variant, layer_scale=None):
    return models.ModelConfig(
        family="nat" if variant in ("nat", "dinat") else "dinat_s", embed_dim=16, depths=(2, 2, 1),
        num_heads=(2, 4, 8), mlp_ratio=2.0, drop_path_rate=0.0, kernel_size=3,
        dilations=((1, 1), (1, 1), (1,)) if variant == "nat" else ((1, 4), (1, 2), (1,)),
        layer_scale=layer_scale, image_size=IMAGE, num_classes=10, backend="reference")


def torch_classifier(variant, config, make_attention, seed):
    import torch_nat

    model = torch_nat.Classifier(variant, 3, config.embed_dim, config.depths, config.num_heads, config.kernel_size,
                                 config.dilations, config.mlp_ratio, config.num_classes, make_attention,
                                 config.layer_scale)
    return torch_nat.randomize(model, seed).eval()


def torch_logits_and_state_dict(model, seed):
    _, torch = import_natten()
    images = torch.randn(2, 3, IMAGE, IMAGE, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        logits = model(images)
    state_dict = {key: value.numpy() for key, value in model.state_dict().items()}
    return images.numpy().transpose(0, 2, 3, 1), logits.numpy(), state_dict


def our_logits(config, state_dict, images):
    """The logits of the linen and of the nnx network holding the converted checkpoint."""
    model = models.network(config)
    params = convert.nat_to_linen(state_dict, model)
    linen_logits = jax.jit(model.apply)({"params": params}, jnp.asarray(images))
    nnx_model = convert.nat_to_nnx(state_dict, models.nnx_network(config, rngs=nnx.Rngs(0)))
    return linen_logits, nnx.jit(lambda m, x: m(x))(nnx_model, jnp.asarray(images))


@pytest.mark.parametrize("variant, layer_scale", [("nat", 0.5), ("dinat", None), ("dinat_s", None)])
def test_model_with_rpb_matches_torch(variant, layer_scale):
    import_natten()
    import torch_nat

    config = small_config(variant, layer_scale)
    model = torch_classifier(variant, config, torch_nat.DenseRPBAttention, seed=1)
    images, want, state_dict = torch_logits_and_state_dict(model, seed=2)
    assert "levels.0.blocks.1.attn.rpb" in state_dict or "layers.0.blocks.1.attn.rpb" in state_dict
    for logits in our_logits(config, state_dict, images):
        assert oracle.rel_err(logits, want) < 1e-5


@pytest.mark.parametrize("variant", ["dinat", "dinat_s"])
def test_model_with_natten_021_attention_matches_torch(variant):
    """NATTEN 0.21's module has no positional bias: our model built with rel_pos_bias=False."""
    natten, _ = import_natten()
    config = dataclasses.replace(small_config(variant), rel_pos_bias=False)

    def attention(dim, heads, kernel_size, dilation):
        return natten.NeighborhoodAttention2D(dim, heads, kernel_size, dilation=dilation)

    model = torch_classifier(variant, config, attention, seed=3)
    images, want, state_dict = torch_logits_and_state_dict(model, seed=4)
    for logits in our_logits(config, state_dict, images):
        assert oracle.rel_err(logits, want) < 1e-5


def test_parameters_land_in_their_layers():
    """Each layer's bias table goes to that layer unchanged (random tables, distinct per layer);
    Linear and Conv weights are transposed to Flax's layouts."""
    import_natten()
    import torch_nat

    config = small_config("dinat_s")
    torch_model = torch_classifier("dinat_s", config, torch_nat.DenseRPBAttention, seed=5)
    state_dict = {key: value.numpy() for key, value in torch_model.state_dict().items()}
    params = convert.nat_to_linen(state_dict, models.network(config))
    np.testing.assert_array_equal(params["layers_1"]["blocks_1"]["attn"]["rpb"],
                                  state_dict["layers.1.blocks.1.attn.rpb"])
    np.testing.assert_array_equal(params["layers_0"]["downsample"]["reduction"]["kernel"],
                                  state_dict["layers.0.downsample.reduction.weight"].T)
    np.testing.assert_array_equal(params["patch_embed"]["proj"]["kernel"],
                                  state_dict["patch_embed.proj.weight"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(params["norm"]["scale"], state_dict["norm.weight"])


def _flat(tree):
    from flax import traverse_util

    return traverse_util.flatten_dict(tree)


def _torch_shape(path, shape):
    return (shape[-1], shape[-2], *shape[:-2]) if path[-1] == "kernel" else shape


@pytest.mark.parametrize("edit, message", [
    (lambda sd: sd.pop("levels.1.blocks.0.attn.rpb"),
     r"parameters without a key: \['levels_1/blocks_0/attn/rpb'\]"),
    (lambda sd: sd.update({"levels.0.blocks.0.attn.relative_position_index": np.zeros(3)}),
     r"keys without a parameter: \['levels.0.blocks.0.attn.relative_position_index'\]"),
    (lambda sd: sd.update({"head.weight": np.zeros((1000, 64), np.float32)}),
     r"state_dict\['head.weight'\] has shape \(1000, 64\); the Flax parameter head/kernel \(64, 10\) needs \(10, 64\)"),
])
def test_model_mismatches_raise(edit, message):
    config = small_config("nat", layer_scale=0.5)
    model = models.network(config)
    images = jax.ShapeDtypeStruct((1, IMAGE, IMAGE, 3), jnp.float32)
    shapes = _flat(jax.eval_shape(model.init, jax.random.key(0), images)["params"])
    state_dict = {convert.torch_key(path): np.zeros(_torch_shape(path, leaf.shape), np.float32)
                  for path, leaf in shapes.items()}
    convert.nat_to_linen(dict(state_dict), model)
    edit(state_dict)
    with pytest.raises(ValueError, match=message):
        convert.nat_to_linen(state_dict, model)
