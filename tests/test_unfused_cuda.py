"""GPU: the unfused CUDA backends against the reference backend, forward and backward, in the
three CUDA dtypes, over random sweeps of every parameter class (odd sizes, even and odd kernels,
stride, dilation not dividing the length, per-axis causal, GQA, head_dim_v != head_dim, RPB,
additional tokens). Before each configuration a large NaN buffer is written and freed so that
XLA's allocator hands the kernels poisoned memory: an output element a kernel fails to write
shows up as NaN.

`JAX_NATTEN_GPU_SWEEP` sets the configurations per test (default 25; 8 tests per dtype).
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jax_natten as jn

TOLERANCE = {"float32": 1e-5, "float16": 2e-3, "bfloat16": 1e-2}
PER_TEST = int(os.environ.get("JAX_NATTEN_GPU_SWEEP", "25"))
CHUNKS = 8
UNFUSED_BACKENDS = ("naive",)


def random_config(rng):
    rank = int(rng.integers(1, 4))
    max_len = {1: 40, 2: 13, 3: 7}[rank]
    spatial, kernel, stride, dilation, causal = [], [], [], [], []
    for _ in range(rank):
        length = int(rng.integers(3, max_len + 1))
        k = int(rng.integers(2, length + 1))
        d = int(rng.integers(1, length // k + 1))
        spatial.append(length)
        kernel.append(k)
        dilation.append(d)
        stride.append(int(rng.integers(1, k + 1)))
        causal.append(bool(rng.random() < 0.3))
    heads_kv = int(rng.choice([1, 2]))
    return dict(
        batch=int(rng.integers(1, 3)), spatial=tuple(spatial), kernel_size=tuple(kernel),
        stride=tuple(stride), dilation=tuple(dilation), is_causal=tuple(causal),
        heads=heads_kv * int(rng.choice([1, 2, 3])), heads_kv=heads_kv,
        head_dim=int(rng.choice([8, 16, 32])), head_dim_v=int(rng.choice([8, 16, 32])),
        rpb=bool(rng.random() < 0.4), extra=int(rng.choice([0, 0, 3])),
    )


def poison_allocator():
    jax.block_until_ready(jnp.full((64 << 20,), jnp.nan, jnp.float32)).delete()


def relative_error(got, want):
    got = np.asarray(got, np.float64)
    want = np.asarray(want, np.float64)
    assert np.isfinite(got).all(), "NaN/inf in the output (an unwritten or wrong element)"
    return np.linalg.norm(got - want) / max(np.linalg.norm(want), 1e-30)


def assert_close(name, got, want, dtype, config):
    error = relative_error(got, want)
    assert error < TOLERANCE[dtype], f"{name}: relative error {error:.3g} for {config}"


def make_inputs(rng, c, dtype):
    def normal(*shape):
        x = jnp.asarray(rng.standard_normal(shape), dtype)
        return x, x.astype(jnp.float64)

    b, sp = c["batch"], c["spatial"]
    q = normal(b, *sp, c["heads"], c["head_dim"])
    k = normal(b, *sp, c["heads_kv"], c["head_dim"])
    v = normal(b, *sp, c["heads_kv"], c["head_dim_v"])
    rpb = normal(c["heads"], *(2 * x - 1 for x in c["kernel_size"])) if c["rpb"] else (None, None)
    extra = (normal(b, c["extra"], c["heads_kv"], c["head_dim"]), normal(b, c["extra"], c["heads_kv"], c["head_dim_v"])) if c["extra"] else None
    return q, k, v, rpb, extra


def check_qk_av(backend, rng, c, dtype):
    nbhd = dict(kernel_size=c["kernel_size"], stride=c["stride"], dilation=c["dilation"], is_causal=c["is_causal"])
    (q, q64), (k, k64), (v, v64), (rpb, rpb64), _ = make_inputs(rng, c, dtype)

    rank = len(c["spatial"])
    na_qk = getattr(jn, f"na{rank}d_qk")
    na_av = getattr(jn, f"na{rank}d_av")

    logits, qk_vjp = jax.vjp(lambda q, k, r: na_qk(q, k, rpb=r, backend=backend, **nbhd), q, k, rpb)
    ref_logits, ref_qk_vjp = jax.vjp(lambda q, k, r: na_qk(q, k, rpb=r, backend="reference", **nbhd), q64, k64, rpb64)
    finite = np.isfinite(np.asarray(ref_logits))
    assert (np.isfinite(np.asarray(logits, np.float64)) == finite).all(), f"qk: empty slots differ for {c}"
    assert_close("qk", np.where(finite, logits.astype(jnp.float64), 0), np.where(finite, ref_logits, 0), dtype, c)
    d_logits = jnp.asarray(rng.standard_normal(logits.shape), dtype)
    for name, got, want in zip(("dq", "dk", "drpb"), qk_vjp(d_logits), ref_qk_vjp(d_logits.astype(jnp.float64))):
        if want is not None:
            assert_close(f"qk {name}", got, want, dtype, c)

    attn = jnp.asarray(rng.random(logits.shape), dtype)
    out, av_vjp = jax.vjp(lambda a, v: na_av(a, v, backend=backend, **nbhd), attn, v)
    ref_out, ref_av_vjp = jax.vjp(lambda a, v: na_av(a, v, backend="reference", **nbhd), attn.astype(jnp.float64), v64)
    assert_close("av", out, ref_out, dtype, c)
    d_out = jnp.asarray(rng.standard_normal(out.shape), dtype)
    got_da, got_dv = av_vjp(d_out)
    want_da, want_dv = ref_av_vjp(d_out.astype(jnp.float64))
    # The weights of empty causal slots are ignored, so their gradient is zero on both sides.
    assert_close("av dattn", got_da, want_da, dtype, c)
    assert_close("av dv", got_dv, want_dv, dtype, c)


def check_attention(backend, rng, c, dtype):
    nbhd = dict(kernel_size=c["kernel_size"], stride=c["stride"], dilation=c["dilation"], is_causal=c["is_causal"])
    (q, q64), (k, k64), (v, v64), (rpb, rpb64), extra = make_inputs(rng, c, dtype)
    (ek, ek64), (ev, ev64) = extra if extra else ((None, None), (None, None))

    def run(q, k, v, rpb, ek, ev, backend):
        return jn.neighborhood_attention(q, k, v, rpb=rpb, additional_keys=ek, additional_values=ev,
                                         return_lse=True, backend=backend, **nbhd)

    (out, lse), vjp = jax.vjp(lambda *a: run(*a, backend), q, k, v, rpb, ek, ev)
    (ref_out, ref_lse), ref_vjp = jax.vjp(lambda *a: run(*a, "reference"), q64, k64, v64, rpb64, ek64, ev64)
    assert out.dtype == q.dtype and lse.dtype == jnp.float32
    assert_close("attention out", out, ref_out, dtype, c)
    assert_close("attention lse", lse, ref_lse, dtype, c)
    d_out = jnp.asarray(rng.standard_normal(out.shape), dtype)
    d_lse = jnp.asarray(rng.standard_normal(lse.shape), jnp.float32)
    grads = vjp((d_out, d_lse))
    ref_grads = ref_vjp((d_out.astype(jnp.float64), d_lse.astype(jnp.float64)))
    for name, got, want in zip(("dq", "dk", "dv", "drpb", "dek", "dev"), grads, ref_grads):
        if want is not None:
            assert_close(f"attention {name}", got, want, dtype, c)


@pytest.mark.gpu
@pytest.mark.parametrize("backend", UNFUSED_BACKENDS)
@pytest.mark.parametrize("dtype", sorted(TOLERANCE))
@pytest.mark.parametrize("chunk", range(CHUNKS))
def test_unfused_matches_reference(gpu, backend, dtype, chunk):
    rng = np.random.default_rng([chunk, len(dtype)])
    for _ in range(PER_TEST):
        config = random_config(rng)
        poison_allocator()
        check_qk_av(backend, rng, config, dtype)
        check_attention(backend, rng, config, dtype)


@pytest.mark.gpu
@pytest.mark.parametrize("backend", UNFUSED_BACKENDS)
def test_unfused_under_jit_vmap_grad_remat(gpu, backend):
    rng = np.random.default_rng(7)
    q, k, v = (jnp.asarray(rng.standard_normal((3, 2, 9, 11, 4, 16)), jnp.float32) for _ in range(3))

    def loss(q, k, v, backend):
        out = jn.na2d(q, k, v, (3, 4), dilation=(2, 1), is_causal=(True, False), backend=backend)
        return jnp.sum(out * out)

    def per_example(backend):
        return jax.jit(jax.vmap(jax.grad(jax.checkpoint(lambda *a: loss(*a, backend)), argnums=(0, 1, 2))))

    got = per_example(backend)(q, k, v)
    want = per_example("reference")(q, k, v)
    for g, w in zip(got, want):
        assert relative_error(g, w) < 1e-5
