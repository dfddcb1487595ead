"""Dense attention, the baseline every benchmark compares with: cuDNN's fused kernel on GPUs
wherever it accepts the inputs, XLA's attention otherwise.

cuDNN refuses some shapes that real models have (for example the 7x7 = 49-token last level of
NAT/DiNAT at 224x224 in 16-bit, "Unsupported sequence length Q 49, KV 49"), and only says so when
the call is traced, for the forward and the backward pass separately. `implementation()` asks it
once per shape by tracing both passes abstractly (`jax.eval_shape`, nothing runs) and answers
"xla" where it refuses, so that a dense network runs on every GPU instead of crashing.
"""

from __future__ import annotations

import contextlib
import functools

import jax
import jax.numpy as jnp

CUDNN_DTYPES = (jnp.float16, jnp.bfloat16)

_recorders: list[set] = []


@functools.lru_cache(maxsize=None)
def _cudnn_accepts(q_shape, k_shape, v_shape, dtype) -> bool:
    def forward(q, k, v):
        return jax.nn.dot_product_attention(q, k, v, implementation="cudnn")

    def loss(q, k, v):
        return forward(q, k, v).astype(jnp.float32).sum()

    args = [jax.ShapeDtypeStruct(s, dtype) for s in (q_shape, k_shape, v_shape)]
    try:
        jax.eval_shape(forward, *args)
        jax.eval_shape(jax.grad(loss, argnums=(0, 1, 2)), *args)
    except (NotImplementedError, ValueError, RuntimeError, TypeError):
        return False
    return True


def implementation(query, key, value, platform: str | None = None) -> str:
    """"cudnn" where cuDNN's fused attention accepts these `[batch, tokens, heads, head_dim]`
    inputs (forward and backward) on a GPU, else "xla"."""
    platform = platform or jax.default_backend()
    if platform != "gpu" or jnp.dtype(query.dtype) not in [jnp.dtype(d) for d in CUDNN_DTYPES]:
        return "xla"
    accepted = _cudnn_accepts(tuple(query.shape), tuple(key.shape), tuple(value.shape), jnp.dtype(query.dtype))
    return "cudnn" if accepted else "xla"


def attention(query, key, value):
    """`jax.nn.dot_product_attention` on `[batch, tokens, heads, head_dim]` with the
    implementation `implementation()` chooses; every choice is reported to `record()`."""
    chosen = implementation(query, key, value)
    for used in _recorders:
        used.add(chosen)
    return jax.nn.dot_product_attention(query, key, value, implementation=chosen)


@contextlib.contextmanager
def record():
    """Collects the implementations that `attention` chooses while tracing inside the block, for
    benchmarks to say what their dense baseline ran on."""
    used: set = set()
    _recorders.append(used)
    try:
        yield used
    finally:
        _recorders.remove(used)


def label(used) -> str:
    """"dense-cudnn", "dense-xla", or "dense-cudnn+xla" when levels of one model differ."""
    return "dense-" + "+".join(sorted(used)) if used else "dense"
