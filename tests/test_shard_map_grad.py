"""Gradients of the models' pieces inside `shard_map` with the default VMA checks: the exact GELU
(whose derivative in jax 0.12.0.1 raises "Primitive polynomial requires varying manual axes to
match" through `jax.nn.gelu`; see `jax_natten.models.networks.gelu`) and the MLP block that uses
it, against the same computation without `shard_map`."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, PartitionSpec as P

import jax_natten
from jax_natten import models
from jax_natten.models.networks import Mlp, gelu

DEVICES = 4


@pytest.fixture(scope="module")
def mesh():
    return Mesh(np.array(jax.devices()[:DEVICES]), ("data",))


def _relative(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64, jnp.bfloat16])
def test_gelu_is_jax_exact_gelu_with_its_derivative(dtype):
    x = jnp.asarray(np.random.default_rng(0).standard_normal(4096) * 4, dtype)
    np.testing.assert_array_equal(np.asarray(gelu(x)), np.asarray(jax.nn.gelu(x, approximate=False)))
    want = jax.vmap(jax.grad(lambda t: jax.nn.gelu(t, approximate=False)))(x)
    got = jax.vmap(jax.grad(gelu))(x)
    assert _relative(got, want) < {jnp.float64: 1e-14, jnp.float32: 1e-6, jnp.bfloat16: 1e-2}[dtype]


def test_mlp_gradients_under_shard_map_match_one_device(mesh):
    config = models.ModelConfig(family="nat", embed_dim=8, depths=(1,), num_heads=(2,), mlp_ratio=2.0,
                                drop_path_rate=0.0, kernel_size=3, dilations=((1,),), num_classes=2, image_size=16,
                                dtype=jnp.float32)
    mlp = Mlp(config, 8)
    x = jnp.asarray(np.random.default_rng(1).standard_normal((DEVICES * 2, 5, 8)), jnp.float32)
    params = mlp.init(jax.random.key(0), x)["params"]

    def loss(params, x, mean=lambda value: value):
        return mean((mlp.apply({"params": params}, x) ** 2).mean())

    want = jax.grad(loss, argnums=(0, 1))(params, x)
    per_shard = jax.shard_map(
        jax.grad(lambda params, x: loss(params, x, mean=lambda value: jax.lax.pmean(value, "data")),
                 argnums=(0, 1)),
        mesh=mesh, in_specs=(P(), P("data")), out_specs=(P(), P("data")))
    got_params, got_x = jax.jit(per_shard)(params, x)
    # Each shard differentiates the global mean (pmean inside the loss): its samples' input
    # gradients and the replicated parameters' gradient (summed over shards) are the one-device ones.
    for got, expected in zip(jax.tree.leaves(got_params), jax.tree.leaves(want[0])):
        assert _relative(got, expected) < 1e-5
    assert _relative(got_x, want[1]) < 1e-5


CPU_BACKENDS = ("reference", "blocked", "gemm-emulated", "naive-emulated", "fused-emulated")


@pytest.mark.slow
@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_attention_gradients_under_shard_map_with_replicated_inputs(mesh, backend):
    """Data parallelism as examples/data_parallel.py does it: every input sharded over the batch but
    the RPB, which is replicated. A backend's custom_vjp returns cotangents that vary where the
    query does; the RPB's gradient must come back summed over the shards (VMA checks on), equal to
    the one-device gradient."""
    if backend.endswith("emulated"):
        from conftest import require_emulation
        require_emulation()
    rng = np.random.default_rng(2)
    heads, dim, kernel = 2, 8, (3, 3)
    q, k, v = (jnp.asarray(rng.standard_normal((DEVICES, 5, 6, heads, dim)), jnp.float32) for _ in range(3))
    rpb = jnp.asarray(rng.standard_normal((heads, 5, 5)), jnp.float32)
    extra_k, extra_v = (jnp.asarray(rng.standard_normal((DEVICES, 3, heads, dim)), jnp.float32) for _ in range(2))

    def loss(q, k, v, rpb, extra_k, extra_v, mean=lambda value: value):
        out = jax_natten.na2d(q, k, v, kernel, rpb=rpb, backend=backend)
        extra = jax_natten.na2d(q, k, v, kernel, additional_keys=extra_k, additional_values=extra_v,
                                backend=backend)
        return mean(((out + extra) ** 2).mean())

    args = (q, k, v, rpb, extra_k, extra_v)
    want = jax.grad(loss, argnums=tuple(range(6)))(*args)
    per_shard = jax.shard_map(
        jax.grad(lambda *a: loss(*a, mean=lambda value: jax.lax.pmean(value, "data")), argnums=tuple(range(6))),
        mesh=mesh, in_specs=(P("data"),) * 3 + (P(),) + (P("data"),) * 2,
        out_specs=(P("data"),) * 3 + (P(),) + (P("data"),) * 2)
    got = jax.jit(per_shard)(*args)
    for name, g, w in zip(("dq", "dk", "dv", "drpb", "dextra_k", "dextra_v"), got, want):
        assert _relative(g, w) < 1e-4, name
