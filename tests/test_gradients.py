"""Gradients of the reference backend in float64: finite differences (`check_grads`) for
attention, qk and av, and autodiff of the reference against autodiff of the dense oracle."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import oracle
import pytest
from jax.test_util import check_grads

import jax_natten

C = oracle.Config
GRAD_CONFIGS = [
    C(1, (9,), 2, 2, 4, 4, (3,)),
    C(2, (11,), 2, 1, 4, 3, (4,), stride=(2,), is_causal=(True,)),
    C(1, (13,), 4, 2, 3, 3, (3,), dilation=(3,), rpb=True),
    C(1, (6, 7), 2, 2, 4, 4, (3, 4), stride=(2, 1), dilation=(2, 1), is_causal=(True, False),
      n_extra=3),
    C(1, (5, 6), 2, 2, 3, 5, (2, 3), rpb=True, scale=0.7),
    C(1, (3, 4, 5), 3, 1, 4, 4, (2, 3, 3), is_causal=(True, False, False)),
    C(1, (4, 4, 5), 2, 2, 3, 2, (2, 2, 2), stride=(2, 1, 2), dilation=(2, 1, 2), n_extra=2,
      rpb=True, scale=0.0),
    C(2, (8,), 1, 1, 4, 4, (8,), is_causal=(True,), n_extra=1),
    C(1, (7, 5), 2, 2, 3, 3, (3, 5), stride=(3, 5), dilation=(2, 1)),
    C(1, (6, 6), 2, 1, 4, 4, (3, 3), dilation=(2, 2), rpb=True, n_extra=2),
    C(1, (7, 3, 4), 2, 1, 3, 2, (3, 2, 4), stride=(2, 2, 3), is_causal=(False, True, True),
      rpb=True),
    C(1, (10,), 4, 4, 2, 4, (5,), stride=(5,), dilation=(2,), is_causal=(True,), scale=-0.4),
]


def config_id(config):
    return f"{config.rank}d-{'x'.join(map(str, config.spatial))}-k{'x'.join(map(str, config.kernel_size))}"


def attention_fn(config, return_lse, attention=None):
    """f(*arrays) for check_grads / grad, with the config's optional inputs as positional args."""
    names = ["query", "key", "value"] + (["additional_keys", "additional_values"] if config.n_extra else []) \
        + (["rpb"] if config.rpb else [])
    attention = attention or (lambda **kw: jax_natten.neighborhood_attention(
        **kw, return_lse=return_lse, backend="reference"))

    def f(*arrays):
        return attention(**dict(zip(names, arrays)), **config.nbhd_args(), scale=config.scale)

    return names, f


# Every configuration with the LSE in the loss; those with rpb or extra KV also without it.
CHECK_GRADS_CASES = [(c, True) for c in GRAD_CONFIGS] + [(c, False) for c in GRAD_CONFIGS if c.rpb or c.n_extra]


@pytest.mark.parametrize("config,return_lse", CHECK_GRADS_CASES,
                         ids=[f"{config_id(c)}-{'with-lse' if r else 'out-only'}" for c, r in CHECK_GRADS_CASES])
def test_attention_check_grads(config, return_lse):
    names, f = attention_fn(config, return_lse)
    arrays = config.inputs(seed=1)
    args = [jnp.asarray(arrays[n], jnp.float64) for n in names]
    check_grads(jax.jit(f), args, order=1, modes=("rev",))


