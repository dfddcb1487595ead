"""The kernel operators PN, NN and IN as JAX operations, each in one place: what it computes, its
abstract result, its FFI call and its operand layout, which gives it its vmap and sharding rules
(`partitioning.partitioned`). The contracts are those of `cuda/include/jax_natten/params.h`.

Composition: `Operators` wires the three operators through `partitioned` over a per-shard
implementation, `shards`, with the methods `pn`, `nn` and `inverse` on one shard's arrays (any
number of leading batch axes). `FfiShards` is the implementation by FFI calls of one kernel variant
on one XLA platform; the tests add a pure-JAX one (tests/jnp_kernels.py) to run these rules on
any device. A new operator (the fused q, k, v -> out, lse: operands `(QUERY_HEADS, KV_HEADS,
KV_HEADS)`, results `(QUERY_HEADS, QUERY_HEADS)`) adds its result, layout, FFI call and
`Operators` method here.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from jax_natten import cuda
from jax_natten.neighborhood import Neighborhood
from jax_natten.partitioning import HEADS_FIRST, KV_HEADS, QUERY_HEADS, Layout, partitioned


def pn_result(query, nbhd: Neighborhood, out_dtype):
    """PN: `[*batch, *spatial, heads, window]` in `out_dtype`."""
    return jax.ShapeDtypeStruct(query.shape[:-1] + (nbhd.window_size,), out_dtype)


def pn_layout(query, key, nbhd: Neighborhood, has_rpb: bool):
    operands = (QUERY_HEADS, KV_HEADS, HEADS_FIRST) if has_rpb else (QUERY_HEADS, KV_HEADS)
    return Layout(nbhd.rank, query.shape[-2] // key.shape[-2], operands, (QUERY_HEADS,))


def nn_result(weights, value):
    """NN: `[*batch, *spatial, heads, dim]` in value's dtype."""
    return jax.ShapeDtypeStruct(weights.shape[:-1] + value.shape[-1:], value.dtype)


def nn_layout(weights, value, nbhd: Neighborhood):
    return Layout(nbhd.rank, weights.shape[-2] // value.shape[-2], (QUERY_HEADS, KV_HEADS), (QUERY_HEADS,))


def in_result(values, heads_kv):
    """IN: `[*batch, *spatial, heads_kv, dim]` in values' dtype."""
    return jax.ShapeDtypeStruct(values.shape[:-2] + (heads_kv, values.shape[-1]), values.dtype)


def in_layout(weights, heads_kv, nbhd: Neighborhood):
    return Layout(nbhd.rank, weights.shape[-2] // heads_kv, (QUERY_HEADS, QUERY_HEADS), (KV_HEADS,))


def _neighborhood_attributes(nbhd: Neighborhood):
    return {
        "kernel_size": np.asarray(nbhd.kernel_size, np.int64),
        "stride": np.asarray(nbhd.stride, np.int64),
        "dilation": np.asarray(nbhd.dilation, np.int64),
        "is_causal": np.asarray(nbhd.is_causal, np.int64),
    }


# The JAX backend name of each XLA platform that FFI targets are registered for.
JAX_BACKEND_OF_PLATFORM = {"CUDA": "gpu", "cpu": "cpu"}


@dataclasses.dataclass(frozen=True)
class FfiShards:
    """PN, NN and IN on one shard by the FFI targets `jax_natten_na_{pn,nn,in}_{variant}`
    registered for the XLA `platform` ("CUDA": cuda/ffi/*.cu)."""

    variant: str
    platform: str = "CUDA"

    def target(self, operator: str) -> str:
        return f"{cuda.TARGET_PREFIX}na_{operator}_{self.variant}"

    def unavailable_reason(self, jax_platform: str):
        """Why these targets cannot run when JAX runs on `jax_platform`, or None."""
        if self.platform == "CUDA":
            return cuda.unavailable_reason(jax_platform)
        if jax_platform != JAX_BACKEND_OF_PLATFORM[self.platform]:
            return f"JAX runs on {jax_platform!r}; the {self.variant} targets run on {self.platform!r}"
        missing = [op for op in ("pn", "nn", "in") if self.target(op) not in cuda.target_names(self.platform)]
        if missing:
            return f"no FFI targets {', '.join(self.target(op) for op in missing)} on {self.platform!r}"
        return None

    def _call(self, operator, result, nbhd: Neighborhood, *args, **attributes):
        # "broadcast_all": a vmapped axis arrives as one more leading axis, which the handlers
        # count as batch (`Operators` gives a vmap rule of its own; this covers a bare call).
        call = jax.ffi.ffi_call(self.target(operator), result, vmap_method="broadcast_all")
        return call(*args, **attributes, **_neighborhood_attributes(nbhd))

    def pn(self, query, key, rpb, nbhd: Neighborhood, scale, empty_value, out_dtype):
        if rpb is None:
            rpb = jnp.zeros((0,), query.dtype)
        return self._call("pn", pn_result(query, nbhd, out_dtype), nbhd, query, key, rpb,
                          scale=np.float32(scale), empty_value=np.float32(empty_value))

    def nn(self, weights, value, nbhd: Neighborhood, scale):
        return self._call("nn", nn_result(weights, value), nbhd, weights, value, scale=np.float32(scale))

    def inverse(self, weights, values, nbhd: Neighborhood, heads_kv, scale):
        return self._call("in", in_result(values, heads_kv), nbhd, weights, values, scale=np.float32(scale))


@dataclasses.dataclass(frozen=True)
class Operators:
    """PN, NN and IN over any leading batch axes, partitioned over batch and heads, on `shards`."""

    shards: object

    def pn(self, query, key, rpb, nbhd: Neighborhood, scale, empty_value, out_dtype):
        """`scale * q.k (+ rpb)` per slot, `[*batch, *spatial, heads, window]` in `out_dtype`;
        `empty_value` in the empty slots of causal windows."""
        layout = pn_layout(query, key, nbhd, rpb is not None)
        if rpb is None:
            return partitioned(lambda q, k: self.shards.pn(q, k, None, nbhd, scale, empty_value, out_dtype),
                               layout)(query, key)
        return partitioned(lambda q, k, b: self.shards.pn(q, k, b, nbhd, scale, empty_value, out_dtype),
                           layout)(query, key, rpb)

    def nn(self, weights, value, nbhd: Neighborhood, scale):
        """`scale * sum_t weights[..., t] * value[neighbor t]`, in value's dtype."""
        return partitioned(lambda w, v: self.shards.nn(w, v, nbhd, scale),
                           nn_layout(weights, value, nbhd))(weights, value)

    def inverse(self, weights, values, nbhd: Neighborhood, heads_kv, scale):
        """IN: per key, `scale * sum` over the (query, slot, query head of its group) that read it
        of `weights * values`, `[*batch, *spatial, heads_kv, dim]` in values' dtype."""
        group = weights.shape[-2] // heads_kv
        # Under head sharding each shard holds `heads_kv / shards` KV heads: read them off the shard.
        return partitioned(lambda w, x: self.shards.inverse(w, x, nbhd, x.shape[-2] // group, scale),
                           in_layout(weights, heads_kv, nbhd))(weights, values)
