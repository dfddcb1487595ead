"""Sharding rules of the kernel operators (jax_natten/primitives.py) on 8 virtual CPU devices.

The CUDA kernels do not run on CPU, so these tests run the kernel backends' own custom_vjp
(`UnfusedBackend`, and `FusedBackend` over it) and operators (`primitives.Operators`) over
`JnpShards` (tests/jnp_kernels.py), pure-JAX PN/NN/IN and fused forward with the kernels'
contracts. Sharded results and gradients are compared with the same backend on one device and
with the reference backend; the compiled HLO of batch/head sharding must hold no all-gather.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

from jax_natten.backends import reference
from jax_natten.backends.fused import FusedBackend
from jax_natten.backends.unfused import UnfusedBackend
from jax_natten.neighborhood import Neighborhood
from jax_natten.primitives import Operators
from jnp_kernels import JnpShards

BACKEND = UnfusedBackend("jnp", Operators(JnpShards()))
# The fused forward's own layout; its gradient is BACKEND's.
FUSED = FusedBackend(BACKEND)
NBHD = Neighborhood((3, 5), (1, 1), (2, 1), (True, False))
SCALE = 0.3
# batch 4, spatial (6, 7), 8 query heads over 4 KV heads (GQA group 2), head_dim 8.
BATCH, SPATIAL, HEADS, HEADS_KV, DIM = 4, (6, 7), 8, 4, 8

SHARDINGS = {
    "batch": P("x"),
    "heads": P(None, None, None, "y"),
    "batch+heads": P("x", None, None, "y"),
}


def mesh():
    return jax.make_mesh((2, 4), ("x", "y"), axis_types=(AxisType.Auto,) * 2)


def inputs(seed, heads_kv=HEADS_KV):
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((BATCH, *SPATIAL, HEADS, DIM))
    k, v = (rng.standard_normal((BATCH, *SPATIAL, heads_kv, DIM)) for _ in range(2))
    rpb = rng.standard_normal((HEADS, *(2 * n - 1 for n in NBHD.kernel_size)))
    return [jnp.asarray(x, jnp.float32) for x in (q, k, v, rpb)]


def attention(backend):
    def f(q, k, v, rpb):
        return backend.attention(q, k, v, NBHD, SCALE, rpb)
    return f


def loss(backend):
    def f(q, k, v, rpb):
        out, lse = attention(backend)(q, k, v, rpb)
        return jnp.sum(out * jnp.sin(out)) + jnp.sum(jnp.cos(lse))
    return f


def relative_error(got, want):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return np.max(np.abs(got - want)) / np.max(np.abs(want))


def place(arrays, spec):
    sharding = NamedSharding(mesh(), spec)
    return [jax.device_put(x, sharding) for x in arrays[:3]] + [arrays[3]]


def all_gathers(hlo):
    return [line for line in hlo.splitlines() if "all-gather" in line]


@pytest.mark.slow
@pytest.mark.parametrize("backend, name, heads_kv",
                         [(BACKEND, name, HEADS_KV) for name in SHARDINGS] + [(BACKEND, "batch+heads", HEADS),
                                                                              (FUSED, "batch+heads", HEADS_KV)],
                         ids=[f"{name}-gqa" for name in SHARDINGS] + ["batch+heads-mha", "fused-batch+heads-gqa"])
def test_batch_and_head_sharding(backend, name, heads_kv):
    arrays = inputs([1, heads_kv, len(name)], heads_kv)
    sharded = place(arrays, SHARDINGS[name])
    forward = jax.jit(attention(backend))
    backward = jax.jit(jax.grad(loss(backend), argnums=(0, 1, 2, 3)))

    want_out, want_lse = forward(*arrays)
    got_out, got_lse = forward(*sharded)
    assert got_out.sharding.spec == SHARDINGS[name]
    assert relative_error(got_out, want_out) < 1e-6
    assert relative_error(got_lse, want_lse) < 1e-6
    ref_out, ref_lse = attention(reference)(*arrays)
    assert relative_error(want_out, ref_out) < 1e-5
    assert relative_error(want_lse, ref_lse) < 1e-5

    want_grads = backward(*arrays)
    for got, want, ref in zip(backward(*sharded), want_grads, jax.grad(loss(reference), argnums=(0, 1, 2, 3))(*arrays)):
        assert relative_error(got, want) < 1e-6
        assert relative_error(want, ref) < 1e-4

    for compiled in (forward.lower(*sharded).compile(), backward.lower(*sharded).compile()):
        assert all_gathers(compiled.as_text()) == []


@pytest.mark.parametrize("spec", [P(None, "x"), P(None, None, None, None, "y")], ids=["spatial", "head_dim"])
def test_spatial_and_head_dim_sharding_is_replicated(spec):
    arrays = inputs(2)
    sharded = place(arrays, spec)
    forward = jax.jit(attention(BACKEND))
    want_out, want_lse = forward(*arrays)
    got_out, got_lse = forward(*sharded)
    assert relative_error(got_out, want_out) < 1e-6
    assert relative_error(got_lse, want_lse) < 1e-6
    grads = jax.jit(jax.grad(loss(BACKEND), argnums=(0, 1, 2)))
    for got, want in zip(grads(*sharded), grads(*arrays)):
        assert relative_error(got, want) < 1e-6
    # The operators need these axes whole: XLA gathers them.
    assert all_gathers(forward.lower(*sharded).compile().as_text())


def test_qk_and_av_head_sharded():
    q, k, v, rpb = inputs(3)
    spec = SHARDINGS["batch+heads"]
    qs, ks, vs, _ = place([q, k, v, rpb], spec)

    def both(q, k, v, rpb):
        logits = BACKEND.qk(q, k, NBHD, rpb)
        return logits, BACKEND.av(jax.nn.softmax(logits, axis=-1), v, NBHD)

    def loss_of(q, k, v, rpb):
        logits, out = both(q, k, v, rpb)
        return jnp.sum(jnp.sin(out)) + jnp.sum(jnp.where(jnp.isfinite(logits), logits, 0) ** 2)

    f = jax.jit(both)
    for got, want in zip(f(qs, ks, vs, rpb), f(q, k, v, rpb)):
        assert got.sharding.spec == spec
        assert relative_error(jnp.where(jnp.isfinite(want), got, 0), jnp.where(jnp.isfinite(want), want, 0)) < 1e-6
    grads = jax.jit(jax.grad(loss_of, argnums=(0, 1, 2, 3)))
    for got, want in zip(grads(qs, ks, vs, rpb), grads(q, k, v, rpb)):
        assert relative_error(got, want) < 1e-6
    assert all_gathers(grads.lower(qs, ks, vs, rpb).compile().as_text()) == []


def test_shard_map_pmap_and_vmap_agree():
    arrays = inputs(4)
    want = jax.jit(attention(BACKEND))(*arrays)
    per_device = jax.shard_map(attention(BACKEND), mesh=mesh(), in_specs=(P("x", None, None, "y"),) * 3 + (P("y"),),
                               out_specs=(P("x", None, None, "y"), P("x", None, None, "y")))
    by_pmap = jax.pmap(attention(BACKEND), in_axes=(0, 0, 0, None))
    by_vmap = jax.jit(jax.vmap(attention(BACKEND), in_axes=(0, 0, 0, None)))
    split = [x.reshape(4, 1, *x.shape[1:]) for x in arrays[:3]]
    results = {
        "shard_map": jax.jit(per_device)(*arrays),
        "pmap": [x.reshape(want[i].shape) for i, x in enumerate(by_pmap(*split, arrays[3]))],
        "vmap": [x.reshape(want[i].shape) for i, x in enumerate(by_vmap(*split, arrays[3]))],
        # A per-example bias cannot fold into the batch: one call per example.
        "vmap with a batched bias": [x.reshape(want[i].shape) for i, x in enumerate(
            jax.jit(jax.vmap(attention(BACKEND)))(*split, jnp.broadcast_to(arrays[3], (4,) + arrays[3].shape)))],
    }
    for name, got in results.items():
        for g, w in zip(got, want):
            assert relative_error(g, w) < 1e-6, name
