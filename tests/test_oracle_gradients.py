"""The oracle's gradients (tests/oracle.py: qk_vjp, av_vjp, attention_vjp, written out by hand
in NumPy) against jax's differentiation of the reference backend, both in float64, on random
configurations of every parameter class (test_unfused_cuda.random_config: RPB, GQA, additional
tokens, causal, stride, dilation). The CUDA and emulated sweeps check their gradients against
these oracle functions."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from test_unfused_cuda import _frozen, all_results, make_inputs, oracle_results, random_config, relative_error

CONFIGS = 12


@pytest.mark.parametrize("index", range(CONFIGS))
def test_oracle_gradients_match_reference_backend(index):
    rng = np.random.default_rng([31, index])
    c = random_config(rng)
    x = make_inputs(rng, c, "float64")
    got = jax.jit(all_results, static_argnums=(1, 2))(x, _frozen(c), "reference")
    want = oracle_results(x, c)
    assert set(got) == set(want)
    finite = np.isfinite(want["qk"])
    for name, value in want.items():
        if value is None:
            assert got[name] is None, name
            continue
        if name == "qk":
            value, got_value = np.where(finite, value, 0), np.where(finite, np.asarray(got[name]), 0)
        else:
            got_value = got[name]
        assert relative_error(got_value, value) < 1e-10, (name, c)
