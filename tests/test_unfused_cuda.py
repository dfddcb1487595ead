"""GPU: the unfused CUDA backends against the float64 oracle, forward and backward, in the
three CUDA dtypes, over random sweeps of every parameter class (odd sizes, even and odd kernels,
stride, dilation not dividing the length, per-axis causal, GQA, head_dim_v != head_dim, RPB,
additional tokens). Before each configuration a large NaN buffer is written and freed so that
XLA's allocator hands the kernels poisoned memory: an output element a kernel fails to write
shows up as NaN.

`JAX_NATTEN_GPU_SWEEP` sets the configurations per test (default 25) and `JAX_NATTEN_GPU_CHUNKS`
the tests per dtype and backend (default 8): 200 configurations per dtype, each checking qk, av
and attention, forward and backward. The oracle (tests/oracle.py, NumPy) runs on the host.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import oracle
import pytest

import jax_natten as jn

TOLERANCE = {"float32": 1e-5, "float16": 2e-3, "bfloat16": 1e-2}
PER_TEST = int(os.environ.get("JAX_NATTEN_GPU_SWEEP", "25"))
CHUNKS = int(os.environ.get("JAX_NATTEN_GPU_CHUNKS", "8"))
UNFUSED_BACKENDS = ("naive", "gemm")


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
    """Leaves 256 MiB of NaN in the GPU allocator's free memory, which the next outputs reuse, so that
    an element a kernel never writes reads NaN. Not on the CPU: the emulated handlers poison their
    outputs themselves (cuda/emu/poisoned.h), and freed host memory is not handed back as it was
    (the fill cost a third of an emulated configuration's time)."""
    if jax.default_backend() == "gpu":
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
    """Random inputs of config `c` (None for absent optional ones), cotangents included."""
    b, sp, window = c["batch"], c["spatial"], int(np.prod(c["kernel_size"]))

    dtype = jnp.dtype(dtype)

    def normal(*shape):
        return rng.standard_normal(shape).astype(dtype)

    return {
        "q": normal(b, *sp, c["heads"], c["head_dim"]),
        "k": normal(b, *sp, c["heads_kv"], c["head_dim"]),
        "v": normal(b, *sp, c["heads_kv"], c["head_dim_v"]),
        "rpb": normal(c["heads"], *(2 * x - 1 for x in c["kernel_size"])) if c["rpb"] else None,
        "ek": normal(b, c["extra"], c["heads_kv"], c["head_dim"]) if c["extra"] else None,
        "ev": normal(b, c["extra"], c["heads_kv"], c["head_dim_v"]) if c["extra"] else None,
        "attn": rng.random((b, *sp, c["heads"], window)).astype(dtype),
        "d_logits": normal(b, *sp, c["heads"], window),
        "d_av": normal(b, *sp, c["heads"], c["head_dim_v"]),
        "d_out": normal(b, *sp, c["heads"], c["head_dim_v"]),
        "d_lse": rng.standard_normal((b, *sp, c["heads"])).astype(np.float32),
    }


def _nbhd(c):
    return dict(kernel_size=c["kernel_size"], stride=c["stride"], dilation=c["dilation"], is_causal=c["is_causal"])


def operator_results(x, c, backend):
    """qk (PN) and av (NN) with their gradients (PN, NN and IN kernels)."""
    rank, nbhd = len(c["spatial"]), _nbhd(c)
    na_qk, na_av = getattr(jn, f"na{rank}d_qk"), getattr(jn, f"na{rank}d_av")
    results = {}
    logits, vjp = jax.vjp(lambda q, k, r: na_qk(q, k, rpb=r, backend=backend, **nbhd), x["q"], x["k"], x["rpb"])
    results["qk"] = logits
    results["qk dq"], results["qk dk"], results["qk drpb"] = vjp(x["d_logits"])
    out, vjp = jax.vjp(lambda a, v: na_av(a, v, backend=backend, **nbhd), x["attn"], x["v"])
    results["av"] = out
    results["av dattn"], results["av dv"] = vjp(x["d_av"])
    return results


def attention_results(x, c, backend):
    """Attention with rpb, additional tokens and the LSE, with every gradient."""
    nbhd = _nbhd(c)

    def attention(q, k, v, rpb, ek, ev):
        return jn.neighborhood_attention(q, k, v, rpb=rpb, additional_keys=ek, additional_values=ev,
                                         return_lse=True, backend=backend, **nbhd)

    results = {}
    (out, lse), vjp = jax.vjp(attention, x["q"], x["k"], x["v"], x["rpb"], x["ek"], x["ev"])
    results["attention"], results["attention lse"] = out, lse
    grads = vjp((x["d_out"], x["d_lse"].astype(lse.dtype)))
    for name, g in zip(("dq", "dk", "dv", "drpb", "dek", "dev"), grads):
        results[f"attention {name}"] = g
    return results


def all_results(x, c, backend, attention=True):
    """qk, av and (with `attention`) attention with their gradients, in one function so that each
    configuration compiles once per backend."""
    return {**operator_results(x, c, backend), **(attention_results(x, c, backend) if attention else {})}


def oracle_results(x, c, attention=True):
    """What `all_results` must return, from the NumPy float64 oracle (tests/oracle.py; held
    against the reference backend by test_reference_sweep.py and test_oracle_gradients.py): no
    XLA compilation, so the sweeps' cost is the backend's own."""
    nbhd = _nbhd(c)
    x = {k: None if v is None else np.asarray(v, np.float64) for k, v in x.items()}
    results = {"qk": oracle.qk(x["q"], x["k"], rpb=x["rpb"], **nbhd)}
    results["qk dq"], results["qk dk"], results["qk drpb"] = oracle.qk_vjp(x["q"], x["k"], x["d_logits"], rpb=x["rpb"], **nbhd)
    results["av"] = oracle.av(x["attn"], x["v"], **nbhd)
    results["av dattn"], results["av dv"] = oracle.av_vjp(x["attn"], x["v"], x["d_av"], **nbhd)
    if not attention:
        return results
    extra = dict(additional_keys=x["ek"], additional_values=x["ev"], rpb=x["rpb"])
    results["attention"], results["attention lse"] = oracle.attention(x["q"], x["k"], x["v"], **nbhd, **extra)
    grads = oracle.attention_vjp(x["q"], x["k"], x["v"], x["d_out"], x["d_lse"], **nbhd, **extra)
    for name, g in zip(("dq", "dk", "dv", "drpb", "dek", "dev"), grads):
        results[f"attention {name}"] = g
    return results


def check_config(backend, rng, c, dtype, attention=True):
    """The backend (on the default device) against the float64 oracle: the operators, and with
    `attention` the attention path too."""
    x = make_inputs(rng, c, dtype)
    poison_allocator()
    got = jax.jit(all_results, static_argnums=(1, 2, 3))(jax.device_put(x, jax.devices()[0]), _frozen(c), backend, attention)
    want = oracle_results(x, c, attention)
    assert got["qk"].dtype == jnp.dtype(dtype) and got["av"].dtype == jnp.dtype(dtype)
    if attention:
        assert got["attention"].dtype == jnp.dtype(dtype) and got["attention lse"].dtype == jnp.float32
    finite = np.isfinite(want["qk"])
    assert (np.isfinite(np.asarray(got["qk"], np.float64)) == finite).all(), f"qk: empty slots differ for {c}"
    for name in want:
        if want[name] is None:
            assert got[name] is None, f"{name}: expected no result for {c}"
            continue
        if name == "qk":
            assert_close(name, np.where(finite, np.asarray(got[name], np.float64), 0), np.where(finite, want[name], 0), dtype, c)
        else:
            assert_close(name, got[name], want[name], dtype, c)


class _frozen(dict):
    """A hashable config, for jit's static arguments."""

    def __hash__(self):
        return hash(tuple(sorted(self.items())))


@pytest.mark.gpu
@pytest.mark.parametrize("backend", UNFUSED_BACKENDS)
@pytest.mark.parametrize("dtype", sorted(TOLERANCE))
@pytest.mark.parametrize("chunk", range(CHUNKS))
def test_unfused_matches_oracle(gpu, backend, dtype, chunk):
    rng = np.random.default_rng([chunk, len(dtype)])
    for _ in range(PER_TEST):
        check_config(backend, rng, random_config(rng), dtype)


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
