"""Argument and input validation (SPEC.md, "Bad input").

Every check runs on shapes, dtypes and Python values only, before anything is traced, and
raises `ValueError` naming the argument, the value and the rule.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import operator

import numpy as np

from jax_natten.neighborhood import Neighborhood

FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64")


def _per_axis(name, value, rank, convert):
    if isinstance(value, (tuple, list)):
        if len(value) != rank:
            raise ValueError(
                f"{name}={value!r} has {len(value)} entries; it needs one per spatial axis ({rank})."
            )
        return tuple(convert(name, v, value) for v in value)
    return (convert(name, value, value),) * rank


def _as_int(name, v, whole):
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Integral):
        raise ValueError(f"{name}={whole!r}: every entry must be an integer, got {v!r}.")
    return operator.index(v)


def _as_bool(name, v, whole):
    if not isinstance(v, (bool, np.bool_)):
        raise ValueError(f"{name}={whole!r}: every entry must be a bool, got {v!r}.")
    return bool(v)


def neighborhood(spatial_shape, kernel_size, stride=1, dilation=1, is_causal=False, input_name="query") -> Neighborhood:
    """Normalizes per-axis arguments to a `Neighborhood` and checks them against the size of the
    input `input_name`."""
    rank = len(spatial_shape)
    ks = _per_axis("kernel_size", kernel_size, rank, _as_int)
    st = _per_axis("stride", stride, rank, _as_int)
    dil = _per_axis("dilation", dilation, rank, _as_int)
    causal = _per_axis("is_causal", is_causal, rank, _as_bool)
    for axis, (k, s, d, length) in enumerate(zip(ks, st, dil, spatial_shape)):
        if k < 2:
            raise ValueError(f"kernel_size={kernel_size!r}: axis {axis} has {k}; it must be >= 2.")
        if s < 1:
            raise ValueError(f"stride={stride!r}: axis {axis} has {s}; it must be >= 1.")
        if d < 1:
            raise ValueError(f"dilation={dilation!r}: axis {axis} has {d}; it must be >= 1.")
        if s > k:
            raise ValueError(
                f"stride={stride!r}: axis {axis} has stride {s} > kernel_size {k}; "
                "stride must not exceed kernel_size."
            )
        if k * d > length:
            raise ValueError(
                f"kernel_size={kernel_size!r}, dilation={dilation!r}: axis {axis} has "
                f"kernel_size * dilation = {k * d} > input length {length} of {input_name}; it must fit the input."
            )
    return Neighborhood(ks, st, dil, causal)


def positive_int(name, value):
    """An integer >= 1 (Python or NumPy, not a bool)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name}={value!r}: it must be a positive integer.")
    return operator.index(value)


def real_number(name, value, allow_none=False):
    """A finite real number (a Python or NumPy float or int, not a bool), or None if allowed."""
    if value is None and allow_none:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{name}={value!r}: it must be a finite real number{' or None' if allow_none else ''}.")
    return float(value)


def array(name, x):
    """Something with a shape and a dtype (an array, a tracer, a ShapeDtypeStruct) and no empty axis."""
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        raise TypeError(f"{name} is a {type(x).__name__}; it must be an array (or a jax.ShapeDtypeStruct).")
    if 0 in tuple(x.shape):
        raise ValueError(f"{name} has shape {tuple(x.shape)}; empty axes (size 0) are not supported.")


def float_dtype(name, x):
    dtype = np.dtype(x.dtype)
    if dtype.name not in FLOAT_DTYPES:
        raise ValueError(f"{name} has dtype {dtype.name}; supported dtypes are {', '.join(FLOAT_DTYPES)}.")
    return dtype


def spatial_rank(name, x, rank=None):
    """Spatial rank of a `[batch, *spatial, heads, dim]` array (rank checked if given)."""
    ndim = len(x.shape)
    if rank is None:
        if ndim not in (4, 5, 6):
            raise ValueError(
                f"{name} has shape {tuple(x.shape)} (ndim {ndim}); it must be "
                "[batch, *spatial, heads, head_dim] with 1 to 3 spatial axes (ndim 4 to 6)."
            )
        return ndim - 3
    if ndim != rank + 3:
        raise ValueError(
            f"{name} has shape {tuple(x.shape)} (ndim {ndim}); a {rank}-D operator needs "
            f"[batch, *spatial, heads, head_dim] with ndim {rank + 3}."
        )
    return rank


def same_dtype(ref_name, ref, name, x):
    if x.dtype != ref.dtype:
        raise ValueError(f"{name} has dtype {np.dtype(x.dtype).name}, {ref_name} has "
                         f"{np.dtype(ref.dtype).name}; they must be equal.")


def same_tokens(ref_name, ref, name, x):
    """Same rank, batch and spatial shape as `ref`."""
    if len(x.shape) != len(ref.shape) or x.shape[:-2] != ref.shape[:-2]:
        raise ValueError(
            f"{name} has shape {tuple(x.shape)}, {ref_name} has {tuple(ref.shape)}; batch and "
            "spatial axes must be equal."
        )


def heads_divide(query_name, heads, kv_name, heads_kv):
    if heads_kv < 1 or heads % heads_kv:
        raise ValueError(
            f"{query_name} has {heads} heads and {kv_name} has {heads_kv}; the query heads must "
            "be a multiple of the key/value heads (GQA/MQA)."
        )


