"""The fused backend's Python side on the CPU: its custom_vjp, the exact LSE merge of extra KV
tokens, vmap and remat names, with its kernel operators (`primitives.Operators`) over `JnpShards`
(tests/jnp_kernels.py; the fused forward there is the reference backend's window-only attention,
same contract: out, float32 lse) and its gradient backend the unfused backend over the same
shards. (test_sharding.py shards it; the real FFI call is tested on the GPU.)"""

from __future__ import annotations

import dataclasses
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jax_natten import backends
from jax_natten.backends import fused, reference
from jax_natten.backends.unfused import UnfusedBackend
from jax_natten.neighborhood import Neighborhood
from jax_natten.primitives import Operators
from jnp_kernels import JnpShards


@pytest.fixture
def stand_in():
    return fused.FusedBackend(UnfusedBackend("jnp", Operators(JnpShards())))


NBHD = Neighborhood((3, 5), (1, 2), (2, 1), (False, True))


def _inputs(extra, heads=4, heads_kv=2):
    rng = np.random.default_rng(0)
    shape = (2, 9, 11)
    q = jnp.asarray(rng.standard_normal((*shape, heads, 16)), jnp.float32)
    k = jnp.asarray(rng.standard_normal((*shape, heads_kv, 16)), jnp.float32)
    v = jnp.asarray(rng.standard_normal((*shape, heads_kv, 8)), jnp.float32)
    ek = jnp.asarray(rng.standard_normal((2, 5, heads_kv, 16)), jnp.float32) if extra else None
    ev = jnp.asarray(rng.standard_normal((2, 5, heads_kv, 8)), jnp.float32) if extra else None
    return q, k, v, ek, ev


@pytest.mark.parametrize("extra", [False, True])
def test_forward_and_lse_merge_match_reference(stand_in, extra):
    q, k, v, ek, ev = _inputs(extra)
    got = stand_in.attention(q, k, v, NBHD, 0.25, None, ek, ev)
    want = reference.attention(q, k, v, NBHD, 0.25, None, ek, ev)
    for g, w in zip(got, want):
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=2e-5, atol=2e-5)


def test_gradients_come_from_the_gradient_backend(stand_in):
    q, k, v, ek, ev = _inputs(True)

    def loss(f):
        def value(*a):
            out, lse = f(*a)
            return (out * jnp.sin(out)).sum() + (lse ** 2).sum()
        return jax.grad(value, argnums=tuple(range(5)))

    got = jax.jit(loss(lambda *a: stand_in.attention(a[0], a[1], a[2], NBHD, 0.25, None, a[3], a[4])))(q, k, v, ek, ev)
    want = jax.jit(loss(lambda *a: reference.attention(a[0], a[1], a[2], NBHD, 0.25, None, a[3], a[4])))(q, k, v, ek, ev)
    for g, w in zip(got, want):
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-4, atol=1e-4)


def test_vmap_and_remat_names(stand_in):
    q, k, v, _, _ = _inputs(False)
    f = lambda q: stand_in.attention(q, k, v, NBHD, 0.25)[0]
    batched = jax.vmap(f)(jnp.stack([q, 2 * q]))
    np.testing.assert_allclose(np.asarray(batched[1]), np.asarray(f(2 * q)), rtol=1e-5, atol=1e-5)
    jaxpr = str(jax.make_jaxpr(jax.grad(lambda q: f(q).sum()))(q))
    assert "jax_natten_fused_residual" in jaxpr and "jax_natten_fused_out" in jaxpr


def test_unsupported_reasons():
    (backend,) = [b for b in backends.BACKENDS if b.name == "fused"]
    request = backends.Request("qk", "cpu", "bfloat16", (9, 11), 4, 2, 64, 64, NBHD)
    assert "attention only" in backend.unsupported(request)
    request = backends.Request("attention", "cpu", "bfloat16", (9, 11), 4, 2, 64, 64, NBHD)
    reason = backend.unsupported(request)  # the CUDA layer's: no extension, or JAX is not on a GPU
    assert "not installed" in reason or "not on a CUDA GPU" in reason
    # explain() prints the backward under the fused backend wherever it can run (a GPU).
    assert backend.backward(request) == ("backward: the fused backward kernel (it covers float16/bfloat16, "
                                         "head dim <= 128, no rpb)")
    for changes, why in ((dict(head_dim=256, head_dim_v=64), "head dim 256"), (dict(head_dim_v=136), "head dim 136"),
                         (dict(dtype="float32", has_rpb=True), "dtype float32, rpb")):
        assert backend.backward(dataclasses.replace(request, **changes)) == (
            f"backward: gemm operators (PN/NN/IN), recomputing the attention from the inputs, for {why} "
            "(the fused backward covers float16/bfloat16, head dim <= 128, no rpb)")
    assert "TF32" in backend.describe(dataclasses.replace(request, dtype="float32")) and "TF32" not in backend.describe(request)


def test_docs_state_the_backward_rule():
    root = pathlib.Path(__file__).resolve().parent.parent
    for document in ("README.md", "docs/semantics.md"):
        text = " ".join((root / document).read_text().split())
        assert "fused backward kernel for float16/bfloat16, head dim" in text or fused.FUSED_BACKWARD_COVERS in text, \
            document
