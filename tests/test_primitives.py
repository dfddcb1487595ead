"""jax_natten.primitives without a GPU: the FFI operators' abstract results (also under vmap),
their target names and availability, and what a backend request carries."""

from __future__ import annotations

import sys
import types

import jax
import jax.numpy as jnp
import pytest

import jax_natten
from jax_natten import backends, cuda
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
    for args in ((Q, K, V, None), (Q, K, V, RPB)):
        out, lse = jax.eval_shape(lambda q, k, v, b: OPS.fused_forward(q, k, v, b, NBHD, 0.5), *args)
        assert (out.shape, out.dtype, lse.shape, lse.dtype) == ((2, 7, 5, 6, 4), jnp.bfloat16, (2, 7, 5, 6), jnp.float32)


def test_abstract_results_under_vmap_fold_the_mapped_axis_into_batch():
    batched = jax.ShapeDtypeStruct((3,) + W.shape, W.dtype)
    assert _shape(jax.vmap(lambda w, v: OPS.nn(w, v, NBHD, 1.0), in_axes=(0, None)), batched, V) == (
        (3, 2, 7, 5, 6, 4), jnp.bfloat16)
    batched_q = jax.ShapeDtypeStruct((3,) + Q.shape, Q.dtype)
    out, lse = jax.eval_shape(jax.vmap(lambda q, k, v: OPS.fused_forward(q, k, v, None, NBHD, 0.5),
                                       in_axes=(0, None, None)), batched_q, K, V)
    assert (out.shape, lse.shape) == ((3, 2, 7, 5, 6, 4), (3, 2, 7, 5, 6))


def test_target_names_and_platforms():
    assert FfiShards("naive").target("pn") == "jax_natten_na_pn_naive"
    assert FfiShards("gemm", "cpu").target("in") == "jax_natten_na_in_gemm"
    with pytest.raises(ValueError, match="'rocm'"):
        FfiShards("gemm", "rocm")
    # The emulated targets run where JAX runs on the CPU only; the CUDA ones on a GPU only.
    assert FfiShards("naive", "cpu").unavailable_reason("gpu") is not None
    assert FfiShards("naive").unavailable_reason("cpu") is not None


def test_request_carries_shape_heads_and_compute_capability(monkeypatch):
    request = backends.make_request("attention", "float32", (7, 5), 6, 2, 8, 4, NBHD)
    assert (request.spatial_shape, request.heads, request.heads_kv) == ((7, 5), 6, 2)
    if request.platform != "gpu":
        assert request.compute_capability is None
    monkeypatch.setattr(backends, "default_platform", lambda: "gpu")
    monkeypatch.setattr(cuda, "device_capability", lambda device=None: (9, 0))
    assert backends.make_request("qk", "float32", (7, 5), 6, 2, 8, 8, NBHD).compute_capability == (9, 0)


def test_the_requests_compute_capability_decides_cuda_availability(monkeypatch):
    """An extension with sm_80 code only: an sm_86 GPU runs it, an sm_90 one does not."""
    monkeypatch.setattr(cuda, "_cuda", types.SimpleNamespace(cuda_archs=lambda: "80-real", registrations=dict))
    # The device's own capability would let both run: the request's must be the one used.
    monkeypatch.setattr(cuda, "device_capability", lambda device=None: (8, 0))
    assert FfiShards("gemm").unavailable_reason("gpu", (8, 6)) is None
    assert "no code for this sm_90 GPU" in FfiShards("gemm").unavailable_reason("gpu", (9, 0))


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


def test_call_path_from_the_public_api_to_the_ffi_call(monkeypatch):
    """The jax_natten files on the Python stack when na2d (gemm backend) issues its PN FFI call:
    the public API, the backend's custom_vjp, the primitives module, each entered once."""
    gemm = next(b for b in backends.BACKENDS if b.name == "gemm")
    monkeypatch.setattr(backends, "choose", lambda request, backend: gemm)
    real_ffi_call, paths = jax.ffi.ffi_call, []

    def recording_ffi_call(target, *args, **kwargs):
        files, frame = [], sys._getframe(1)
        while frame is not None:
            name = frame.f_code.co_filename.replace("\\", "/")
            name = name[name.rindex("/jax_natten/") + 1:] if "/jax_natten/" in name else None
            if name is not None and (not files or files[-1] != name):
                files.append(name)
            frame = frame.f_back
        paths.append((target, files[::-1]))
        return real_ffi_call(target, *args, **kwargs)

    monkeypatch.setattr(jax.ffi, "ffi_call", recording_ffi_call)
    q = jax.ShapeDtypeStruct((1, 9, 11, 2, 8), jnp.float32)
    jax.eval_shape(lambda q: jax_natten.na2d(q, q, q, (3, 5), backend="gemm"), q)
    assert paths[0] == ("jax_natten_na_pn_gemm", ["jax_natten/functional.py", "jax_natten/backends/unfused.py",
                                                  "jax_natten/primitives.py"])
