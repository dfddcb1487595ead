"""Numerics at the extremes, for every CPU-runnable backend (`sweeps.CPU_BACKENDS`):

- scores `scale * q.k` up to ~1e4 in magnitude in float16, bfloat16 and float32: finite outputs,
  the oracle's output and LSE, and the LSE's gradient;
- the non-finite input policy (README, "Numerics"): a NaN or Inf in an input changes exactly the
  outputs of the queries that attend to it (its neighborhood, or every query for an additional
  token, in the heads that read it); every other output is bit-identical to the run without it,
  and a NaN reaches every output that attends to it;
- float16 overflow: fused outputs are convex combinations of value rows and cannot overflow; the
  unfused `na*d_qk` logits in float16 overflow to inf beyond 65504, as documented.

The inputs of the large-score tests are multiples of 1/8 and the scale a power of two, so that
`scale * q.k` is exact in float32 and the oracle's scores are the backend's.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import oracle
import pytest
import sweeps

import jax_natten
from jax_natten import backends, checks

C = oracle.Config
LARGE_SCORE_CONFIGS = [
    C(1, (13,), 4, 2, 8, 6, (5,), stride=(2,), dilation=(2,), is_causal=(True,), n_extra=2, rpb=True, scale=4096.0),
    C(2, (6, 7), 2, 1, 8, 8, (3, 4), dilation=(2, 1), is_causal=(False, True), rpb=True, scale=-4096.0),
    C(1, (4, 3, 5), 2, 2, 8, 4, (2, 3, 3), stride=(1, 2, 1), n_extra=1, scale=4096.0),
]
LOW_PRECISION = ("float16", "bfloat16", "float32")


def dyadic_inputs(config, seed):
    """The config's arrays as multiples of 1/8 in [-1, 1] (exact in every float dtype)."""
    return {name: np.round(np.clip(x / 2, -1, 1) * 8) / 8 for name, x in config.inputs(seed).items()}


def attention_fn(backend, config, names):
    def attention(*arrays):
        return jax_natten.neighborhood_attention(**dict(zip(names, arrays)), **config.nbhd_args(),
                                                 scale=config.scale, return_lse=True, backend=backend)
    return attention


@pytest.mark.parametrize("dtype", LOW_PRECISION)
@pytest.mark.parametrize("index", range(len(LARGE_SCORE_CONFIGS)))
@pytest.mark.parametrize("backend", sweeps.CPU_BACKENDS)
def test_large_scores(backend, index, dtype):
    config = LARGE_SCORE_CONFIGS[index]
    low, exact = oracle.cast(dyadic_inputs(config, seed=index), jnp.dtype(dtype))
    names = list(low)
    nbhd = config.nbhd_args()
    scores = config.scale * oracle.qk(exact["query"], exact["key"], **nbhd)
    assert np.nanmax(np.abs(scores[np.isfinite(scores)])) > 5e3  # the regime under test
    args = [jnp.asarray(low[n]) for n in names]
    attention = attention_fn(backend, config, names)
    out, lse = jax.jit(attention)(*args)
    ref_out, ref_lse = oracle.attention(**exact, **nbhd, scale=config.scale)
    assert np.isfinite(np.asarray(out, np.float64)).all() and np.isfinite(np.asarray(lse)).all()
    sweeps.assert_close("output", out, ref_out, oracle.TOLERANCE[dtype])
    # The LSE is float32 whatever the inputs: one rounding of a value near 1e4.
    sweeps.assert_close("LSE", lse, ref_lse, 1e-6)

    # d(sum(w * LSE)) / d inputs: softmax-weighted sums of q and k, the same size as the inputs.
    weights = np.random.default_rng(index).standard_normal(lse.shape)
    got = jax.jit(jax.grad(lambda *a: jnp.sum(attention(*a)[1] * weights), tuple(range(len(args)))))(*args)

    def dense_lse(*a):
        return jnp.sum(oracle.dense_attention_jnp(**dict(zip(names, a)), **nbhd, scale=config.scale)[1] * weights)

    want = jax.jit(jax.grad(dense_lse, tuple(range(len(args)))))(*(jnp.asarray(exact[n]) for n in names))
    for name, g, w in zip(names, got, want):
        if name in ("value", "additional_values"):
            assert not np.abs(np.asarray(g, np.float64)).max(), f"d{name} of the LSE must be zero"
            continue
        assert np.isfinite(np.asarray(g, np.float64)).all(), f"d{name}: not finite"
        sweeps.assert_close(f"d{name}", g, np.asarray(w), oracle.TOLERANCE[dtype])