@dataclasses.dataclass(frozen=True)
class AttentionInputs:
    """What the checks learnt about one `neighborhood_attention` call."""

    nbhd: Neighborhood
    scale: float
    dtype: np.dtype
    spatial_shape: tuple[int, ...]
    heads: int
    heads_kv: int
    head_dim: int
    head_dim_v: int
    has_rpb: bool
    has_extra_kv: bool


def flag(name: str, value):
    """A bool argument (Python or NumPy)."""
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name}={value!r}: it must be a bool.")


def attention_inputs(query, key, value, kernel_size, stride, dilation, is_causal, scale,
                     additional_keys, additional_values, rpb, return_lse, rank=None) -> AttentionInputs:
    for name, x in (("query", query), ("key", key), ("value", value), ("additional_keys", additional_keys),
                    ("additional_values", additional_values), ("rpb", rpb)):
        if x is not None or name in ("query", "key", "value"):
            array(name, x)
    rank = spatial_rank("query", query, rank)
    dtype = float_dtype("query", query)
    for name, x in (("key", key), ("value", value)):
        same_tokens("query", query, name, x)
        same_dtype("query", query, name, x)
    heads, head_dim = query.shape[-2:]
    heads_kv, head_dim_v = value.shape[-2:]
    if key.shape[-2] != heads_kv:
        raise ValueError(f"key has {key.shape[-2]} heads and value has {heads_kv}; they must be equal.")
    heads_divide("query", heads, "key", heads_kv)
    if key.shape[-1] != head_dim:
        raise ValueError(f"key has head_dim {key.shape[-1]}, query has {head_dim}; they must be equal.")
    nbhd = neighborhood(query.shape[1:-2], kernel_size, stride, dilation, is_causal)
    if (additional_keys is None) != (additional_values is None):
        raise ValueError("additional_keys and additional_values must be given together (both or neither).")
    if additional_keys is not None:
        batch = query.shape[0]
        for name, x, dim in (("additional_keys", additional_keys, head_dim),
                             ("additional_values", additional_values, head_dim_v)):
            same_dtype("query", query, name, x)
            want = (batch, None, heads_kv, dim)
            if len(x.shape) != 4 or any(w is not None and w != s for w, s in zip(want, x.shape)):
                raise ValueError(
                    f"{name} has shape {tuple(x.shape)}; it must be [batch={batch}, n_extra, "
                    f"heads_kv={heads_kv}, {dim}]."
                )
        if additional_keys.shape[1] != additional_values.shape[1]:
            raise ValueError(
                f"additional_keys has {additional_keys.shape[1]} tokens and additional_values "
                f"{additional_values.shape[1]}; they must be equal."
            )
    if rpb is not None:
        relative_position_bias(rpb, heads, nbhd, dtype)
    scale = real_number("scale", scale, allow_none=True)
    if scale is None:
        scale = head_dim ** -0.5
    flag("return_lse", return_lse)
    return AttentionInputs(nbhd, float(scale), dtype, tuple(query.shape[1:-2]), heads, heads_kv, head_dim,
                           head_dim_v, rpb is not None, additional_keys is not None)


def relative_position_bias(rpb, heads, nbhd, dtype):
    want = (heads, *(2 * k - 1 for k in nbhd.kernel_size))
    if tuple(rpb.shape) != want:
        raise ValueError(
            f"rpb has shape {tuple(rpb.shape)}; it must be [query heads, 2*kernel_size-1 per axis] = {want}."
        )
    if rpb.dtype != dtype:
        raise ValueError(f"rpb has dtype {np.dtype(rpb.dtype).name}; it must match the inputs ({dtype.name}).")


def qk_inputs(query, key, kernel_size, stride, dilation, is_causal, rpb, rank) -> Neighborhood:
    for name, x in (("query", query), ("key", key), ("rpb", rpb)):
        if x is not None or name != "rpb":
            array(name, x)
    spatial_rank("query", query, rank)
    dtype = float_dtype("query", query)
    same_tokens("query", query, "key", key)
    same_dtype("query", query, "key", key)
    heads_divide("query", query.shape[-2], "key", key.shape[-2])
    if key.shape[-1] != query.shape[-1]:
        raise ValueError(f"key has head_dim {key.shape[-1]}, query has {query.shape[-1]}; they must be equal.")
    nbhd = neighborhood(query.shape[1:-2], kernel_size, stride, dilation, is_causal)
    if rpb is not None:
        relative_position_bias(rpb, query.shape[-2], nbhd, dtype)
    return nbhd


def av_inputs(attn, value, kernel_size, stride, dilation, is_causal, rank) -> Neighborhood:
    array("attn", attn)
    array("value", value)
    spatial_rank("attn", attn, rank)
    float_dtype("attn", attn)
    same_tokens("attn", attn, "value", value)
    same_dtype("attn", attn, "value", value)
    heads_divide("attn", attn.shape[-2], "value", value.shape[-2])
    nbhd = neighborhood(attn.shape[1:-2], kernel_size, stride, dilation, is_causal, "attn")
    if attn.shape[-1] != nbhd.window_size:
        raise ValueError(
            f"attn has {attn.shape[-1]} weights per query; kernel_size={nbhd.kernel_size} needs "
            f"prod(kernel_size) = {nbhd.window_size}."
        )
    return nbhd
