"""The fused forward kernel through the whole Python stack on the CPU: backend "fused-emulated"
runs the CUDA kernel's own source in the host emulation (jax_natten._emulation's FFI target
`jax_natten_na_fused_forward` for the CPU, the CUDA handler's checks and dispatch in
cuda/include/jax_natten/fused_ffi.h), behind the fused backend's custom_vjp (extra KV tokens and
the LSE merged in XLA, the gradient from the gemm-emulated operators), vmap and checkpoint names.
(tests/test_fused_emulated.py runs the same kernel from a C++ driver, every head-dim class;
tests/test_emulated.py shards it over batch and heads.)

The sweep: the oracle's random configurations (tests/oracle.py: ranks 1-3, odd/even kernels,
stride, dilation not dividing the length, per-axis causal, GQA/MQA, extra KV, rpb, scale None /
explicit / 0) with head dims redrawn as multiples of 8 up to the largest built head-dim class,
those the backend runs (explain() says), in each of the fused kernel's dtypes; output and LSE
(and for every GRADS_EVERY-th of a chunk also every gradient) against the float64 oracle with SPEC's
tolerances (tests/sweeps.py). The handler poisons both outputs with NaN before the kernel runs,
and a NaN fails. SWEEP configurations per dtype (default 40, `JAX_NATTEN_FUSED_EMULATION_SWEEP`).
"""

from __future__ import annotations

import dataclasses
import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import oracle
import pytest
import sweeps

import jax_natten as jn
import jax_natten.cuda
from conftest import require_emulation
from jax_natten import backends, fused_plan

BACKEND = "fused-emulated"
SWEEP = int(os.environ.get("JAX_NATTEN_FUSED_EMULATION_SWEEP", "40"))
GRADS_EVERY = 4
CHUNKS = 4  # tests per dtype, so that pytest-xdist spreads the sweep


@pytest.fixture(autouse=True)
def emulation():
    require_emulation()