@pytest.mark.parametrize("config", GRAD_CONFIGS, ids=config_id)
def test_attention_grads_match_dense_oracle(config):
    """The VJP of (out, lse) equals the dense float64 oracle's, for every input (rpb included)."""
    names, f = attention_fn(config, return_lse=True)
    _, dense = attention_fn(config, return_lse=True, attention=oracle.dense_attention_jnp)
    arrays = config.inputs(seed=2)
    args = [jnp.asarray(arrays[n], jnp.float64) for n in names]
    rng = np.random.default_rng(3)
    out, lse = jax.jit(f)(*args)
    ref_out, ref_lse = jax.jit(dense)(*args)
    cotangents = (jnp.asarray(rng.standard_normal(out.shape)), jnp.asarray(rng.standard_normal(lse.shape)))
    got = jax.jit(lambda *a: jax.vjp(f, *a)[1](cotangents))(*args)
    expected = jax.jit(lambda *a: jax.vjp(dense, *a)[1](cotangents))(*args)
    assert oracle.rel_err(out, ref_out) < 1e-12 and oracle.rel_err(lse, ref_lse) < 1e-12
    for name, g, e in zip(names, got, expected):
        assert g.dtype == jnp.float64
        assert not np.isnan(np.asarray(g)).any(), f"d{name}: NaN for {config}"
        if config.scale == 0.0 and name in ("query", "key", "additional_keys"):
            # scale 0 cuts these off the scores: their gradient is exactly zero.
            assert not np.asarray(g).any() and not np.asarray(e).any(), name
            continue
        err = oracle.rel_err(g, e)
        assert err < 1e-10, f"d{name}: relative error {err:.3e} for {config}"


UNFUSED_GRAD_CONFIGS = [
    C(1, (9,), 2, 2, 3, 3, (3,), rpb=True),
    C(2, (10,), 4, 2, 3, 3, (4,), stride=(2,), dilation=(2,), is_causal=(True,)),
    C(1, (5, 6), 2, 1, 3, 3, (3, 2), dilation=(1, 3), rpb=True),
    C(1, (5, 4), 2, 2, 2, 2, (4, 3), stride=(3, 1), is_causal=(True, False)),
    C(1, (3, 4, 5), 2, 1, 2, 2, (2, 3, 3), rpb=True),
    C(1, (4, 3, 6), 2, 2, 2, 2, (2, 3, 2), stride=(2, 3, 1), dilation=(1, 1, 3),
      is_causal=(True, False, True)),
]


def _finite(x):
    """-inf (empty causal slots) -> 0, so that finite differences stay finite."""
    return jnp.where(jnp.isneginf(x), 0.0, x)


@pytest.mark.parametrize("config", UNFUSED_GRAD_CONFIGS, ids=config_id)
def test_qk_check_grads(config):
    na_qk = getattr(jax_natten, f"na{config.rank}d_qk")
    arrays = config.inputs(seed=4)
    args = [jnp.asarray(arrays[n], jnp.float64) for n in ("query", "key") + (("rpb",) if config.rpb else ())]

    def f(query, key, rpb=None):
        return _finite(na_qk(query, key, **config.nbhd_args(), rpb=rpb, backend="reference"))

    check_grads(jax.jit(f), args, order=1, modes=("rev",))


@pytest.mark.parametrize("config", UNFUSED_GRAD_CONFIGS, ids=config_id)
def test_av_check_grads(config):
    na_av = getattr(jax_natten, f"na{config.rank}d_av")
    rng = np.random.default_rng(5)
    window = math.prod(config.kernel_size)
    attn = jnp.asarray(rng.standard_normal((config.batch, *config.spatial, config.heads, window)))
    value = jnp.asarray(config.inputs(seed=5)["value"], jnp.float64)

    def f(attn, value):
        return na_av(attn, value, **config.nbhd_args(), backend="reference")

    check_grads(jax.jit(f), (attn, value), order=1, modes=("rev",))


@pytest.mark.parametrize("config", UNFUSED_GRAD_CONFIGS, ids=config_id)
def test_av_gradient_ignores_empty_slots(config):
    """Empty causal slots take no part in av: their weights get a zero gradient."""
    na_av = getattr(jax_natten, f"na{config.rank}d_av")
    rng = np.random.default_rng(6)
    window = math.prod(config.kernel_size)
    attn = jnp.asarray(rng.standard_normal((config.batch, *config.spatial, config.heads, window)))
    value = jnp.asarray(config.inputs(seed=6)["value"], jnp.float64)
    grad = jax.jit(jax.grad(lambda a: jnp.sum(na_av(a, value, **config.nbhd_args(), backend="reference") ** 2)))(attn)
    _, valid, _ = oracle.slot_tables(config.spatial, config.kernel_size, config.stride,
                                     config.dilation, config.is_causal)
    grad = np.asarray(grad).reshape(config.batch, -1, config.heads, window).transpose(0, 2, 1, 3)
    assert not grad[:, :, ~valid].any()
    assert np.all(grad[:, :, valid] != 0)
