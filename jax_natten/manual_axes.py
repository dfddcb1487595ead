"""`shard_map`'s varying manual axes (VMA) for operators whose results jax cannot type itself.

Inside `shard_map` (VMA checks on, the default), every value is typed with the mesh axes it
varies over. An FFI call's results and a `custom_vjp` backward's cotangents are not typed from
their inputs: an FFI call returns values typed as varying over nothing, and a backward whose
cotangent for a replicated input (an RPB under data parallelism) is computed from sharded values
varies where that input does not, which jax rejects. Two rules fix both:

- every public operator first casts its inputs to vary over the union of their axes
  (`varying_alike`); autodiff of the cast sums a replicated input's gradient over the shards;
- every FFI-backed operator casts its results to vary over its operands' union (`vary_like`).

Outside `shard_map` both are the identity.
"""

from __future__ import annotations

import jax
from jax import lax


def varying_axes(x) -> frozenset:
    """The manual mesh axes `x` varies over (empty outside `shard_map`)."""
    aval = jax.typeof(x)
    manual = getattr(aval, "manual_axis_type", None)
    return frozenset(manual.varying) if manual is not None else frozenset(getattr(aval, "vma", ()))


def _vary(x, axes: frozenset):
    missing = axes - varying_axes(x)
    return lax.pcast(x, tuple(sorted(missing)), to="varying") if missing else x


def varying_alike(*arrays):
    """`arrays` (None kept) each varying over the union of their manual axes."""
    union = frozenset().union(*(varying_axes(a) for a in arrays if a is not None))
    return tuple(None if a is None else _vary(a, union) for a in arrays)


def vary_like(results, operands):
    """`results` (a pytree) varying over the union of `operands`' manual axes."""
    union = frozenset().union(*(varying_axes(a) for a in operands if a is not None))
    return jax.tree.map(lambda r: _vary(r, union), results)
