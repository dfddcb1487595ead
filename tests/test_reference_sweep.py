"""Random sweep of the reference backend against the float64 oracle, in float32: fused
attention (outputs and LSE) and the unfused PN (qk) and NN (av) operators.

The configurations are drawn once, at collection time, from a fixed seed; each test id names
its index and the failure message prints the whole configuration.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import oracle
import pytest

import jax_natten

MAX_TOKENS = oracle.MAX_TOKENS
TOLERANCE = 1e-5  # SPEC: float32 relative error

ATTENTION_CONFIGS = oracle.sweep(520, seed=20240601)
UNFUSED_CONFIGS = oracle.sweep(160, seed=777)


def config_id(index, configs):
    c = configs[index]
    return f"{index}-{c.rank}d-{'x'.join(map(str, c.spatial))}"


def features(c: oracle.Config):
    """The properties of a configuration that the sweep must cover."""
    axes = list(zip(c.spatial, c.kernel_size, c.stride, c.dilation, c.is_causal))
    return {
        f"rank{c.rank}": True,
        "odd kernel": any(k % 2 for _, k, _, _, _ in axes),
        "even kernel": any(k % 2 == 0 for _, k, _, _, _ in axes),
        "kernel = length": any(k == L for L, k, _, _, _ in axes),
        "stride 1 < s < k": any(1 < s < k for _, k, s, _, _ in axes),
        "stride = kernel": any(s == k for _, k, s, _, _ in axes),
        "dilation divides length": any(d > 1 and L % d == 0 for L, _, _, d, _ in axes),
        "dilation not dividing length": any(d > 1 and L % d for L, _, _, d, _ in axes),
        "causal": any(c.is_causal),
        "causal on some axes only": any(c.is_causal) and not all(c.is_causal),
        "causal with stride": any(cc and s > 1 for _, _, s, _, cc in axes),
        "causal with dilation": any(cc and d > 1 for _, _, _, d, cc in axes),
        "GQA": c.heads_kv < c.heads,
        "MQA": c.heads_kv == 1 < c.heads,
        "head_dim_v != head_dim": c.head_dim_v != c.head_dim,
        "extra KV": c.n_extra > 0,
        "rpb": c.rpb,
        "rpb with dilation": c.rpb and any(d > 1 for d in c.dilation),
        "scale None": c.scale is None,
        "scale 0.0": c.scale == 0.0,
        "scale explicit": c.scale not in (None, 0.0),
        "batch 2": c.batch == 2,
        "plain-value arguments": c.scalar_args and c.rank > 1,
    }


@pytest.mark.parametrize("configs,minimum", [(ATTENTION_CONFIGS, 10), (UNFUSED_CONFIGS, 3)],
                         ids=["attention", "unfused"])
def test_sweep_covers_every_feature(configs, minimum):
    assert len(configs) >= 150
    counts = {}
    for c in configs:
        assert c.tokens <= MAX_TOKENS
        for name, present in features(c).items():
            counts[name] = counts.get(name, 0) + bool(present)
    missing = {name: n for name, n in counts.items() if n < minimum}
    assert not missing, f"features with fewer than {minimum} configurations: {missing}"
    assert len(ATTENTION_CONFIGS) >= 500


def _check_finite_close(got, ref, what, config):
    got = np.asarray(got, np.float64)
    assert not np.isnan(got).any(), f"{what}: NaN for {config}"
    err = oracle.rel_err(got, ref)
    assert err < TOLERANCE, f"{what}: relative error {err:.3e} for {config}"


@pytest.mark.parametrize("index", range(len(ATTENTION_CONFIGS)),
                         ids=functools.partial(config_id, configs=ATTENTION_CONFIGS))
def test_attention_matches_oracle(index):
    config = ATTENTION_CONFIGS[index]
    arrays, exact = oracle.cast(config.inputs(seed=index), np.float32)
    nbhd = config.nbhd_args()

    def run(query, key, value, **optional):
        return jax_natten.neighborhood_attention(query, key, value, **nbhd, scale=config.scale,
                                                 return_lse=True, backend="reference", **optional)

    out, lse = jax.jit(run)(**{name: jnp.asarray(x) for name, x in arrays.items()})
    ref_out, ref_lse = oracle.attention(**exact, **nbhd, scale=config.scale)
    assert out.dtype == jnp.float32 and lse.dtype == jnp.float32
    assert out.shape == ref_out.shape and lse.shape == ref_lse.shape
    _check_finite_close(out, ref_out, "output", config)
    _check_finite_close(lse, ref_lse, "LSE", config)


@pytest.mark.parametrize("index", range(len(UNFUSED_CONFIGS)),
                         ids=functools.partial(config_id, configs=UNFUSED_CONFIGS))
def test_qk_and_av_match_oracle(index):
    """PN and NN of one configuration, jitted together (one compile): qk with rpb on every other
    configuration, av on random weights (random in the empty causal slots too: ignored)."""
    config = UNFUSED_CONFIGS[index]
    rng = np.random.default_rng(10_000 + index)
    window = math.prod(config.kernel_size)
    tokens = (config.batch, *config.spatial)
    query = rng.standard_normal((*tokens, config.heads, config.head_dim)).astype(np.float32)
    key = rng.standard_normal((*tokens, config.heads_kv, config.head_dim)).astype(np.float32)
    attn = rng.standard_normal((*tokens, config.heads, window)).astype(np.float32)
    value = rng.standard_normal((*tokens, config.heads_kv, config.head_dim_v)).astype(np.float32)
    rpb = None
    if index % 2:
        rpb = rng.standard_normal((config.heads, *(2 * k - 1 for k in config.kernel_size))).astype(np.float32)
    nbhd = config.nbhd_args()
    na_qk = getattr(jax_natten, f"na{config.rank}d_qk")
    na_av = getattr(jax_natten, f"na{config.rank}d_av")

    @jax.jit
    def both(query, key, rpb, attn, value):
        return (na_qk(query, key, **nbhd, rpb=rpb, backend="reference"),
                na_av(attn, value, **nbhd, backend="reference"))

    got_qk, got_av = both(*(None if x is None else jnp.asarray(x) for x in (query, key, rpb, attn, value)))
    assert got_qk.dtype == got_av.dtype == jnp.float32

    f64 = {name: None if x is None else x.astype(np.float64)
           for name, x in (("query", query), ("key", key), ("rpb", rpb), ("attn", attn), ("value", value))}
    ref_qk = oracle.qk(f64["query"], f64["key"], **nbhd, rpb=f64["rpb"])
    got_qk = np.asarray(got_qk, np.float64)
    assert got_qk.shape == ref_qk.shape == (*tokens, config.heads, window)
    assert not np.isnan(got_qk).any(), f"qk: NaN for {config}"
    empty = np.isneginf(ref_qk)
    assert any(config.is_causal) or not empty.any()
    assert np.array_equal(np.isneginf(got_qk), empty), f"qk: -inf slots differ for {config}"
    assert np.isfinite(got_qk[~empty]).all(), f"qk: non-finite logits in valid slots for {config}"
    err = oracle.rel_err(got_qk[~empty], ref_qk[~empty])
    assert err < TOLERANCE, f"qk: relative error {err:.3e} for {config}"

    ref_av = oracle.av(f64["attn"], f64["value"], **nbhd)
    assert got_av.shape == ref_av.shape
    _check_finite_close(got_av, ref_av, "av output", config)
