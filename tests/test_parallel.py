"""Spatial parallelism (jax_natten/parallel.py) on 8 virtual CPU devices: outputs, LSE and
gradients equal the single-device reference; the compiled HLO moves only halos (collective-permute
bytes counted) and gathers nothing; axes that cannot be split raise."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType

import jax_natten
from jax_natten.parallel import spatially_sharded_attention

# (spatial, kernel_size, dilation, is_causal, shards): halo (k0-1)*d0 against the shard length.
CASES = {
    "1d": ((96,), 5, 2, False, 8),
    "1d-causal": ((96,), 4, 3, True, 8),
    "2d": ((16, 5), (3, 3), (2, 1), (False, True), 4),
    "3d": ((8, 4, 3), (3, 2, 2), (1, 2, 1), (False, False, True), 4),
    "halo-equals-shard": ((32,), 5, 1, False, 8),
}
BATCH, HEADS, HEADS_KV, DIM = 2, 4, 2, 8


def mesh(shards):
    return jax.make_mesh((shards,), ("s",), axis_types=(AxisType.Auto,), devices=jax.devices()[:shards])


def inputs(spatial, kernel_size, seed):
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((BATCH, *spatial, HEADS, DIM))
    k, v = (rng.standard_normal((BATCH, *spatial, HEADS_KV, DIM)) for _ in range(2))
    kernel = np.broadcast_to(kernel_size, (len(spatial),))
    rpb = rng.standard_normal((HEADS, *(2 * kernel - 1)))
    return [jnp.asarray(x) for x in (q, k, v, rpb)]


def loss_of(attention):
    def loss(q, k, v):
        out, lse = attention(q, k, v)
        return jnp.sum(jnp.sin(out)) + jnp.sum(jnp.cos(lse))
    return loss


HLO_ITEMSIZE = {"f64": 8, "f32": 4, "bf16": 2, "f16": 2}


def permuted_bytes(hlo):
    """Bytes of all collective-permute operands in HLO text (result shape = operand shape)."""
    total = 0
    for dtype, dims in re.findall(r"= (\w+)\[([\d,]*)\]\S* collective-permute\(", hlo):
        total += int(np.prod([int(d) for d in dims.split(",") if d])) * HLO_ITEMSIZE[dtype]
    return total


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CASES))
def test_matches_single_device_and_moves_only_halos(name):
    spatial, kernel_size, dilation, is_causal, shards = CASES[name]
    q, k, v, rpb = inputs(spatial, kernel_size, [len(name), shards])
    args = dict(dilation=dilation, is_causal=is_causal, rpb=rpb, return_lse=True, backend="reference")

    def single(q, k, v):
        return jax_natten.neighborhood_attention(q, k, v, kernel_size, **args)

    def sharded(q, k, v):
        return spatially_sharded_attention(q, k, v, kernel_size, mesh(shards), "s", **args)

    forward = jax.jit(sharded)
    for got, want in zip(forward(q, k, v), single(q, k, v)):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    backward = jax.jit(jax.grad(loss_of(sharded), argnums=(0, 1, 2)))
    for got, want in zip(backward(q, k, v), jax.grad(loss_of(single), argnums=(0, 1, 2))(q, k, v)):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)

    # Per shard, K and V halos of (k0-1)*d0 tokens from each neighbor (the left one only when
    # causal); the backward pass sends the same halos of dK and dV back.
    k0, d0 = np.broadcast_to(kernel_size, (len(spatial),))[0], np.broadcast_to(dilation, (len(spatial),))[0]
    causal0 = np.broadcast_to(is_causal, (len(spatial),))[0]
    halo_bytes = BATCH * (k0 - 1) * d0 * int(np.prod(spatial[1:])) * HEADS_KV * DIM * 8
    sides = 1 if causal0 else 2
    forward_hlo = forward.lower(q, k, v).compile().as_text()
    backward_hlo = backward.lower(q, k, v).compile().as_text()
    assert permuted_bytes(forward_hlo) == 2 * sides * halo_bytes
    assert permuted_bytes(backward_hlo) == 4 * sides * halo_bytes
    assert "all-gather" not in forward_hlo and "all-gather" not in backward_hlo
    assert "all-reduce" not in forward_hlo


@pytest.mark.parametrize("spatial, kernel_size, dilation, stride, shards, message", [
    ((30,), 3, 1, 1, 8, "not divisible"),
    ((48,), 3, 4, 1, 8, "multiple of its dilation"),
    ((48,), 7, 2, 1, 8, "wider than the shard"),
    ((96,), 3, 1, 2, 8, "stride 1"),
])
def test_axes_that_cannot_be_split_raise(spatial, kernel_size, dilation, stride, shards, message):
    q, k, v, _ = inputs(spatial, kernel_size, 0)
    with pytest.raises(ValueError, match=message):
        spatially_sharded_attention(q, k, v, kernel_size, mesh(shards), "s", stride=stride, dilation=dilation,
                                    backend="reference")
