"""FFI calls of the unfused operators PN, NN and IN (cuda/ffi/unfused.cu; see
cuda/include/jax_natten/params.h for what each computes).

Every call uses `vmap_method="broadcast_all"`: a vmapped axis arrives as an extra leading axis,
and the handlers count every axis before the spatial ones as batch, so vmap (also of the
backward calls) runs one kernel over the folded batch. `UnfusedOperators` (partitioning.py) gives
each call its sharding rule: a sharded jit runs the kernels on each device's batch and heads.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jax_natten import cuda
from jax_natten.neighborhood import Neighborhood
from jax_natten.partitioning import UnfusedOperators


def _attributes(nbhd: Neighborhood):
    return {
        "kernel_size": np.asarray(nbhd.kernel_size, np.int64),
        "stride": np.asarray(nbhd.stride, np.int64),
        "dilation": np.asarray(nbhd.dilation, np.int64),
        "is_causal": np.asarray(nbhd.is_causal, np.int64),
    }


class UnfusedKernels(UnfusedOperators):
    """One implementation (`variant`, e.g. "naive") of the three operators, partitioned over batch
    and heads by `UnfusedOperators`, on `platform`: "cuda" (the GPU kernels) or "cpu" (the same
    kernels in the host emulation; same targets, registered for the CPU platform)."""

    def __init__(self, variant: str, platform: str = "cuda"):
        if platform not in ("cuda", "cpu"):
            raise ValueError(f"platform={platform!r}: expected 'cuda' or 'cpu'")
        self.variant = variant
        self.platform = platform

    def unavailable_reason(self, platform: str | None = None) -> str | None:
        """Why these kernels cannot run when JAX runs on `platform`, or None."""
        if self.platform == "cpu":
            return cuda.emulation_unavailable_reason(platform)
        return cuda.unavailable_reason(platform)

    def _call(self, operator, result, *args, **attributes):
        target = f"{cuda.TARGET_PREFIX}na_{operator}_{self.variant}"
        return jax.ffi.ffi_call(target, result, vmap_method="broadcast_all")(*args, **attributes)

    def pn_shard(self, query, key, rpb, nbhd: Neighborhood, scale, empty_value, out_dtype):
        result = jax.ShapeDtypeStruct(query.shape[:-1] + (nbhd.window_size,), out_dtype)
        if rpb is None:
            rpb = jnp.zeros((0,), query.dtype)
        return self._call("pn", result, query, key, rpb, scale=np.float32(scale),
                          empty_value=np.float32(empty_value), **_attributes(nbhd))

    def nn_shard(self, weights, value, nbhd: Neighborhood, scale):
        result = jax.ShapeDtypeStruct(weights.shape[:-1] + value.shape[-1:], value.dtype)
        return self._call("nn", result, weights, value, scale=np.float32(scale), **_attributes(nbhd))

    def in_shard(self, weights, values, nbhd: Neighborhood, heads_kv, scale):
        result = jax.ShapeDtypeStruct(values.shape[:-2] + (heads_kv, values.shape[-1]), values.dtype)
        return self._call("in", result, weights, values, scale=np.float32(scale), **_attributes(nbhd))
