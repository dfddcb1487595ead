"""The blocked backend (jax_natten/backends/blocked.py) against the float64 oracle: the
reference sweep's configurations forward and backward (float32), other dtypes, check_grads in
float64, the LSE cotangent, transformations, batch/head sharding, the compiled HLO's largest
tensor and memory, and the tile plan that explain() reports."""

from __future__ import annotations

import functools
import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import oracle
import pytest
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P
from conftest import largest_hlo_array
from jax.test_util import check_grads
from test_gradients import GRAD_CONFIGS, attention_fn
from test_reference_sweep import ATTENTION_CONFIGS, config_id

import jax_natten
from jax_natten import checks
from jax_natten.backends import blocked
from jax_natten.neighborhood import token_slot_tables

# Every configuration of the reference sweep with JAX_NATTEN_BLOCKED_SWEEP=full; by default
# every SWEEP_STEP-th one (each compiles a forward and a backward scan: about 1 s on 2 cores).
SWEEP_STEP = 1 if os.environ.get("JAX_NATTEN_BLOCKED_SWEEP") == "full" else 8
TOLERANCE = {np.float32: 1e-5, np.float16: 2e-3, jnp.bfloat16: 1e-2, np.float64: 1e-12}
GRAD_TOLERANCE = {np.float32: 1e-4, np.float16: 1e-2, jnp.bfloat16: 5e-2, np.float64: 1e-10}


def _names(config):
    return ["query", "key", "value"] + (["additional_keys", "additional_values"] if config.n_extra else []) \
        + (["rpb"] if config.rpb else [])


def _blocked_fn(config):
    _, f = attention_fn(config, return_lse=True, attention=lambda **kw: jax_natten.neighborhood_attention(
        **kw, return_lse=True, backend="blocked"))
    return f


def _dense_fn(config):
    return attention_fn(config, return_lse=True, attention=oracle.dense_attention_jnp)[1]


def _vjp(f, args, cotangents):
    (out, lse), back = jax.vjp(f, *args)
    return out, lse, back((jnp.asarray(cotangents[0], out.dtype), jnp.asarray(cotangents[1], lse.dtype)))


def _check(config, dtype, seed):
    """Outputs, LSE and the VJP of both (every input) against the dense float64 oracle."""
    names = _names(config)
    arrays, exact = oracle.cast(config.inputs(seed=seed), dtype)
    args = [jnp.asarray(arrays[n]) for n in names]
    rng = np.random.default_rng(seed + 1)
    shape = (config.batch, *config.spatial, config.heads)
    cotangents = (rng.standard_normal(shape + (config.head_dim_v,)), rng.standard_normal(shape))

    out, lse, grads = jax.jit(lambda *a: _vjp(_blocked_fn(config), a, cotangents))(*args)
    exact_args = [jnp.asarray(exact[n]) for n in names]
    ref_out, ref_lse, ref_grads = jax.jit(lambda *a: _vjp(_dense_fn(config), a, cotangents))(*exact_args)
    assert out.dtype == dtype and lse.dtype == jnp.promote_types(dtype, jnp.float32)
    for what, got, want, tol in [("output", out, ref_out, TOLERANCE[dtype]), ("LSE", lse, ref_lse, TOLERANCE[dtype])] + \
            [(f"d{n}", g, r, GRAD_TOLERANCE[dtype]) for n, g, r in zip(names, grads, ref_grads)]:
        got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
        assert got.shape == want.shape, what
        assert not np.isnan(got).any(), f"{what}: NaN for {config}"
        if not np.any(want):
            assert not np.any(got), f"{what}: nonzero where the oracle's is zero for {config}"
            continue
        err = oracle.rel_err(got, want)
        assert err < tol, f"{what}: relative error {err:.3e} for {config}"


@pytest.mark.parametrize("index", range(0, len(ATTENTION_CONFIGS), SWEEP_STEP),
                         ids=functools.partial(config_id, configs=ATTENTION_CONFIGS))
def test_sweep_forward_and_backward(index):
    _check(ATTENTION_CONFIGS[index], np.float32, seed=index)


