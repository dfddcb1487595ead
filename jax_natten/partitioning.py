"""Sharding rules for the per-shard operators (FFI kernels or any stand-in with their contract).

An FFI call is opaque to XLA: left alone, a sharded `jit` gathers its inputs and runs it
replicated. `partitioned` wraps a per-shard implementation in `custom_partitioning` with a
Shardy sharding rule (and the GSPMD callbacks for jax configured without Shardy):

- batch axes (every axis before the spatial ones) keep their sharding;
- the head axis keeps its sharding; with GQA the query heads are the compound factor
  `(heads_kv group)`, so a head sharding that splits the KV heads splits the query heads the same
  way and each shard keeps whole groups;
- spatial axes, head_dim, window slots and bias tables need replication (a neighborhood reads
  across spatial shards; `jax_natten.parallel` splits a spatial axis with halo exchanges).

`jax_natten.primitives` declares each operator's layout (the kind of every operand and result)
and wires its per-shard implementation through `partitioned`.

`custom_partitioning` has no batching rule; `custom_vmap` moves a vmapped axis in front as one
more batch axis (the per-shard implementations fold all leading axes into batch).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from jax.custom_batching import custom_vmap
from jax.experimental.custom_partitioning import custom_partitioning
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

# What an operand or result is; `[*batch, *spatial, heads(, feature)]` for the two head kinds.
QUERY_HEADS = "query_heads"
KV_HEADS = "kv_heads"
HEADS_FIRST = "heads_first"  # `[query heads, ...]`: the bias table
REPLICATED = "replicated"


@dataclasses.dataclass(frozen=True)
class Layout:
    """The kinds of a per-shard operator's operands and results, the spatial rank and the GQA
    group size (query heads per KV head)."""

    rank: int
    group: int
    operands: tuple[str, ...]
    results: tuple[str, ...]


def partitioned(per_shard, layout: Layout):
    """`per_shard(*operands)` (one array or a tuple of arrays, any number of leading batch axes)
    as an operator that XLA partitions over batch and heads."""

    @custom_vmap
    def call(*operands):
        return _partitioned_call(per_shard, layout, operands)

    @call.def_vmap
    def batched(axis_size, in_batched, *operands):
        replicated_batched = any(b and kind in (HEADS_FIRST, REPLICATED)
                                 for b, kind in zip(in_batched, layout.operands))
        if replicated_batched:
            # A per-example bias table cannot fold into batch: one call per example.
            operands = [x if b else jnp.broadcast_to(x, (axis_size,) + x.shape)
                        for x, b in zip(operands, in_batched)]
            results = jax.lax.map(lambda xs: call(*xs), tuple(operands))
        else:
            operands = [x if b or kind in (HEADS_FIRST, REPLICATED) else jnp.broadcast_to(x, (axis_size,) + x.shape)
                        for x, b, kind in zip(operands, in_batched, layout.operands)]
            results = call(*operands)
        return results, jax.tree.map(lambda _: True, results)

    return call


def _batch_ndim(layout: Layout, operands):
    first = layout.operands.index(QUERY_HEADS)
    return operands[first].ndim - layout.rank - 2


def _factors(kind, ndim, batch_ndim, layout: Layout, name):
    """Shardy factors of one operand or result, and those of them that need replication."""
    grouped = "(h g)" if layout.group > 1 else "h"
    if kind in (QUERY_HEADS, KV_HEADS):
        spatial = [f"s{i}" for i in range(layout.rank)]
        features = [f"{name}f{i}" for i in range(ndim - batch_ndim - layout.rank - 1)]
        heads = grouped if kind == QUERY_HEADS else "h"
        return [f"b{i}" for i in range(batch_ndim)] + spatial + [heads] + features, spatial + features
    if kind == HEADS_FIRST:
        rest = [f"{name}r{i}" for i in range(ndim - 1)]
        return [grouped] + rest, rest
    rest = [f"{name}r{i}" for i in range(ndim)]
    return rest, rest


def _sharding_rule(layout: Layout, operands, results):
    batch_ndim = _batch_ndim(layout, operands)
    sides, replicated = [], []
    for prefix, kinds, arrays in (("i", layout.operands, operands), ("o", layout.results, results)):
        terms = []
        for n, (kind, x) in enumerate(zip(kinds, arrays)):
            factors, needs = _factors(kind, x.ndim, batch_ndim, layout, f"{prefix}{n}")
            terms.append(" ".join(factors))
            replicated += [f for f in needs if f not in replicated]
        sides.append(", ".join(terms))
    # `g` appears only inside the compound factor; `h` also alone (every operator has KV heads).
    sizes = {"g": layout.group} if layout.group > 1 else {}
    # `replicated` is in order of first appearance: Shardy wants the special factors sorted.
    return " -> ".join(sides), tuple(replicated), sizes


def _query_heads(layout: Layout, operands):
    first = layout.operands.index(QUERY_HEADS)
    return operands[first].shape[_batch_ndim(layout, operands) + layout.rank]


def _spec(kind, ndim, batch_ndim, layout: Layout, batch_axes, head_axes):
    """The partition spec of one operand or result: batch and heads as chosen, the rest replicated."""
    if kind in (QUERY_HEADS, KV_HEADS):
        spec = list(batch_axes) + [None] * layout.rank + [head_axes]
        return P(*spec, *([None] * (ndim - len(spec))))
    if kind == HEADS_FIRST:
        return P(head_axes, *([None] * (ndim - 1)))
    return P(*([None] * ndim))


def _mesh_size(mesh, axes):
    if axes is None:
        return 1
    return math.prod(mesh.shape[a] for a in ((axes,) if isinstance(axes, str) else axes))


def _choose_shardings(layout: Layout, mesh, arg_shapes, result_shapes):
    """Batch and head shardings read off the first query-heads operand; everything else replicated.
    Head sharding is kept only when it splits the KV heads evenly (whole GQA groups per shard)."""
    batch_ndim = _batch_ndim(layout, arg_shapes)
    first = arg_shapes[layout.operands.index(QUERY_HEADS)]
    batch_axes, head_axes = (None,) * batch_ndim, None
    if isinstance(first.sharding, NamedSharding):
        spec = tuple(first.sharding.spec) + (None,) * first.ndim
        batch_axes = spec[:batch_ndim]
        head_axes = spec[batch_ndim + layout.rank]
        heads_kv = _query_heads(layout, arg_shapes) // layout.group
        if heads_kv % _mesh_size(mesh, head_axes):
            head_axes = None

    def shardings(kinds, shapes):
        return tuple(NamedSharding(mesh, _spec(kind, s.ndim, batch_ndim, layout, batch_axes, head_axes))
                     for kind, s in zip(kinds, shapes))

    return shardings(layout.operands, arg_shapes), shardings(layout.results, result_shapes)


def _partitioned_call(per_shard, layout: Layout, operands):
    operator = custom_partitioning(per_shard)
    single = len(layout.results) == 1

    def as_tuple(result_shape):
        return (result_shape,) if single else tuple(result_shape)

    def unwrap(shardings):
        return shardings[0] if single else shardings

    def partition(mesh, arg_shapes, result_shape):
        arg_shardings, result_shardings = _choose_shardings(layout, mesh, arg_shapes, as_tuple(result_shape))
        return mesh, per_shard, unwrap(result_shardings), arg_shardings

    def infer_sharding_from_operands(mesh, arg_shapes, result_shape):
        return unwrap(_choose_shardings(layout, mesh, arg_shapes, as_tuple(result_shape))[1])

    results = jax.eval_shape(per_shard, *operands)
    rule, replicated, sizes = _sharding_rule(layout, operands, (results,) if single else results)
    operator.def_partition(partition=partition, infer_sharding_from_operands=infer_sharding_from_operands,
                           sharding_rule=rule, need_replication_factors=replicated, **sizes)
    return operator(*operands)
