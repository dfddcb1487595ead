"""The reference backend under JAX transforms (jit, vmap, grad, checkpoint, vmap of grad) and in
every float dtype, against the float64 oracle; dtypes of outputs, LSE and gradients; scale 0.

Gradients are held to the same relative bounds as outputs (SPEC "Numerics")."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import oracle
import pytest

import jax_natten

# SPEC "Numerics": relative error against float64 (float64 itself: rounding only).
DTYPES = ["float64", "float32", "float16", "bfloat16"]

C = oracle.Config
CONFIGS = {
    "2d": C(1, (7, 8), 4, 2, 8, 6, (3, 4), stride=(1, 2), dilation=(2, 1), is_causal=(True, False),
            n_extra=2, rpb=True),
    "1d": C(2, (17,), 2, 1, 8, 8, (5,), stride=(2,), dilation=(3,), scale=0.5),
    "3d": C(1, (4, 5, 4), 2, 2, 4, 4, (2, 3, 3), is_causal=(False, False, True), rpb=True),
}


def names_of(config):
    return ["query", "key", "value"] + (["additional_keys", "additional_values"] if config.n_extra else []) \
        + (["rpb"] if config.rpb else [])


def attention(config):
    """(out, lse) of the reference backend as a function of the config's arrays, positionally."""
    names = names_of(config)

    def f(*arrays):
        return jax_natten.neighborhood_attention(**dict(zip(names, arrays)), **config.nbhd_args(),
                                                 scale=config.scale, return_lse=True, backend="reference")

    return f


def dense(config):
    names = names_of(config)

    def f(*arrays):
        return oracle.dense_attention_jnp(**dict(zip(names, arrays)), **config.nbhd_args(), scale=config.scale)

    return f


def problem(config, dtype, seed):
    """Arrays in `dtype` (jnp) and their exact values in float64 (NumPy), positionally."""
    low, exact = oracle.cast(config.inputs(seed), jnp.dtype(dtype))
    names = names_of(config)
    return [jnp.asarray(low[n]) for n in names], [exact[n] for n in names]


def loss_and_cotangents(config, seed):
    """A scalar loss that uses both the output and the LSE, with fixed random cotangents."""
    rng = np.random.default_rng(seed)
    out_shape = (config.batch, *config.spatial, config.heads, config.head_dim_v)
    lse_shape = out_shape[:-1]
    d_out, d_lse = rng.standard_normal(out_shape), rng.standard_normal(lse_shape)

    def loss(f):
        def scalar(*arrays):
            out, lse = f(*arrays)
            acc = jnp.promote_types(out.dtype, jnp.float32)
            return (jnp.sum(out.astype(acc) * d_out.astype(acc))
                    + jnp.sum(lse.astype(acc) * d_lse.astype(acc)))
        return scalar

    return loss


def check_forward(out, lse, exact, config, dtype):
    assert out.dtype == jnp.dtype(dtype), out.dtype
    assert lse.dtype == (jnp.float64 if dtype == "float64" else jnp.float32), lse.dtype
    ref_out, ref_lse = oracle.attention(**dict(zip(names_of(config), exact)), **config.nbhd_args(),
                                        scale=config.scale)
    out64, lse64 = np.asarray(out, np.float64), np.asarray(lse, np.float64)
    assert not np.isnan(out64).any() and not np.isnan(lse64).any()
    assert oracle.rel_err(out64, ref_out) < oracle.TOLERANCE[dtype], oracle.rel_err(out64, ref_out)
    assert oracle.rel_err(lse64, ref_lse) < oracle.TOLERANCE[dtype], oracle.rel_err(lse64, ref_lse)


def dense_grads(config, exact, loss):
    """Gradients of the dense float64 oracle at the exact inputs."""
    args = [jnp.asarray(x) for x in exact]
    return jax.jit(jax.grad(loss(dense(config)), argnums=tuple(range(len(args)))))(*args)


def check_grads_close(grads, expected, args, config, dtype):
    for name, g, e, a in zip(names_of(config), grads, expected, args):
        assert g.dtype == a.dtype, (name, g.dtype)
        g = np.asarray(g, np.float64)
        assert not np.isnan(g).any(), name
        err = oracle.rel_err(g, e)
        assert err < oracle.TOLERANCE[dtype], f"d{name}: relative error {err:.3e} ({dtype})"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(CONFIGS))
def test_jit(name, dtype):
    config = CONFIGS[name]
    args, exact = problem(config, dtype, seed=1)
    out, lse = jax.jit(attention(config))(*args)
    check_forward(out, lse, exact, config, dtype)


def test_eager():
    config = CONFIGS["2d"]
    args, exact = problem(config, "float32", seed=2)
    out, lse = attention(config)(*args)
    check_forward(out, lse, exact, config, "float32")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(CONFIGS))
