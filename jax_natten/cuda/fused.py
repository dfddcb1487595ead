"""FFI call of the fused forward (cuda/ffi/fused.cu; contract in
cuda/include/jax_natten/fused/params.h), partitioned over batch and heads.

`vmap_method="broadcast_all"`: a vmapped axis arrives as one more leading axis, which the handler
folds into batch. The tile boxes are the planner's (`fused_plan.plan`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jax_natten import cuda, fused_plan
from jax_natten.cuda.unfused import _attributes
from jax_natten.neighborhood import Neighborhood
from jax_natten.partitioning import HEADS_FIRST, KV_HEADS, QUERY_HEADS, Layout, partitioned

TARGET = f"{cuda.TARGET_PREFIX}na_fused_forward"


def _forward_shard(query, key, value, rpb, nbhd: Neighborhood, scale):
    spatial = query.shape[-nbhd.rank - 2:-2]
    tiles = fused_plan.plan(spatial, nbhd, query.shape[-1], value.shape[-1], dtype=jnp.dtype(query.dtype).name)
    results = (jax.ShapeDtypeStruct(query.shape[:-1] + value.shape[-1:], query.dtype),
               jax.ShapeDtypeStruct(query.shape[:-1], jnp.float32))
    if rpb is None:
        rpb = jnp.zeros((0,), query.dtype)
    return jax.ffi.ffi_call(TARGET, results, vmap_method="broadcast_all")(
        query, key, value, rpb, scale=np.float32(scale), q_tile=np.asarray(tiles.q_tile, np.int64),
        kv_tile=np.asarray(tiles.kv_tile, np.int64), **_attributes(nbhd))


def fused_forward(query, key, value, rpb, nbhd: Neighborhood, scale):
    """`(out, lse)` of neighborhood attention over the window only (no extra tokens); lse float32."""
    group = query.shape[-2] // key.shape[-2]
    if rpb is None:
        layout = Layout(nbhd.rank, group, (QUERY_HEADS, KV_HEADS, KV_HEADS), (QUERY_HEADS, QUERY_HEADS))
        return partitioned(lambda q, k, v: _forward_shard(q, k, v, None, nbhd, scale), layout)(query, key, value)
    layout = Layout(nbhd.rank, group, (QUERY_HEADS, KV_HEADS, KV_HEADS, HEADS_FIRST), (QUERY_HEADS, QUERY_HEADS))
    return partitioned(lambda q, k, v, b: _forward_shard(q, k, v, b, nbhd, scale), layout)(query, key, value, rpb)


def head_dim_classes() -> tuple[int, ...]:
    """The head-dim classes the installed extension was built with (empty without it)."""
    module = cuda.extension()
    return () if module is None else tuple(module.fused_head_dim_classes())