@functools.lru_cache(maxsize=None)
def fused_configs(count, seed, dtype):
    """`count` oracle configurations in `dtype` with fused head dims, those the backend runs."""
    largest = max(jax_natten.cuda.fused_head_dim_classes("cpu"), default=8)
    rng = np.random.default_rng(seed)
    runs = sweeps.runs_on(BACKEND)
    out = []
    for config in oracle.sweep(20 * count, seed):
        head_dim = 8 * int(rng.integers(1, largest // 8 + 1))
        head_dim_v = head_dim if rng.random() < 0.6 else 8 * int(rng.integers(1, largest // 8 + 1))
        config = dataclasses.replace(config, head_dim=head_dim, head_dim_v=head_dim_v, dtype=dtype)
        if runs(config):
            out.append(config)
            if len(out) == count:
                return out
    raise AssertionError(f"only {len(out)} of {count} configurations run on {BACKEND}")


def test_fused_target_registered_for_cpu():
    assert "jax_natten_na_fused_forward" in jax_natten.cuda.emulated_target_names()
    assert jax_natten.cuda.fused_head_dim_classes("cpu"), "the emulation has no fused head-dim class"


@pytest.mark.parametrize("dtype", fused_plan.DTYPES)
@pytest.mark.parametrize("chunk", range(CHUNKS))
def test_fused_emulated_matches_oracle(dtype, chunk):
    configs = fused_configs(SWEEP, seed=1200 + fused_plan.DTYPES.index(dtype), dtype=dtype)
    for index in range(chunk, SWEEP, CHUNKS):
        sweeps.check_backend(BACKEND, configs[index], seed=index, grads=index // CHUNKS % GRADS_EVERY == 0)


def test_fused_emulated_under_jit_vmap_grad_remat():
    rng = np.random.default_rng(7)
    q = jnp.asarray(rng.standard_normal((3, 2, 9, 11, 4, 16)), jnp.bfloat16)
    k, v = (jnp.asarray(rng.standard_normal((3, 2, 9, 11, 2, 16)), jnp.bfloat16) for _ in range(2))
    nbhd = dict(kernel_size=(3, 4), dilation=(2, 1), is_causal=(True, False))

    def attention(backend):
        return lambda q, k, v: jn.na2d(q, k, v, **nbhd, backend=backend)

    batched = jax.jit(jax.vmap(attention(BACKEND)))(q, k, v)
    looped = jnp.stack([jax.jit(attention(BACKEND))(q[i], k[i], v[i]) for i in range(3)])
    np.testing.assert_array_equal(np.asarray(batched, np.float32), np.asarray(looped, np.float32))

    def loss(backend):
        def value(q, k, v):
            return jnp.sum(attention(backend)(q, k, v).astype(jnp.float32) ** 2)
        return jax.jit(jax.vmap(jax.grad(jax.checkpoint(value), argnums=(0, 1, 2))))

    for got, want in zip(loss(BACKEND)(q, k, v), loss("reference")(q, k, v)):
        assert oracle.rel_err(np.asarray(got, np.float64), np.asarray(want, np.float64)) < 2e-2
    jaxpr = str(jax.make_jaxpr(jax.grad(lambda q: jnp.sum(attention(BACKEND)(q, k[0], v[0]).astype(jnp.float32))))(q[0]))
    for name in ("jax_natten_fused_residual", "jax_natten_fused_out", "jax_natten_fused_lse"):
        assert name in jaxpr, name


def test_fused_emulated_is_explicit_and_explains_why_not():
    q = jax.ShapeDtypeStruct((1, 9, 2, 16), jnp.float16)
    explanation = jn.explain(q, q, q, kernel_size=3)
    assert explanation.chosen == "reference"
    assert explanation.reasons[BACKEND] == f"runs only when named (backend={BACKEND!r})"
    # Named, it says why it cannot run: float64 is not a fused dtype, 12 not a multiple of 8.
    for dtype, head_dim, why in ((jnp.float64, 16, "dtype float64"), (jnp.float16, 12, "multiples of 8")):
        q = jax.ShapeDtypeStruct((1, 9, 2, head_dim), dtype)
        assert why in jn.explain(q, q, q, kernel_size=3).reasons[BACKEND]
        with pytest.raises(NotImplementedError, match=why):
            jn.na1d(jnp.zeros(q.shape, dtype), jnp.zeros(q.shape, dtype), jnp.zeros(q.shape, dtype), kernel_size=3,
                    backend=BACKEND)
    backend = backends.by_name(BACKEND)
    assert backend.gemm.name == "gemm-emulated"


@pytest.mark.parametrize("dtype, rpb, backward", [
    (jnp.bfloat16, False, "backward: the fused backward kernel"),
    (jnp.float16, False, "backward: the fused backward kernel"),
    (jnp.float32, False, "backward: gemm-emulated operators (PN/NN/IN), recomputing the attention from the inputs, "
                         "for dtype float32 (the fused backward covers"),
    (jnp.bfloat16, True, "backward: gemm-emulated operators (PN/NN/IN), recomputing the attention from the inputs, "
                         "for rpb (the fused backward covers"),
], ids=["bf16", "f16", "f32-gemm", "rpb-gemm"])
def test_explain_says_which_backward_the_gradient_runs(dtype, rpb, backward):
    q = jax.ShapeDtypeStruct((1, 12, 12, 4, 64), dtype)
    kv = jax.ShapeDtypeStruct((1, 12, 12, 2, 64), dtype)
    bias = jax.ShapeDtypeStruct((4, 9, 9), dtype) if rpb else None
    explanation = jn.explain(q, kv, kv, kernel_size=5, rpb=bias)
    note = explanation.backend_notes[BACKEND]
    assert backward in note
    # str() prints it under the backend, which runs only when named here.
    lines = str(explanation).splitlines()
    at = lines.index(f"  {BACKEND}: cannot run: runs only when named (backend={BACKEND!r})")
    assert lines[at + 1] == f"    note: {note}"
    # The gradient takes the backward the note names: the fused backward's FFI target, or none.
    args = [jnp.zeros(x.shape, x.dtype) for x in (q, kv, kv)]
    rpb_arg = jnp.zeros(bias.shape, bias.dtype) if rpb else None
    grad = jax.grad(lambda q: jnp.sum(jn.na2d(q, *args[1:], kernel_size=5, rpb=rpb_arg,
                                              backend=BACKEND).astype(jnp.float32)))
    text = jax.jit(grad).lower(args[0]).as_text()
    assert ("jax_natten_na_fused_backward" in text) == ("fused backward kernel" in backward)


def _fused_call(q, k, v, rpb=None, q_tile=(64,), kv_tile=(64,), lse_dtype=jnp.float32, kernel_size=(3,)):
    rpb = jnp.zeros((0,), q.dtype) if rpb is None else rpb
    result = (jax.ShapeDtypeStruct(q.shape[:-1] + v.shape[-1:], q.dtype), jax.ShapeDtypeStruct(q.shape[:-1], lse_dtype))
    attributes = {name: np.asarray(value, np.int64) for name, value in
                  dict(kernel_size=kernel_size, stride=(1,) * len(kernel_size), dilation=(1,) * len(kernel_size),
                       is_causal=(0,) * len(kernel_size), q_tile=q_tile, kv_tile=kv_tile).items()}
    fn = jax.ffi.ffi_call("jax_natten_na_fused_forward", result)
    return jax.block_until_ready(jax.jit(lambda *a: fn(*a, scale=np.float32(1.0), **attributes))(q, k, v, rpb))


def _zeros(*shape, dtype=jnp.float16):
    return jnp.zeros(shape, dtype)


# Straight to the FFI target (no Python checks): the shared handler's checks answer with an error.
@pytest.mark.parametrize("call, message", [
    (lambda: _fused_call(_zeros(1, 8, 2, 12), _zeros(1, 8, 2, 12), _zeros(1, 8, 2, 12)), "multiples of 8"),
    (lambda: _fused_call(_zeros(1, 8, 2, 8, dtype=jnp.float64), _zeros(1, 8, 2, 8, dtype=jnp.float64),
                         _zeros(1, 8, 2, 8, dtype=jnp.float64)), "float16"),
    (lambda: _fused_call(_zeros(1, 8, 2, 8), _zeros(1, 8, 2, 8), _zeros(1, 8, 2, 8), q_tile=(32,)), "q_tile / kv_tile"),
    (lambda: _fused_call(_zeros(1, 8, 2, 8), _zeros(1, 8, 2, 8), _zeros(1, 8, 2, 8), lse_dtype=jnp.float16),
     "lse is float32"),
    (lambda: _fused_call(_zeros(1, 8, 3, 8), _zeros(1, 8, 2, 8), _zeros(1, 8, 2, 8)), "multiple of key/value heads"),
    (lambda: _fused_call(_zeros(1, 8, 2, 8), _zeros(1, 8, 2, 8), _zeros(1, 8, 2, 8), rpb=_zeros(2, 4)), "rpb"),
], ids=["head dim 12", "float64", "q tile of 32 rows", "float16 lse", "3 query heads over 2", "rpb shape"])
def test_fused_handler_rejects_bad_calls(call, message):
    with pytest.raises(Exception, match=message):
        call()
