"""CUDA: the FFI targets, and the C++ neighborhood header (through the window_bounds kernel)
against `jax_natten.neighborhood` on the GPU; and, on any machine, that a build which must
include the extension did (JAX_NATTEN_REQUIRE_EXTENSION=1)."""

from __future__ import annotations

import importlib
import os

import jax
import jax.numpy as jnp
import numpy as np
import oracle
import pytest

import jax_natten
from jax_natten import backends, neighborhood


def random_axes(count, seed):
    """Random legal axes, with dilation not dividing the length, causal and stride often."""
    rng = np.random.default_rng(seed)
    axes = []
    while len(axes) < count:
        L = int(rng.integers(2, 300)) if rng.random() < 0.8 else int(rng.integers(300, 5000))
        k = int(rng.integers(2, min(L, 40) + 1))
        d = 1 if rng.random() < 0.3 else int(rng.integers(1, L // k + 1))
        s = 1 if rng.random() < 0.3 else int(rng.integers(1, k + 1))
        axes.append((L, k, s, d, bool(rng.random() < 0.4)))
    return axes


AXES = random_axes(400, seed=99) + [(7, 3, 1, 1, False), (10, 4, 1, 1, False), (9, 3, 1, 2, False),
                                    (10, 3, 1, 3, False), (6, 3, 1, 1, True), (8, 4, 2, 1, True),
                                    (7, 4, 3, 1, False), (10, 4, 4, 1, False), (12, 12, 1, 1, True)]


def test_axes_cover_features():
    assert sum(d > 1 and L % d != 0 for L, k, s, d, c in AXES) >= 50
    assert sum(c and s > 1 for L, k, s, d, c in AXES) >= 50
    assert sum(c and d > 1 for L, k, s, d, c in AXES) >= 50
    assert sum(k % 2 == 0 for L, k, s, d, c in AXES) >= 50


def test_targets_registered(gpu):
    import jax_natten.cuda

    assert "jax_natten_window_bounds" in jax_natten.cuda.target_names()


def test_window_bounds_match_python(gpu):
    from jax_natten.cuda.window_bounds import window_bounds

    mismatches = []
    for L, k, s, d, c in AXES:
        got = np.asarray(window_bounds(L, k, s, d, c))
        position = np.arange(L)
        start, end = neighborhood.window(position, L, k, s, d, c)
        first, last = neighborhood.inverse_window(position, L, k, s, d, c)
        expected = np.stack([start, end, first, last], axis=1).astype(np.int32)
        if got.shape != (L, 4) or got.dtype != np.int32 or not np.array_equal(got, expected):
            bad = np.flatnonzero((got != expected).any(axis=1))[:3] if got.shape == expected.shape else []
            mismatches.append(((L, k, s, d, c), [(int(i), got[i].tolist(), expected[i].tolist()) for i in bad]))
    assert not mismatches, f"(L, k, s, d, causal), [(position, gpu, python)]: {mismatches[:5]}"


def test_extension_built_when_required():
    """CI sets JAX_NATTEN_REQUIRE_EXTENSION=1 on the job that builds the extension: the import
    must then work, with the window_bounds handler in its registrations."""
    if os.environ.get("JAX_NATTEN_REQUIRE_EXTENSION") != "1":
        pytest.skip("JAX_NATTEN_REQUIRE_EXTENSION is not 1")
    module = importlib.import_module("jax_natten._cuda")
    registrations = module.registrations()
    assert "window_bounds" in registrations


# Every backend but the reference is a CUDA one: each is held to the float64 oracle, like the
# reference in test_reference_sweep.py, on the configurations it accepts.
# The backends of the CUDA extension (not the pure-JAX ones, not the CPU emulation).
CUDA_BACKENDS = [name for name in backends.names()
                 if name not in ("reference", "blocked") and not name.endswith("-emulated")]
CUDA_CONFIGS = oracle.sweep(24, seed=4242)
TOLERANCE = {"float32": 1e-5, "bfloat16": 1e-2}  # SPEC "Numerics"


def _run_config(backend_name, config, index, dtype):
    """Errors (a list of strings) of one backend on one configuration; None if it refuses it."""
    names = ["query", "key", "value"] + (["additional_keys", "additional_values"] if config.n_extra else []) \
        + (["rpb"] if config.rpb else [])
    low, exact = oracle.cast(config.inputs(seed=index), jnp.dtype(dtype))
    args = [jnp.asarray(low[n]) for n in names]
    nbhd = config.nbhd_args()

    def attention(*arrays, backend=backend_name):
        return jax_natten.neighborhood_attention(**dict(zip(names, arrays)), **nbhd, scale=config.scale,
                                                 return_lse=True, backend=backend)

    try:
        out, lse = jax.jit(attention)(*args)
    except NotImplementedError:
        return None
    errors = []
    ref_out, ref_lse = oracle.attention(**exact, **nbhd, scale=config.scale)
    tol = TOLERANCE[dtype]
    for what, got, ref in (("out", out, ref_out), ("lse", lse, ref_lse)):
        err = oracle.rel_err(np.asarray(got, np.float64), ref)
        if not err < tol:
            errors.append(f"{what}: {err:.2e}")
    if out.dtype != jnp.dtype(dtype) or lse.dtype != jnp.float32:
        errors.append(f"dtypes {out.dtype}, {lse.dtype}")
    if dtype == "float32":
        rng = np.random.default_rng(index)
        d_out = jnp.asarray(rng.standard_normal(out.shape), jnp.float32)
        d_lse = jnp.asarray(rng.standard_normal(lse.shape), jnp.float32)

        def loss(f):
            return lambda *a: jnp.sum(f(*a)[0] * d_out) + jnp.sum(f(*a)[1] * d_lse)

        argnums = tuple(range(len(args)))
        grads = jax.jit(jax.grad(loss(attention), argnums=argnums))(*args)
        def dense(*a):
            return oracle.dense_attention_jnp(**dict(zip(names, a)), **nbhd, scale=config.scale)

        expected = jax.jit(jax.grad(loss(dense), argnums=argnums))(*(jnp.asarray(exact[n]) for n in names))
        for name, g, e in zip(names, grads, expected):
            if config.scale == 0.0 and name in ("query", "key", "additional_keys"):
                continue  # zero gradients: no relative error to speak of
            err = oracle.rel_err(np.asarray(g, np.float64), np.asarray(e))
            if not err < tol:
                errors.append(f"d{name}: {err:.2e}")
    return errors


# The fused forward has no float32 kernel (16-bit tensor cores only).
ATTENTION_CASES = [(name, dtype) for name in CUDA_BACKENDS for dtype in ("float32", "bfloat16")
                   if not (name == "fused" and dtype == "float32")]


@pytest.mark.parametrize("backend_name, dtype", ATTENTION_CASES)
def test_cuda_backend_attention_matches_oracle(gpu, backend_name, dtype):
    ran, failures = 0, []
    for index, config in enumerate(CUDA_CONFIGS):
        errors = _run_config(backend_name, config, index, dtype)
        if errors is None:
            continue
        ran += 1
        if errors:
            failures.append((config, errors))
    assert ran > 0, f"backend {backend_name!r} refused every configuration"
    assert not failures, "\n".join(f"{c}: {e}" for c, e in failures)


@pytest.mark.parametrize("backend_name", [name for name in CUDA_BACKENDS if name != "fused"])  # attention only
def test_cuda_backend_unfused_operators_match_oracle(gpu, backend_name):
    ran, failures = 0, []
    for index, config in enumerate(CUDA_CONFIGS):
        rng = np.random.default_rng(100 + index)
        tokens = (config.batch, *config.spatial)
        window = int(np.prod(config.kernel_size))
        q = rng.standard_normal((*tokens, config.heads, config.head_dim)).astype(np.float32)
        k = rng.standard_normal((*tokens, config.heads_kv, config.head_dim)).astype(np.float32)
        attn = rng.standard_normal((*tokens, config.heads, window)).astype(np.float32)
        v = rng.standard_normal((*tokens, config.heads_kv, config.head_dim_v)).astype(np.float32)
        rpb = rng.standard_normal((config.heads, *(2 * x - 1 for x in config.kernel_size))).astype(np.float32) \
            if index % 2 else None
        nbhd = config.nbhd_args()
        na_qk = getattr(jax_natten, f"na{config.rank}d_qk")
        na_av = getattr(jax_natten, f"na{config.rank}d_av")
        try:
            got_qk = np.asarray(na_qk(jnp.asarray(q), jnp.asarray(k), **nbhd, backend=backend_name,
                                      rpb=None if rpb is None else jnp.asarray(rpb)), np.float64)
            got_av = na_av(jnp.asarray(attn), jnp.asarray(v), **nbhd, backend=backend_name)
        except NotImplementedError:
            continue
        ran += 1
        ref_qk = oracle.qk(q.astype(np.float64), k.astype(np.float64), **nbhd,
                           rpb=None if rpb is None else rpb.astype(np.float64))
        empty = np.isneginf(ref_qk)
        if not np.array_equal(np.isneginf(got_qk), empty):
            failures.append((config, "qk: -inf slots differ"))
        elif not oracle.rel_err(got_qk[~empty], ref_qk[~empty]) < 1e-5:
            failures.append((config, f"qk: {oracle.rel_err(got_qk[~empty], ref_qk[~empty]):.2e}"))
        ref_av = oracle.av(attn.astype(np.float64), v.astype(np.float64), **nbhd)
        if not oracle.rel_err(np.asarray(got_av, np.float64), ref_av) < 1e-5:
            failures.append((config, f"av: {oracle.rel_err(np.asarray(got_av, np.float64), ref_av):.2e}"))
    assert ran > 0, f"backend {backend_name!r} refused every configuration"
    assert not failures, "\n".join(f"{c}: {e}" for c, e in failures)
