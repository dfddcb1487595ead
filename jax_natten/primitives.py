"""The kernel operators as JAX operations, each in one place: what it computes, its abstract
result, its FFI call and its operand layout, which gives it its vmap and sharding rules. PN, NN
and IN: contracts in `cuda/include/jax_natten/params.h`, handlers in cuda/ffi/unfused.cu; the
fused forward (q, k, v -> out, lse): contract in
`cuda/include/jax_natten/fused/params.h`, handler in `cuda/include/jax_natten/fused_ffi.h`.

Composition: `Operators` wires each operator through `partitioned` with its layout, over a
per-shard implementation `shards` whose methods `pn`, `nn`, `inverse` and `fused_forward` take one
shard's arrays (any number of leading batch axes). `FfiShards` is the implementation by FFI calls
of one kernel variant on one XLA platform: "CUDA" (the GPU kernels) or "cpu" (the same kernels'
source in the host emulation, registered under the same names). The tests add a pure-JAX one
(tests/jnp_kernels.py) to run these rules on any device. A new operator adds its result, layout,
FFI call and `Operators` method here.

The rules (`partitioned`, the first part of this module). An FFI call is opaque to XLA: left
alone, a sharded `jit` gathers its inputs and runs it replicated. `partitioned` wraps a per-shard
implementation in `custom_partitioning` with a Shardy sharding rule (and the GSPMD callbacks for
jax configured without Shardy):

- batch axes (every axis before the spatial ones) keep their sharding;
- the head axis keeps its sharding; with GQA the query heads are the compound factor
  `(heads_kv group)`, so a head sharding that splits the KV heads splits the query heads the same
  way and each shard keeps whole groups;
- spatial axes, head_dim, window slots and bias tables need replication (a neighborhood reads
  across spatial shards; `jax_natten.parallel` splits a spatial axis with halo exchanges).

`custom_partitioning` has no batching rule; `custom_vmap` moves a vmapped axis in front as one
more batch axis (the per-shard implementations fold all leading axes into batch).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.custom_batching import custom_vmap
from jax.experimental.custom_partitioning import custom_partitioning
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from jax_natten import cuda, fused_plan
from jax_natten.manual_axes import vary_like
from jax_natten.neighborhood import Neighborhood

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
        # An FFI call's results are typed as varying over no shard_map axis (see manual_axes).
        return vary_like(_partitioned_call(per_shard, layout, operands), operands)

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


def fused_forward_result(query, value):
    """Fused forward: out `[*batch, *spatial, heads, dim_v]` in query's dtype, lse
    `[*batch, *spatial, heads]` in float32."""
    return (jax.ShapeDtypeStruct(query.shape[:-1] + value.shape[-1:], query.dtype),
            jax.ShapeDtypeStruct(query.shape[:-1], jnp.float32))


def fused_forward_layout(query, key, nbhd: Neighborhood, has_rpb: bool):
    operands = (QUERY_HEADS, KV_HEADS, KV_HEADS) + ((HEADS_FIRST,) if has_rpb else ())
    return Layout(nbhd.rank, query.shape[-2] // key.shape[-2], operands, (QUERY_HEADS, QUERY_HEADS))


def _neighborhood_attributes(nbhd: Neighborhood):
    return {
        "kernel_size": np.asarray(nbhd.kernel_size, np.int64),
        "stride": np.asarray(nbhd.stride, np.int64),
        "dilation": np.asarray(nbhd.dilation, np.int64),
        "is_causal": np.asarray(nbhd.is_causal, np.int64),
    }


FUSED_FORWARD_TARGET = f"{cuda.TARGET_PREFIX}na_fused_forward"
FUSED_BACKWARD_TARGET = f"{cuda.TARGET_PREFIX}na_fused_backward"


def fused_backward_result(query, key, value):
    """Fused backward: d_query in float32 (the kernel adds to it by atomics), d_key and d_value in
    the input dtype."""
    return (jax.ShapeDtypeStruct(query.shape, jnp.float32), jax.ShapeDtypeStruct(key.shape, key.dtype),
            jax.ShapeDtypeStruct(value.shape, value.dtype))


def fused_backward_layout(query, key, nbhd: Neighborhood):
    operands = (QUERY_HEADS, KV_HEADS, KV_HEADS, QUERY_HEADS, QUERY_HEADS, QUERY_HEADS)
    return Layout(nbhd.rank, query.shape[-2] // key.shape[-2], operands, (QUERY_HEADS, KV_HEADS, KV_HEADS))


@dataclasses.dataclass(frozen=True)
class FfiShards:
    """The operators on one shard by the FFI targets registered for the XLA `platform` ("CUDA" or
    "cpu"): PN, NN and IN of kernel `variant` (`jax_natten_na_{pn,nn,in}_{variant}`), and the
    fused forward (`jax_natten_na_fused_forward`, the same for every variant)."""

    variant: str
    platform: str = "CUDA"
    # The fused forward's (Q box, KV box), or None: `fused_plan.plan`'s (the tuning cache's choice
    # for the problem, else the most efficient). `python -m jax_natten tune` times candidates so.
    tiles: tuple | None = None

    def __post_init__(self):
        if self.platform not in ("CUDA", "cpu"):
            raise ValueError(f"platform={self.platform!r}: expected 'CUDA' or 'cpu'")

    def target(self, operator: str) -> str:
        return f"{cuda.TARGET_PREFIX}na_{operator}_{self.variant}"

    def unavailable_reason(self, jax_platform: str | None = None, capability=None) -> str | None:
        """Why these targets cannot run when JAX runs on `jax_platform` (on CUDA: on a GPU of
        compute capability `capability`), or None."""
        if self.platform == "cpu":
            return cuda.emulation_unavailable_reason(jax_platform)
        return cuda.unavailable_reason(jax_platform, capability)

    def _call(self, target, result, nbhd: Neighborhood, *args, **attributes):
        # "broadcast_all": a vmapped axis arrives as one more leading axis, which the handlers
        # count as batch (`Operators` gives a vmap rule of its own; this covers a bare call).
        call = jax.ffi.ffi_call(target, result, vmap_method="broadcast_all")
        return call(*args, **attributes, **_neighborhood_attributes(nbhd))

    def pn(self, query, key, rpb, nbhd: Neighborhood, scale, empty_value, out_dtype):
        if rpb is None:
            rpb = jnp.zeros((0,), query.dtype)
        return self._call(self.target("pn"), pn_result(query, nbhd, out_dtype), nbhd, query, key, rpb,
                          scale=np.float32(scale), empty_value=np.float32(empty_value))

    def nn(self, weights, value, nbhd: Neighborhood, scale):
        return self._call(self.target("nn"), nn_result(weights, value), nbhd, weights, value,
                          scale=np.float32(scale))

    def inverse(self, weights, values, nbhd: Neighborhood, heads_kv, scale):
        return self._call(self.target("in"), in_result(values, heads_kv), nbhd, weights, values,
                          scale=np.float32(scale))

    def tile_plan(self, query, key, value, nbhd: Neighborhood) -> fused_plan.FusedPlan:
        """The fused kernels' tile boxes for one shard's inputs: those fixed here, else the tuning
        cache's for the problem (its key has the GQA group), else the planner's (`fused_plan.plan`,
        which checks given ones). The forward and the backward take the same."""
        spatial = query.shape[-nbhd.rank - 2:-2]
        q_tile, kv_tile = (None, None) if self.tiles is None else self.tiles
        return fused_plan.plan(spatial, nbhd, query.shape[-1], value.shape[-1], dtype=jnp.dtype(query.dtype).name,
                               group=query.shape[-2] // key.shape[-2], q_tile=q_tile, kv_tile=kv_tile,
                               platform=self.platform)

    def fused_forward(self, query, key, value, rpb, nbhd: Neighborhood, scale):
        tiles = self.tile_plan(query, key, value, nbhd)
        if rpb is None:
            rpb = jnp.zeros((0,), query.dtype)
        return self._call(FUSED_FORWARD_TARGET, fused_forward_result(query, value), nbhd, query, key, value, rpb,
                          scale=np.float32(scale), q_tile=np.asarray(tiles.q_tile, np.int64),
                          kv_tile=np.asarray(tiles.kv_tile, np.int64))

    def fused_backward(self, query, key, value, d_out, lse, delta, nbhd: Neighborhood, scale, deterministic):
        # The forward's tile boxes (the backward's KV tiles have the Q tile's rows).
        tiles = self.tile_plan(query, key, value, nbhd)
        return self._call(FUSED_BACKWARD_TARGET, fused_backward_result(query, key, value), nbhd, query, key, value,
                          jnp.zeros((0,), query.dtype), d_out, lse, delta, scale=np.float32(scale),
                          q_tile=np.asarray(tiles.q_tile, np.int64), kv_tile=np.asarray(tiles.kv_tile, np.int64),
                          deterministic=np.bool_(deterministic))


def _partitioned_with_optional(per_shard, layout, operands, optional):
    """`per_shard(*operands, optional)` partitioned; `optional` (the bias table or None) is an
    operand only when given."""
    if optional is None:
        return partitioned(lambda *xs: per_shard(*xs, None), layout)(*operands)
    return partitioned(per_shard, layout)(*operands, optional)


@dataclasses.dataclass(frozen=True)
class Operators:
    """The kernel operators over any leading batch axes, partitioned over batch and heads, on `shards`."""

    shards: object

    def pn(self, query, key, rpb, nbhd: Neighborhood, scale, empty_value, out_dtype):
        """`scale * q.k (+ rpb)` per slot, `[*batch, *spatial, heads, window]` in `out_dtype`;
        `empty_value` in the empty slots of causal windows."""
        return _partitioned_with_optional(
            lambda q, k, b: self.shards.pn(q, k, b, nbhd, scale, empty_value, out_dtype),
            pn_layout(query, key, nbhd, rpb is not None), (query, key), rpb)

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

    def fused_forward(self, query, key, value, rpb, nbhd: Neighborhood, scale):
        """`(out, lse)` of neighborhood attention over the window only (no additional tokens),
        out in query's dtype, lse float32."""
        return _partitioned_with_optional(
            lambda q, k, v, b: self.shards.fused_forward(q, k, v, b, nbhd, scale),
            fused_forward_layout(query, key, nbhd, rpb is not None), (query, key, value), rpb)

    def fused_backward(self, query, key, value, d_out, lse, delta, nbhd: Neighborhood, scale, deterministic):
        """`(d_query float32, d_key, d_value)` of the window attention without bias, from the
        window's lse and delta = rowsum(d_out * out) - d_lse (float32). `deterministic`: d_query
        from a Q-tile kernel without atomics, the same bits run after run (else added by atomics)."""
        return partitioned(lambda *xs: self.shards.fused_backward(*xs, nbhd, scale, deterministic),
                           fused_backward_layout(query, key, nbhd))(query, key, value, d_out, lse, delta)
