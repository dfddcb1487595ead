"""The nnx model zoo (`models.create_nnx`, `models.nnx_network`) against the linen one: the same
parameter paths, shapes and dtypes for every configuration, the same logits on the same weights
(small configs, reference backend), and converted checkpoints that load into both."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx, traverse_util

import oracle
from jax_natten import convert, models

IMAGE = 36  # NAT feature maps 9 and 5, DiNAT_s 9 and 5: odd sizes, padding in patch merging


def small_config(family, **changes):
    fields = dict(family=family, embed_dim=16, depths=(2, 1), num_heads=(2, 4), mlp_ratio=2.0, drop_path_rate=0.2,
                  kernel_size=3, dilations=((1, 3), (1,)), image_size=IMAGE, num_classes=7, backend="reference")
    return models.ModelConfig(**{**fields, **changes})


CONFIGS = {
    "dinat_layer_scale": small_config("nat", layer_scale=0.5),
    "nat_no_rpb": small_config("nat", dilations=None, rel_pos_bias=False, qkv_bias=False),
    "dinat_s": small_config("dinat_s"),
    "dinat_s_dense": small_config("dinat_s", attention="dense"),
}


infer = nnx.jit(lambda model, x: model(x))
train_forward = nnx.jit(lambda model, x: model(x, deterministic=False))


def images(seed, batch=2):
    return jax.random.normal(jax.random.key(seed), (batch, IMAGE, IMAGE, 3), jnp.float32)


def nnx_params(model):
    return {path: param[...] for path, param in nnx.to_flat_state(nnx.state(model, nnx.Param))}


def linen_params(config, seed):
    return models.network(config).init(jax.random.key(seed), images(0, batch=1))["params"]


@pytest.mark.parametrize("name", ["nat_small", "dinat_mini", "dinat_s_tiny"])
def test_zoo_has_linen_parameter_paths(name):
    """Zoo configurations of both families, with and without layer scale: the nnx model's
    parameters are the linen model's, path for path, in shape and dtype (abstract
    construction: no weights are computed)."""
    config = models.MODELS[name]
    size = config.image_size
    linen_shapes = traverse_util.flatten_dict(jax.eval_shape(
        models.network(config).init, jax.random.key(0), jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32))["params"])
    nnx_model = nnx.eval_shape(lambda: models.create_nnx(name, rngs=nnx.Rngs(0)))
    nnx_shapes = {path: (p.shape, p.dtype) for path, p in nnx.to_flat_state(nnx.state(nnx_model, nnx.Param))}
    assert set(nnx_shapes) == set(linen_shapes), set(nnx_shapes) ^ set(linen_shapes)
    assert nnx_shapes == {path: (s.shape, s.dtype) for path, s in linen_shapes.items()}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_same_logits_on_same_weights(name):
    config = CONFIGS[name]
    params = linen_params(config, seed=1)
    model = models.nnx_network(config, rngs=nnx.Rngs(2))
    before = nnx_params(model)
    nnx.update(model, nnx.from_flat_state(traverse_util.flatten_dict(params)))
    assert all(not np.array_equal(before[path], value) for path, value in nnx_params(model).items()
               if path[-1] in ("kernel", "rpb")), "the nnx model's own init equals the linen params: a vacuous test"
    x = images(3)
    want = jax.jit(models.network(config).apply)({"params": params}, x)
    got = infer(model, x)
    assert got.shape == (2, config.num_classes)
    assert oracle.rel_err(got, want) < 1e-6


def test_initialization_matches_linen_statistics():
    """The nnx model draws its weights from the linen model's initializers (truncated normal
    0.02 for the MLP and head, layer scales at their value): compare per-parameter scales."""
    config = CONFIGS["dinat_layer_scale"]
    linen = traverse_util.flatten_dict(linen_params(config, seed=4))
    ours = nnx_params(models.nnx_network(config, rngs=nnx.Rngs(4)))
    for path, value in linen.items():
        np.testing.assert_allclose(np.std(ours[path]), np.std(value), rtol=0.35, atol=1e-6, err_msg=str(path))
        if path[-1] in ("gamma1", "gamma2", "scale"):
            np.testing.assert_array_equal(ours[path], value)


def test_drop_path_is_random_in_training_only():
    config = CONFIGS["dinat_s"]
    model = models.nnx_network(config, rngs=nnx.Rngs(params=0, dropout=1))
    x = images(5, batch=8)
    inference = infer(model, x)
    np.testing.assert_array_equal(infer(model, x), inference)
    first, second = train_forward(model, x), train_forward(model, x)
    assert not np.allclose(first, inference) and not np.allclose(first, second)


@pytest.mark.parametrize("name", ["dinat_layer_scale", "dinat_s"])
def test_converted_checkpoint_loads_into_both(name):
    """A PyTorch-layout state dict (random values under the checkpoint's keys) through
    `nat_to_linen` and `nat_to_nnx`: the same logits."""
    config = CONFIGS[name]
    rng = np.random.default_rng(6)
    shapes = traverse_util.flatten_dict(jax.eval_shape(models.network(config).init, jax.random.key(0),
                                                       images(0, batch=1))["params"])
    state_dict = {}
    for path, leaf in shapes.items():
        shape = (leaf.shape[-1], leaf.shape[-2], *leaf.shape[:-2]) if path[-1] == "kernel" else leaf.shape
        state_dict[convert.torch_key(path)] = rng.standard_normal(shape).astype(np.float32) * 0.1
    linen_model = models.network(config)
    want = jax.jit(linen_model.apply)({"params": convert.nat_to_linen(state_dict, linen_model)}, images(7))
    model = convert.nat_to_nnx(state_dict, models.nnx_network(config, rngs=nnx.Rngs(0)))
    assert oracle.rel_err(infer(model, images(7)), want) < 1e-6
    state_dict.pop(next(iter(state_dict)))
    with pytest.raises(ValueError, match="parameters without a key"):
        convert.nat_to_nnx(state_dict, model)
