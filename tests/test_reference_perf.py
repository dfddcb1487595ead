"""Acceptance check: the reference backend runs a 2-D 128x128, 16 heads, head_dim 64, kernel
13x13, batch 1, float32 forward+backward (jit(value_and_grad)) in under a minute, compile
included."""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

import jax_natten

LIMIT_S = 60.0


def test_reference_2d_forward_backward_under_a_minute():
    rng = np.random.default_rng(0)
    shape = (1, 128, 128, 16, 64)
    q, k, v = (jnp.asarray(rng.standard_normal(shape), jnp.float32) for _ in range(3))
    jax.block_until_ready((q, k, v))

    def loss(q, k, v):
        out = jax_natten.neighborhood_attention(q, k, v, (13, 13), backend="reference")
        return jnp.sum(out * out)

    start = time.perf_counter()
    value, grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))(q, k, v)
    jax.block_until_ready((value, grads))
    elapsed = time.perf_counter() - start

    assert elapsed < LIMIT_S, f"forward+backward took {elapsed:.1f} s (compile included); the limit is {LIMIT_S} s"
    assert np.isfinite(float(value)) and float(value) > 0
    for g in grads:
        assert g.shape == shape and g.dtype == jnp.float32
        assert np.isfinite(np.asarray(g)).all() and np.asarray(g).any()