@pytest.mark.parametrize("dtype", [np.float16, jnp.bfloat16, np.float64], ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("index", range(0, len(GRAD_CONFIGS), 3))
def test_dtypes(dtype, index):
    _check(GRAD_CONFIGS[index], dtype, seed=100 + index)


@pytest.mark.parametrize("config", GRAD_CONFIGS[::2], ids=lambda c: f"{c.rank}d-{'x'.join(map(str, c.spatial))}")
def test_check_grads_float64(config):
    arrays = config.inputs(seed=7)
    args = [jnp.asarray(arrays[n], jnp.float64) for n in _names(config)]
    check_grads(jax.jit(_blocked_fn(config)), args, order=1, modes=("rev",))


def _problem(seed, batch=2, spatial=(9, 11), heads=4, heads_kv=2, dim=8, dtype=np.float32):
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((batch, *spatial, heads, dim))
    k, v = (rng.standard_normal((batch, *spatial, heads_kv, dim)) for _ in range(2))
    return [jnp.asarray(x, dtype) for x in (q, k, v)]


NBHD_ARGS = dict(kernel_size=(3, 4), stride=(1, 2), dilation=(2, 1), is_causal=(False, True))


def _na(backend, return_lse=False):
    return lambda q, k, v: jax_natten.na2d(q, k, v, **NBHD_ARGS, return_lse=return_lse, backend=backend)


def test_lse_cotangent_gradient():
    """A loss of the LSE alone: its gradient flows through `delta` (exact against the reference)."""
    q, k, v = _problem(1, dtype=np.float64)
    weights = jnp.asarray(np.random.default_rng(2).standard_normal(q.shape[:-1]))
    grads = [jax.grad(lambda *a: jnp.sum(weights * _na(b, True)(*a)[1]), argnums=(0, 1, 2))(q, k, v)
             for b in ("blocked", "reference")]
    dq, dk, dv = grads[0]
    for got, want in zip(grads[0][:2], grads[1][:2]):
        assert oracle.rel_err(got, want) < 1e-12
    assert np.any(np.asarray(dk))
    # The LSE does not depend on the values.
    assert not np.any(np.asarray(dv)) and not np.any(np.asarray(grads[1][2]))


def test_jit_vmap_grad_remat():
    q, k, v = _problem(3, dtype=np.float64)
    stacked = [jnp.stack([x, 2 * x]) for x in (q, k, v)]

    def loss(backend, remat):
        f = _na(backend)
        f = jax.checkpoint(f) if remat else f
        return lambda *a: jnp.sum(jnp.sin(jax.vmap(f)(*a)))

    want = jax.grad(loss("reference", False), argnums=(0, 1, 2))(*stacked)
    for remat in (False, True):
        got = jax.jit(jax.grad(loss("blocked", remat), argnums=(0, 1, 2)))(*stacked)
        for g, w in zip(got, want):
            assert oracle.rel_err(g, w) < 1e-12
    assert oracle.rel_err(jax.jit(_na("blocked"))(q, k, v), _na("reference")(q, k, v)) < 1e-12


@pytest.mark.parametrize("spec", [P("x"), P(None, None, None, "y"), P("x", None, None, "y")],
                         ids=["batch", "heads", "batch+heads"])
def test_batch_and_head_sharding(spec):
    """Sharded batch and heads under jit: same results, no all-gather forward or backward (MHA:
    with GQA the head split must keep whole KV groups, see README's Sharding)."""
    mesh = jax.make_mesh((2, 4), ("x", "y"), axis_types=(AxisType.Auto,) * 2)
    q, k, v = _problem(4, batch=4, heads=8, heads_kv=8)
    sharded = [jax.device_put(x, NamedSharding(mesh, spec)) for x in (q, k, v)]
    forward = jax.jit(_na("blocked", True))
    backward = jax.jit(jax.grad(lambda *a: jnp.sum(jnp.sin(_na("blocked")(*a))), argnums=(0, 1, 2)))
    for f in (forward, backward):
        for got, want in zip(f(*sharded), f(q, k, v)):
            assert oracle.rel_err(got, want) < 1e-6
        hlo = f.lower(*sharded).compile().as_text()
        assert not [line for line in hlo.splitlines() if "all-gather" in line]
    assert forward(*sharded)[0].sharding.spec == spec


def test_no_tokens_by_window_tensor():
    """1-D 2048 tokens, k=255, 2 heads: tokens x window x heads floats (4 MiB) would be the
    largest tensor of an unblocked kernel; the compiled forward+backward holds none that large."""
    q, k, v = _problem(5, batch=1, spatial=(2048,), heads=2, heads_kv=2, dim=16)
    loss = jax.jit(jax.grad(lambda *a: jnp.sum(jax_natten.na1d(*a, 255, backend="blocked")), argnums=(0, 1, 2)))
    hlo = loss.lower(q, k, v).compile().as_text()
    assert largest_hlo_array(hlo) < 0.6 * 2048 * 255 * 2
    # The same check finds the reference backend's [tokens, window] tensors.
    ref = jax.jit(jax.grad(lambda *a: jnp.sum(jax_natten.na1d(*a, 255, backend="reference")), argnums=(0, 1, 2)))
    assert largest_hlo_array(ref.lower(q, k, v).compile().as_text()) >= 2048 * 255 * 2


def _memory_units(kernel_size):
    """Arguments, outputs and temporaries of the compiled forward+backward on 2-D 128x128, 16
    heads, head_dim 64 (the issue's memory problem), in units of the bytes of Q."""
    shape = jax.ShapeDtypeStruct((1, 128, 128, 16, 64), jnp.float32)

    def f(q, k, v, d_out):
        out, back = jax.vjp(lambda *a: jax_natten.na2d(*a, kernel_size, backend="blocked"), q, k, v)
        return (out,) + back(d_out)

    memory = jax.jit(f).lower(shape, shape, shape, shape).compile().memory_analysis()
    used = memory.argument_size_in_bytes + memory.output_size_in_bytes + memory.temp_size_in_bytes
    return used / (128 * 128 * 16 * 64 * 4)


def test_memory_is_linear_in_tokens():
    """Memory does not grow with the window (k=13 and k=25 need about the same), and at k=13 is
    at most 2x the bytes of Q, K, V, O and their gradients (16 Q-sized buffers)."""
    small, large = _memory_units(13), _memory_units(25)
    assert small <= 16, small
    assert large <= 1.25 * small, (small, large)


def test_plan_efficiency_counts_pairs():
    """Attended pairs of a plan equal the slot tables' valid slots; the computed pairs cover them."""
    for config in GRAD_CONFIGS:
        nbhd = checks.neighborhood(config.spatial, config.kernel_size, config.stride, config.dilation,
                                   config.is_causal)
        p = blocked.plan(config.spatial, nbhd)
        _, valid, _ = token_slot_tables(config.spatial, nbhd)
        assert p.attended_pairs() == valid.sum()
        assert 0 < p.efficiency() <= 1


def test_tile_rule_grows_with_the_window():
    small = blocked.plan((8192,), checks.neighborhood((8192,), 7))
    large = blocked.plan((8192,), checks.neighborhood((8192,), 255))
    assert small.tile < large.tile and large.efficiency() > 0.6
    # A GQA group shares a tile's rows: fewer queries per tile for the same matmul rows.
    assert blocked.plan((64, 64), checks.neighborhood((64, 64), 13), group=4).rows <= blocked.MAX_TILE_ROWS


def test_tiles_cover_every_window():
    """Per axis, the (query, box entry) pairs that the mask allows are exactly the windows, and
    each lies in its tile's box (odd lengths, dilation, stride, causal)."""
    for length, params, tile in [(13, (5, 1, 1, False), 4), (11, (3, 2, 3, False), 2), (17, (4, 3, 2, True), 8),
                                 (9, (9, 1, 1, False), 16), (10, (3, 1, 4, True), 1)]:
        table = blocked.axis_tiles(length, params, tile)
        g, t, i, e = np.nonzero(table.mask)
        attends = np.zeros((params[2], length, length), bool)  # [group, query, key] in-group coordinates
        attends[g, t * tile + i, table.box_start[t] + e] = True
        for g in range(params[2]):
            positions = np.arange(g, length, params[2])
            start, end = jax_natten.neighborhood.window(positions, length, *params)
            for u, (a, b) in enumerate(zip(start, end)):
                assert attends[g, u].sum() == b - a and attends[g, u, a:b].all(), (length, params, tile)


def test_explain_chooses_blocked_on_cpu_and_reports_tiles():
    spec = jax.ShapeDtypeStruct((1, 64, 64, 4, 64), jnp.float32)
    explanation = jax_natten.explain(spec, spec, spec, kernel_size=13)
    if jax.default_backend() == "cpu":
        assert explanation.chosen == "blocked"
    text = str(explanation)
    assert re.search(r"blocked tiles: [\dx]+ queries .* tile efficiency 0\.\d\d", text), text
    # 1-D k=7: small tiles and boxes (estimated rate 0.106, measured slower than the reference).
    small = jax.ShapeDtypeStruct((1, 4096, 4, 64), jnp.float32)
    small_window = jax_natten.explain(small, small, small, kernel_size=7)
    assert small_window.reasons["blocked"].startswith("estimated rate 0.106 < 0.11"), small_window.reasons
    if jax.default_backend() == "cpu":
        assert small_window.chosen == "reference"
    assert "qk and av" in str(jax_natten.backends.by_name("blocked").unsupported(
        jax_natten.backends.Request("qk", "cpu", "float32", (9,), 2, 2, 8, 8, checks.neighborhood((9,), 3))))
