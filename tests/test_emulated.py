"""The CUDA kernels' own source on the CPU: the backends `naive-emulated` and `gemm-emulated` run
the naive and GEMM-based PN/NN/IN kernels through the host emulation (jax_natten._emulation,
built with JAX_NATTEN_EMULATION=ON), behind the unchanged custom_vjp, vmap and sharding wrapper
of the CUDA backends. Held against the float64 oracle (tests/oracle.py, itself held against the
reference backend) with SPEC's tolerances on random sweeps of every parameter class
(test_unfused_cuda.py's configurations: ranks 1-3, odd sizes, even and odd kernels, stride,
dilation not dividing the length, per-axis causal, GQA, head_dim_v != head_dim, RPB, additional
tokens); the handlers poison every output with NaN before the kernels run.

Per backend and dtype, SWEEP configurations (default 200, `JAX_NATTEN_EMULATION_SWEEP`) check
qk and av forward and backward, which run every kernel (PN, NN, IN) forward and backward; every
ATTENTION_EVERY-th of them also checks attention with its gradients (the additional-token path,
whose programs take five times as long to compile). Without the extension the tests skip, unless
JAX_NATTEN_REQUIRE_EMULATION=1 (CI), which makes them fail instead.
"""

from __future__ import annotations

import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

import jax_natten as jn
import jax_natten.cuda
from jax_natten import backends, checks
from jax_natten.backends import unfused
from conftest import require_emulation
from test_unfused_cuda import TOLERANCE, check_config, random_config, relative_error

EMULATED = ("naive-emulated", "gemm-emulated")
SWEEP = int(os.environ.get("JAX_NATTEN_EMULATION_SWEEP", "200"))
ATTENTION_EVERY = 5
CHUNKS = 8  # tests per backend and dtype, so that pytest-xdist spreads the sweep


@pytest.fixture(autouse=True)
def emulation():
    require_emulation()


def test_targets_registered_for_cpu():
    names = jax_natten.cuda.emulated_target_names()
    for op in ("pn", "nn", "in"):
        for variant in ("naive", "gemm"):
            assert f"jax_natten_na_{op}_{variant}" in names


@pytest.mark.slow
@pytest.mark.parametrize("backend", EMULATED)
@pytest.mark.parametrize("dtype", sorted(TOLERANCE))
@pytest.mark.parametrize("chunk", range(CHUNKS))
def test_emulated_matches_oracle(backend, dtype, chunk):
    rng = np.random.default_rng([EMULATED.index(backend), sorted(TOLERANCE).index(dtype), chunk])
    indices = range(chunk, SWEEP, CHUNKS)
    start = time.perf_counter()
    for index in indices:
        check_config(backend, rng, random_config(rng), dtype, attention=index % ATTENTION_EVERY == 0)
    print(f"{backend} {dtype} chunk {chunk}: {len(indices)} configurations in {time.perf_counter() - start:.1f} s")


@pytest.mark.parametrize("backend", EMULATED)
def test_emulated_under_jit_vmap_grad_remat(backend):
    rng = np.random.default_rng(7)
    q, k, v = (jnp.asarray(rng.standard_normal((2, 2, 9, 11, 4, 8)), jnp.float32) for _ in range(3))

    def per_example(backend):
        def loss(q, k, v):
            out = jn.na2d(q, k, v, (3, 4), dilation=(2, 1), is_causal=(True, False), backend=backend)
            return jnp.sum(out * out)
        return jax.jit(jax.vmap(jax.grad(jax.checkpoint(loss), argnums=(0, 1, 2))))

    for got, want in zip(per_example(backend)(q, k, v), per_example("reference")(q, k, v)):
        assert relative_error(got, want) < 1e-5


# fused-emulated: the fused forward's sharding rule, its gradient through gemm-emulated's.
@pytest.mark.parametrize("backend, dtype, tolerance", [("gemm-emulated", jnp.float32, 1e-6),
                                                       ("fused-emulated", jnp.float16, 1e-3)])
def test_emulated_under_batch_and_head_sharding(backend, dtype, tolerance):
    mesh = jax.make_mesh((2, 4), ("x", "y"), axis_types=(AxisType.Auto,) * 2)
    spec = P("x", None, None, "y")
    rng = np.random.default_rng(3)
    q = jnp.asarray(rng.standard_normal((2, 6, 7, 8, 8)), dtype)
    k, v = (jnp.asarray(rng.standard_normal((2, 6, 7, 4, 8)), dtype) for _ in range(2))

    def loss(q, k, v):
        return jnp.sum(jn.na2d(q, k, v, (3, 5), dilation=(2, 1), backend=backend).astype(jnp.float32) ** 2)

    grad = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))
    sharded = [jax.device_put(x, NamedSharding(mesh, spec)) for x in (q, k, v)]
    assert "all-gather" not in grad.lower(*sharded).compile().as_text()
    for got, want in zip(grad(*sharded), grad(q, k, v)):
        assert relative_error(got, want) < tolerance


def test_emulated_backends_are_explicit_only():
    q = jnp.zeros((1, 9, 2, 8), jnp.float32)
    explanation = jn.explain(q, q, q, kernel_size=3)
    assert explanation.chosen == "reference"
    for name in EMULATED:
        # They can run here (the rest of this file calls them by name) but backend=None never takes them.
        assert name in backends.names() and "only when named" in explanation.reasons[name]


def test_built_instances_cover_every_call():
    """The emulation builds every instantiation, and its names are the ones the backends ask for:
    each operator on each dtype finds every PN/NN/IN instantiation it may call."""
    built = jax_natten.cuda.unfused_instances("cpu")
    assert len(built) == 2 * 3 * 5  # (naive, gemm) x (PN, NN, IN) x the dtype pairs of CMakeLists.txt
    for variant in ("naive", "gemm"):
        for operator in ("attention", "qk", "av"):
            for dtype in unfused.CUDA_DTYPES:
                assert set(unfused.needed_instances(variant, operator, dtype)) <= built, (variant, operator, dtype)


def test_backends_pass_over_a_build_that_lacks_instances(monkeypatch):
    """A build with one dtype pair per operator (CMake's JAX_NATTEN_CUDA_UNFUSED=minimal) leaves the
    gemm kernels and the fused backend that falls back on them unsupported, with the missing names."""
    minimal = frozenset(f"{variant}_{pair}" for variant in ("naive", "gemm")
                        for pair in ("pn_float32", "nn_float16_f32w", "in_bfloat16"))
    monkeypatch.setattr(jax_natten.cuda, "unfused_instances", lambda platform="CUDA": minimal)
    request = backends.Request("attention", "cpu", "float16", (9,), 2, 2, 8, 8, checks.neighborhood((9,), 3))
    for name in ("gemm-emulated", "fused-emulated"):
        reason = backends.by_name(name).unsupported(request)
        assert reason is not None and "gemm_pn_float16_f32w" in reason and "minimal" in reason, reason
    assert "naive_pn_float16_f32w" in backends.by_name("naive-emulated").unsupported(request)