NONFINITE_CONFIGS = [
    C(2, (11,), 4, 2, 3, 5, (4,), stride=(2,), dilation=(2,), is_causal=(True,), n_extra=2),
    C(1, (5, 7), 3, 1, 4, 2, (3, 2), stride=(1, 2), dilation=(1, 3), is_causal=(False, True), rpb=True),
    C(1, (4, 3, 4), 2, 2, 2, 3, (3, 2, 2), dilation=(1, 1, 2), n_extra=1),
]


def affected(config, name, batch, token, head, dim):
    """Boolean `[batch, tokens, heads, head_dim_v]`: the outputs that read element (batch, token,
    head, dim) of input `name` (`token` is the extra token's index for the additional
    keys/values). A query or key element enters whole rows (through the weights), a value
    element only its own `dim`."""
    group = config.heads // config.heads_kv
    out = np.zeros((config.batch, config.tokens, config.heads, config.head_dim_v), bool)
    dims = dim if name in ("value", "additional_values") else slice(None)
    if name == "query":
        out[batch, token, head] = True
        return out
    heads = slice(head * group, (head + 1) * group)  # the query heads reading kv head `head`
    if name in ("additional_keys", "additional_values"):
        out[batch, :, heads, dims] = True
    else:
        mask = oracle.dense_mask(config.spatial, config.kernel_size, config.stride, config.dilation, config.is_causal)
        queries = np.flatnonzero(mask[:, token])
        out[batch, queries[:, None], heads, dims] = True
    return out


@pytest.mark.parametrize("index", range(len(NONFINITE_CONFIGS)))
@pytest.mark.parametrize("backend", sweeps.CPU_BACKENDS)
def test_nonfinite_inputs_reach_exactly_the_queries_that_attend_to_them(backend, index):
    config = NONFINITE_CONFIGS[index]
    low, _ = oracle.cast(config.inputs(seed=index), np.float32)
    names = list(low)
    attention = jax.jit(attention_fn(backend, config, names))
    clean, _ = attention(*(jnp.asarray(low[n]) for n in names))
    clean = np.asarray(clean).reshape(config.batch, config.tokens, config.heads, -1)
    rng = np.random.default_rng(index)
    checked = 0
    for name in ("query", "key", "value", "additional_keys", "additional_values"):
        if name not in low:
            continue
        for bad in (np.nan, np.inf, -np.inf):
            for _ in range(4):
                x = low[name].reshape(config.batch, -1, *low[name].shape[-2:]).copy()
                where = tuple(int(rng.integers(n)) for n in x.shape)
                x[where] = bad
                arrays = dict(low, **{name: x.reshape(low[name].shape)})
                out, _ = attention(*(jnp.asarray(arrays[n]) for n in names))
                out = np.asarray(out).reshape(clean.shape)
                hit = affected(config, name, *where)
                context = f"{bad} in {name}{list(where)} of {config}"
                assert np.array_equal(out[~hit], clean[~hit]), f"{context}: changed outputs that do not read it"
                if np.isnan(bad):
                    assert np.isnan(out[hit]).all(), f"{context}: an output that reads it is not NaN"
                checked += 1
    assert checked >= 36


@pytest.mark.parametrize("backend", sweeps.CPU_BACKENDS)
def test_float16_overflow(backend):
    """|q.k| = 80000 > 65504: the fused output stays finite (and the LSE, float32, is right);
    the unfused float16 logits are inf, as documented."""
    q = np.full((1, 9, 1, 8), 100.0, np.float16)
    v = np.random.default_rng(0).uniform(-60000, 60000, (1, 9, 1, 4)).astype(np.float16)
    out, lse = jax_natten.na1d(jnp.asarray(q), jnp.asarray(q), jnp.asarray(v), kernel_size=3, scale=1.0,
                               return_lse=True, backend=backend)
    ref_out, ref_lse = oracle.attention(q.astype(np.float64), q.astype(np.float64), v.astype(np.float64),
                                        kernel_size=3, scale=1.0)
    assert np.isfinite(np.asarray(out, np.float64)).all()
    sweeps.assert_close("output", out, ref_out, oracle.TOLERANCE["float16"])
    sweeps.assert_close("LSE", lse, ref_lse, 1e-6)
    qk_request = backends.make_request("qk", "float16", (9,), 1, 1, 8, 8, checks.neighborhood((9,), 3))
    if backends.by_name(backend).unsupported(qk_request) is None:  # blocked: attention only
        logits = jax_natten.na1d_qk(jnp.asarray(q), jnp.asarray(q), kernel_size=3, backend=backend)
        assert logits.dtype == jnp.float16 and np.isposinf(np.asarray(logits, np.float32)).all()
