"""Flax modules (linen and nnx): outputs against projections written out by hand around the
functional operator, linen/nnx agreement on the same weights, dropout, GQA, extra tokens,
relative positional bias, mixed precision and argument checks."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flax import nnx

import jax_natten as jn
from jax_natten import linen as natten_linen
from jax_natten import nnx as natten_nnx
from jax_natten.layer import LayerConfig

CASES = [
    dict(rank=1, spatial=(13,), kernel_size=5, dilation=2, num_heads=4),
    dict(rank=2, spatial=(7, 9), kernel_size=(3, 4), stride=(1, 2), is_causal=(True, False), num_heads=4, num_kv_heads=2),
    dict(rank=2, spatial=(8, 8), kernel_size=3, num_heads=2, rel_pos_bias=True, extra=3),
    dict(rank=3, spatial=(4, 5, 6), kernel_size=(2, 3, 3), num_heads=2, num_kv_heads=1, extra=2),
]


def module_kwargs(case):
    return {k: v for k, v in case.items() if k not in ("rank", "spatial", "extra")}


def inputs(case, dtype=jnp.float32):
    rng = np.random.default_rng(case["rank"])
    x = jnp.asarray(rng.standard_normal((2, *case["spatial"], 16)), dtype)
    extra = jnp.asarray(rng.standard_normal((2, case["extra"], 16)), dtype) if case.get("extra") else None
    return x, extra


def by_hand(params, case, x, extra):
    """The layer written out: projections, heads, `neighborhood_attention`, output projection."""
    heads = case["num_heads"]
    kv_heads = case.get("num_kv_heads") or heads

    def dense(name, t):
        return t @ params[name]["kernel"] + params[name]["bias"]

    def heads_of(t, h):
        return t.reshape(*t.shape[:-1], h, -1)

    def keys_values(t):
        kv = dense("qkv", t)[..., 16:] if "qkv" in params else dense("kv", t)
        k, v = jnp.split(kv, 2, axis=-1)
        return heads_of(k, kv_heads), heads_of(v, kv_heads)

    q = dense("qkv", x)[..., :16] if "qkv" in params else dense("q", x)
    k, v = keys_values(x)
    ek, ev = keys_values(extra) if extra is not None else (None, None)
    out = jn.neighborhood_attention(
        heads_of(q, heads), k, v, case["kernel_size"], case.get("stride", 1), case.get("dilation", 1),
        case.get("is_causal", False), rpb=params.get("rpb"), additional_keys=ek, additional_values=ev)
    return dense("proj", out.reshape(*out.shape[:-2], 16))


def linen_module(case, **extra_kwargs):
    cls = getattr(natten_linen, f"NeighborhoodAttention{case['rank']}D")
    return cls(embed_dim=16, **module_kwargs(case), **extra_kwargs)


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c['rank']}d")
def test_linen_matches_projections_by_hand(case):
    x, extra = inputs(case)
    module = linen_module(case)
    params = module.init(jax.random.key(0), x, extra)["params"]
    got = jax.jit(module.apply)({"params": params}, x, extra)
    want = by_hand(params, case, x, extra)
    assert got.shape == x.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c['rank']}d")
def test_nnx_matches_linen_on_the_same_weights(case):
    x, extra = inputs(case)
    params = linen_module(case).init(jax.random.key(0), x, extra)["params"]
    cls = getattr(natten_nnx, f"NeighborhoodAttention{case['rank']}D")
    module = cls(16, rngs=nnx.Rngs(1), deterministic=True, **module_kwargs(case))
    state = nnx.state(module, nnx.Param)
    assert set(jax.tree_util.tree_leaves(jax.tree_util.tree_map(lambda a: a.shape, params))) == \
        set(jax.tree_util.tree_leaves(jax.tree_util.tree_map(lambda a: a.shape, state)))
    nnx.update(module, nnx.State(params))
    np.testing.assert_allclose(module(x, extra), by_hand(params, case, x, extra), rtol=1e-5, atol=1e-5)


def test_dropout_path_equals_the_single_call_without_dropout():
    """With attention dropout the weights are materialized (qk, softmax, av); that path with an
    identity dropout must equal the single `neighborhood_attention` call, bias included."""
    cfg = LayerConfig(2, 16, 4, (3, 5), dilation=(2, 1), rel_pos_bias=True, attn_drop=0.5)
    rng = np.random.default_rng(0)
    q, k, v = (jnp.asarray(rng.standard_normal((2, 9, 10, 4, 4)), jnp.float32) for _ in range(3))
    rpb = jnp.asarray(rng.standard_normal(cfg.rpb_shape), jnp.float32)
    fused = cfg.attend(q, k, v, rpb, None, None, dropout=None)
    unfused = cfg.attend(q, k, v, rpb, None, None, dropout=lambda w: w)
    np.testing.assert_allclose(unfused, fused, rtol=1e-5, atol=1e-6)


def test_dropout_only_when_not_deterministic():
    case = dict(rank=2, spatial=(8, 8), kernel_size=3, num_heads=2, rel_pos_bias=True)
    x, _ = inputs(case)
    module = linen_module(case, attn_drop=0.5, proj_drop=0.1)
    variables = module.init(jax.random.key(0), x)
    plain = module.apply(variables, x)
    np.testing.assert_allclose(plain, linen_module(case).apply(variables, x), rtol=1e-6)
    dropped = module.apply(variables, x, deterministic=False, rngs={"dropout": jax.random.key(3)})
    assert np.isfinite(np.asarray(dropped)).all() and not np.allclose(dropped, plain)
    nnx_module = natten_nnx.NeighborhoodAttention2D(16, 2, 3, rel_pos_bias=True, attn_drop=0.5, rngs=nnx.Rngs(0))
    assert not np.allclose(nnx_module(x), nnx_module(x, deterministic=True))


def test_gradients_and_mixed_precision():
    case = dict(rank=1, spatial=(16,), kernel_size=4, num_heads=4, num_kv_heads=2, rel_pos_bias=True)
    x, _ = inputs(case, jnp.bfloat16)
    module = linen_module(case, dtype=jnp.bfloat16)
    params = module.init(jax.random.key(0), x)["params"]
    assert all(p.dtype == jnp.float32 for p in jax.tree_util.tree_leaves(params))
    assert module.apply({"params": params}, x).dtype == jnp.bfloat16
    grads = jax.grad(lambda p: module.apply({"params": p}, x).astype(jnp.float32).sum())(params)
    # Without dtype, bfloat16 inputs meet float32 parameters: the layer computes in float32.
    assert linen_module(case).apply({"params": params}, x).dtype == jnp.float32
    for g in jax.tree_util.tree_leaves(grads):
        assert np.isfinite(np.asarray(g, np.float32)).all() and np.abs(np.asarray(g, np.float32)).sum() > 0


@pytest.mark.parametrize("kwargs, message", [
    (dict(embed_dim=18, num_heads=4, kernel_size=3), "embed_dim=18 must be a multiple of num_heads=4"),
    (dict(embed_dim=16, num_heads=4, num_kv_heads=3, kernel_size=3), "multiple of the key/value heads"),
    (dict(embed_dim=16, num_heads=4, kernel_size=1), "kernel_size=1"),
    (dict(embed_dim=16, num_heads=4, kernel_size=(3, 3, 3)), "one per spatial axis"),
    (dict(embed_dim=16, num_heads=4, kernel_size=3, attn_drop=1.0), "attn_drop=1.0"),
])
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        natten_nnx.NeighborhoodAttention2D(**kwargs, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=message):
        natten_linen.NeighborhoodAttention2D(**kwargs).init(jax.random.key(0), jnp.zeros((1, 8, 8, kwargs["embed_dim"])))


def test_bad_input_shape():
    module = natten_nnx.NeighborhoodAttention2D(16, 4, 3, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"embed_dim=16"):
        module(jnp.zeros((1, 8, 8, 12)))
    with pytest.raises(ValueError, match=r"2-D layer"):
        module(jnp.zeros((1, 8, 16)))