def test_vmap(name, dtype):
    """vmap over an extra leading axis of every array (rpb and extra KV included)."""
    config = CONFIGS[name]
    problems = [problem(config, dtype, seed=10 + i) for i in range(3)]
    stacked = [jnp.stack(xs) for xs in zip(*(p[0] for p in problems))]
    out, lse = jax.jit(jax.vmap(attention(config)))(*stacked)
    assert out.shape[0] == lse.shape[0] == 3
    for i, (_, exact) in enumerate(problems):
        check_forward(out[i], lse[i], exact, config, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(CONFIGS))
def test_grad(name, dtype):
    config = CONFIGS[name]
    args, exact = problem(config, dtype, seed=3)
    loss = loss_and_cotangents(config, seed=4)
    argnums = tuple(range(len(args)))
    grads = jax.jit(jax.grad(loss(attention(config)), argnums=argnums))(*args)
    check_grads_close(grads, dense_grads(config, exact, loss), args, config, dtype)


@pytest.mark.parametrize("dtype", ["float64", "float32", "bfloat16"])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_checkpoint(name, dtype):
    """jax.checkpoint (remat) around the call: same gradients as without it."""
    config = CONFIGS[name]
    args, exact = problem(config, dtype, seed=5)
    loss = loss_and_cotangents(config, seed=6)
    argnums = tuple(range(len(args)))
    remat = jax.jit(jax.grad(loss(jax.checkpoint(attention(config))), argnums=argnums))(*args)
    plain = jax.jit(jax.grad(loss(attention(config)), argnums=argnums))(*args)
    check_grads_close(remat, dense_grads(config, exact, loss), args, config, dtype)
    for r, p in zip(remat, plain):
        assert oracle.rel_err(np.asarray(r, np.float64), np.asarray(p, np.float64)) < oracle.TOLERANCE[dtype]


@pytest.mark.parametrize("dtype", ["float64", "float32", "bfloat16"])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_vmap_of_grad(name, dtype):
    """Per-example gradients: vmap(grad(loss)) over a leading axis equals the dense oracle's
    gradient of each example."""
    config = CONFIGS[name]
    problems = [problem(config, dtype, seed=20 + i) for i in range(2)]
    stacked = [jnp.stack(xs) for xs in zip(*(p[0] for p in problems))]
    loss = loss_and_cotangents(config, seed=7)
    argnums = tuple(range(len(stacked)))
    grads = jax.jit(jax.vmap(jax.grad(loss(attention(config)), argnums=argnums)))(*stacked)
    for i, (args, exact) in enumerate(problems):
        check_grads_close([g[i] for g in grads], dense_grads(config, exact, loss), args, config, dtype)


def test_grad_of_jit_and_jit_of_grad_agree():
    config = CONFIGS["2d"]
    args, _ = problem(config, "float64", seed=8)
    loss = loss_and_cotangents(config, seed=9)
    argnums = tuple(range(len(args)))
    outer = jax.grad(loss(jax.jit(attention(config))), argnums=argnums)(*args)
    inner = jax.jit(jax.grad(loss(attention(config)), argnums=argnums))(*args)
    for a, b in zip(outer, inner):
        assert oracle.rel_err(a, b) < 1e-12


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("is_causal", [False, True])
def test_scale_zero_is_uniform_attention(is_causal, dtype):
    """scale=0.0 is a real scale: every attended key gets the same weight (the output is the mean
    of the window's values, the LSE the log of its size), unlike the default scale."""
    config = C(1, (6, 9), 2, 1, 8, 4, (3, 4), dilation=(1, 2), is_causal=(is_causal, False))
    arrays, exact = oracle.cast(config.inputs(seed=11), jnp.dtype(dtype))
    q, k, v = (jnp.asarray(arrays[n]) for n in ("query", "key", "value"))
    run = jax.jit(lambda q, k, v, scale: jax_natten.na2d(q, k, v, (3, 4), dilation=(1, 2),
                                                          is_causal=(is_causal, False), scale=scale,
                                                          return_lse=True, backend="reference"),
                  static_argnums=3)
    out, lse = run(q, k, v, 0.0)
    default_out, _ = run(q, k, v, None)

    mask = oracle.dense_mask((6, 9), (3, 4), 1, (1, 2), (is_causal, False)).astype(np.float64)
    values = exact["value"].reshape(1, 54, 1, 4)[0, :, 0]  # one kv head
    mean = (mask @ values / mask.sum(1, keepdims=True)).reshape(1, 6, 9, 1, 4)
    expected_out = np.broadcast_to(mean, (1, 6, 9, 2, 4))
    expected_lse = np.broadcast_to(np.log(mask.sum(1)).reshape(1, 6, 9, 1), (1, 6, 9, 2))
    assert oracle.rel_err(out, expected_out) < oracle.TOLERANCE[dtype]
    assert oracle.rel_err(lse, expected_lse) < oracle.TOLERANCE[dtype]
    assert oracle.rel_err(default_out, expected_out) > 0.05  # the default scale is not 0
