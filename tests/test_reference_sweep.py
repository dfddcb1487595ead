"""Random sweep of the reference backend against the float64 oracle, in every dtype: fused
attention (outputs and LSE, and gradients of the first GRAD_COUNT) and the unfused PN (qk) and
NN (av) operators; with JAX_NATTEN_LONG=1 also the long sweep (tests/sweeps.py).

The configurations are drawn once, at collection time, from a fixed seed; each test id names
its index and a failure's first line is a command that reproduces it.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import oracle
import pytest

import sweeps

import jax_natten

MAX_TOKENS = oracle.MAX_TOKENS

ATTENTION_CONFIGS = sweeps.configs(520, seed=20240601)
GRAD_COUNT = 40  # the first configurations also check every input's gradient
UNFUSED_CONFIGS = sweeps.configs(160, seed=777)


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
        **{dtype: c.dtype == dtype for dtype in oracle.DTYPES},
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


@pytest.mark.parametrize("index", range(len(ATTENTION_CONFIGS)),
                         ids=functools.partial(config_id, configs=ATTENTION_CONFIGS))
def test_attention_matches_oracle(index):
    sweeps.check_backend("reference", ATTENTION_CONFIGS[index], seed=index, grads=index < GRAD_COUNT)


if sweeps.LONG:
    LONG_CHUNK = 100

    @pytest.mark.parametrize("chunk", range(-(-sweeps.LONG_COUNT // LONG_CHUNK)))
    @pytest.mark.parametrize("backend", sweeps.CPU_BACKENDS)
    def test_long_sweep_matches_oracle(backend, chunk):
        """JAX_NATTEN_LONG=1: LONG_COUNT small configurations per backend, in chunks of 100
        (each chunk its own seed, so that one chunk reruns alone)."""
        count = min(LONG_CHUNK, sweeps.LONG_COUNT - chunk * LONG_CHUNK)
        configs = sweeps.configs(count, seed=1_000_000 + chunk, supports=sweeps.runs_on(backend),
                                 max_tokens=sweeps.LONG_MAX_TOKENS)
        sweeps.check_sweep(backend, configs, first_seed=chunk * LONG_CHUNK)


@pytest.mark.parametrize("index", range(len(UNFUSED_CONFIGS)),
                         ids=functools.partial(config_id, configs=UNFUSED_CONFIGS))
def test_qk_and_av_match_oracle(index):
    """PN and NN of one configuration in its dtype, jitted together (one compile): qk with rpb
    on every other configuration, av on random weights (random in the empty causal slots too:
    ignored)."""
    config = UNFUSED_CONFIGS[index]
    rng = np.random.default_rng(10_000 + index)
    window = math.prod(config.kernel_size)
    tokens = (config.batch, *config.spatial)
    arrays = {
        "query": rng.standard_normal((*tokens, config.heads, config.head_dim)),
        "key": rng.standard_normal((*tokens, config.heads_kv, config.head_dim)),
        "attn": rng.standard_normal((*tokens, config.heads, window)),
        "value": rng.standard_normal((*tokens, config.heads_kv, config.head_dim_v)),
    }
    if index % 2:
        arrays["rpb"] = rng.standard_normal((config.heads, *(2 * k - 1 for k in config.kernel_size)))
    low, exact = oracle.cast(arrays, jnp.dtype(config.dtype))
    nbhd = config.nbhd_args()
    na_qk = getattr(jax_natten, f"na{config.rank}d_qk")
    na_av = getattr(jax_natten, f"na{config.rank}d_av")

    @jax.jit
    def both(query, key, attn, value, rpb=None):
        return (na_qk(query, key, **nbhd, rpb=rpb, backend="reference"),
                na_av(attn, value, **nbhd, backend="reference"))

    got_qk, got_av = both(**{name: jnp.asarray(x) for name, x in low.items()})
    assert got_qk.dtype == got_av.dtype == jnp.dtype(config.dtype), config
    tolerance = oracle.TOLERANCE[config.dtype]

    ref_qk = oracle.qk(exact["query"], exact["key"], **nbhd, rpb=exact.get("rpb"))
    got_qk = np.asarray(got_qk, np.float64)
    assert got_qk.shape == ref_qk.shape == (*tokens, config.heads, window)
    empty = np.isneginf(ref_qk)
    assert any(config.is_causal) or not empty.any()
    assert np.array_equal(np.isneginf(got_qk), empty), f"qk: -inf slots differ for {config}"
    assert np.isfinite(got_qk[~empty]).all(), f"qk: non-finite logits in valid slots for {config}"
    sweeps.assert_close(f"qk of {config}", got_qk[~empty], ref_qk[~empty], tolerance)
    ref_av = oracle.av(exact["attn"], exact["value"], **nbhd)
    sweeps.assert_close(f"av of {config}", got_av, ref_av, tolerance)
