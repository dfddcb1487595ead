"""jax_natten.primitives without a GPU: the FFI operators' abstract results (also under vmap),
their target names and availability, and what a backend request carries."""

from __future__ import annotations

import types

import jax
import jax.numpy as jnp
import pytest

import jax_natten
from jax_natten import backends
from jax_natten.neighborhood import Neighborhood
from jax_natten.primitives import FfiShards, Operators

NBHD = Neighborhood((3, 2), (1, 2), (2, 1), (False, True))
# batch 2, spatial (7, 5), 6 query heads over 2 KV heads, head_dim 8 (value: 4).
Q = jax.ShapeDtypeStruct((2, 7, 5, 6, 8), jnp.bfloat16)
K = jax.ShapeDtypeStruct((2, 7, 5, 2, 8), jnp.bfloat16)
V = jax.ShapeDtypeStruct((2, 7, 5, 2, 4), jnp.bfloat16)
W = jax.ShapeDtypeStruct((2, 7, 5, 6, NBHD.window_size), jnp.float32)
RPB = jax.ShapeDtypeStruct((6, 5, 3), jnp.bfloat16)
OPS = Operators(FfiShards("gemm"))


def _shape(f, *args):
    result = jax.eval_shape(f, *args)
    return result.shape, result.dtype


def test_abstract_results_of_the_ffi_operators():
    assert _shape(lambda q, k: OPS.pn(q, k, None, NBHD, 0.5, 0.0, jnp.float32), Q, K) == ((2, 7, 5, 6, 6), jnp.float32)
    assert _shape(lambda q, k, b: OPS.pn(q, k, b, NBHD, 0.5, 0.0, jnp.float16), Q, K, RPB) == ((2, 7, 5, 6, 6), jnp.float16)
    assert _shape(lambda w, v: OPS.nn(w, v, NBHD, 1.0), W, V) == ((2, 7, 5, 6, 4), jnp.bfloat16)
    dout = jax.ShapeDtypeStruct((2, 7, 5, 6, 4), jnp.bfloat16)
    assert _shape(lambda w, x: OPS.inverse(w, x, NBHD, 2, 1.0), W, dout) == ((2, 7, 5, 2, 4), jnp.bfloat16)


def test_abstract_results_under_vmap_fold_the_mapped_axis_into_batch():
    batched = jax.ShapeDtypeStruct((3,) + W.shape, W.dtype)
    assert _shape(jax.vmap(lambda w, v: OPS.nn(w, v, NBHD, 1.0), in_axes=(0, None)), batched, V) == (
        (3, 2, 7, 5, 6, 4), jnp.bfloat16)


def test_target_names_and_availability():
    assert FfiShards("naive").target("pn") == "jax_natten_na_pn_naive"
    assert FfiShards("gemm", "cpu").target("in") == "jax_natten_na_in_gemm"
    assert "JAX runs on 'tpu'" in FfiShards("naive", "cpu").unavailable_reason("tpu")
    assert "no FFI targets jax_natten_na_pn_nothing" in FfiShards("nothing", "cpu").unavailable_reason("cpu")
    if jax.default_backend() != "gpu":
        assert FfiShards("gemm").unavailable_reason(jax.default_backend()) is not None


def test_request_carries_shape_heads_and_compute_capability(monkeypatch):
    request = backends.make_request("attention", "float32", (7, 5), 6, 2, 8, 4, NBHD)
    assert (request.spatial_shape, request.heads, request.heads_kv) == ((7, 5), 6, 2)
    assert request.compute_capability == backends.default_compute_capability()
    monkeypatch.setattr(jax, "devices", lambda: [types.SimpleNamespace(compute_capability="9.0")])
    assert backends.default_compute_capability() == (9, 0)
    monkeypatch.setattr(jax, "devices", lambda: [types.SimpleNamespace()])
    assert backends.default_compute_capability() is None


@pytest.mark.parametrize("operator", ["qk", "av"])
def test_unfused_operators_fill_the_request(operator, monkeypatch):
    seen = []
    reference = next(b for b in backends.BACKENDS if b.name == "reference")
    monkeypatch.setattr(backends, "choose", lambda request, backend: seen.append(request) or reference)
    q, k = jnp.zeros(Q.shape, jnp.float32), jnp.zeros(K.shape, jnp.float32)
    if operator == "qk":
        jax_natten.na2d_qk(q, k, (3, 2), (1, 2), (2, 1), (False, True))
    else:
        jax_natten.na2d_av(jnp.zeros(W.shape, jnp.float32), jnp.zeros(V.shape, jnp.float32), (3, 2), (1, 2), (2, 1),
                           (False, True))
    (request,) = seen
    assert (request.operator, request.spatial_shape, request.heads, request.heads_kv) == (operator, (7, 5), 6, 2)
