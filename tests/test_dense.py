"""The dense baseline's choice of implementation (jax_natten/dense.py): cuDNN on GPUs where it
accepts the shapes, forward and backward, XLA elsewhere. cuDNN is not on a CPU machine, so its
refusals are simulated by a stand-in for jax.nn.dot_product_attention that rejects what the real
one rejected on an H200 (odd token counts such as NAT's 7x7 last level)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jax_natten import dense

real_attention = jax.nn.dot_product_attention


def fake_cudnn(query, key, value, implementation=None, **kwargs):
    if implementation == "cudnn" and (query.shape[1] % 2 or key.shape[1] % 2):
        raise NotImplementedError(f"Unsupported sequence length Q {query.shape[1]}, KV {key.shape[1]}.")
    return real_attention(query, key, value, implementation="xla", **kwargs)


@pytest.fixture
def gpu_with_fake_cudnn(monkeypatch):
    dense._cudnn_accepts.cache_clear()
    monkeypatch.setattr(jax.nn, "dot_product_attention", fake_cudnn)
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    yield
    dense._cudnn_accepts.cache_clear()


def inputs(tokens, dtype=jnp.bfloat16):
    x = jnp.asarray(np.random.default_rng(tokens).standard_normal((2, tokens, 2, 16)), dtype)
    return x, x, x


@pytest.mark.parametrize("tokens, dtype, expected", [
    (56 * 56, jnp.bfloat16, "cudnn"),
    (49, jnp.bfloat16, "xla"),       # refused by cuDNN: falls back
    (49, jnp.float16, "xla"),
    (64, jnp.float32, "xla"),        # cuDNN's fused attention is 16-bit only
])
def test_choice_on_gpu(gpu_with_fake_cudnn, tokens, dtype, expected):
    assert dense.implementation(*inputs(tokens, dtype)) == expected


def test_cpu_is_xla():
    assert dense.implementation(*inputs(64), platform="cpu") == "xla"


def test_refused_shape_runs_and_is_recorded(gpu_with_fake_cudnn):
    q, k, v = inputs(49)
    with dense.record() as used:
        out = jax.jit(dense.attention)(q, k, v)
    assert used == {"xla"} and dense.label(used) == "dense-xla"
    np.testing.assert_allclose(np.asarray(out, np.float32),
                               np.asarray(real_attention(q, k, v, implementation="xla"), np.float32))


def test_mixed_levels_label(gpu_with_fake_cudnn):
    def two_levels(fine, coarse):
        return dense.attention(*fine), dense.attention(*coarse)

    with dense.record() as used:
        jax.eval_shape(two_levels, inputs(64), inputs(49))
    assert dense.label(used) == "dense-cudnn+xla"
