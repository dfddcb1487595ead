"""The fused CUDA backend ("fused", and "fused-emulated": the same kernel in the host emulation on
the CPU): one kernel computes the window's softmax(q k^T + rpb) v and its LSE without writing the
scores (cuda/include/jax_natten/fused/). Additional KV tokens are attended in XLA and merged
exactly through the two LSEs, inside the same `jax.custom_vjp`:

  lse = logaddexp(lse_window, lse_extra),
  out = exp(lse_window - lse) out_window + exp(lse_extra - lse) out_extra.

The gradient is the fused backward kernel's (fused/backward.h: float16 / bfloat16, head-dim
classes up to 128, no bias) from the window's saved out and LSE, the merge's gradient through
jax.vjp; its dQ is added by atomics, or with `deterministic=True` computed by a Q-tile kernel
(fused/backward_dq.h) in a fixed order; other inputs take the gemm backend's (PN/NN/IN kernels; for "fused-emulated",
"gemm-emulated"), which recomputes the attention from the saved inputs.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name

from jax_natten import cuda, fused_plan
from jax_natten.backends import extra_kv
from jax_natten.backends.unfused import UnfusedBackend
from jax_natten.primitives import Operators

TF32_NOTE = "float32 on the tensor cores as split TF32 (3 TF32 MMAs per product): float32 accuracy"


def _merge_extra(out, lse, query, additional_keys, additional_values, scale):
    logits = extra_kv.extra_logits(query, additional_keys, scale).astype(jnp.float32)
    lse_extra = jax.nn.logsumexp(logits, axis=-1)
    probs = jnp.exp(logits - lse_extra[..., None])
    out_extra = extra_kv.extra_sum(probs, additional_values.astype(jnp.float32)).reshape(out.shape)
    lse_extra = lse_extra.reshape(lse.shape)
    merged = jnp.logaddexp(lse, lse_extra)
    out = jnp.exp(lse - merged)[..., None] * out.astype(jnp.float32) + jnp.exp(lse_extra - merged)[..., None] * out_extra
    return out.astype(query.dtype), merged


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2, 3))
def _attention(gemm, nbhd, scale, deterministic, query, key, value, rpb, additional_keys, additional_values):
    out, lse = gemm.kernels.fused_forward(query, key, value, rpb, nbhd, scale)
    if additional_keys is not None:
        out, lse = _merge_extra(out, lse, query, additional_keys, additional_values, scale)
    return checkpoint_name(out, "jax_natten_fused_out"), checkpoint_name(lse, "jax_natten_fused_lse")


def _attention_fwd(gemm, nbhd, scale, deterministic, *inputs):
    query, key, value, rpb, additional_keys, additional_values = inputs
    out_window, lse_window = gemm.kernels.fused_forward(query, key, value, rpb, nbhd, scale)
    out, lse = out_window, lse_window
    if additional_keys is not None:
        out, lse = _merge_extra(out, lse, query, additional_keys, additional_values, scale)
    residuals = tuple(None if x is None else checkpoint_name(x, "jax_natten_fused_residual") for x in inputs)
    window = (checkpoint_name(out_window, "jax_natten_fused_out"), checkpoint_name(lse_window, "jax_natten_fused_lse"))
    primal = (checkpoint_name(out, "jax_natten_fused_out"), checkpoint_name(lse, "jax_natten_fused_lse"))
    return primal, (residuals, window)


FUSED_BACKWARD_COVERS = "float16/bfloat16, head dim <= 128, no rpb"


def fused_backward_reason(dtype: str, head_dim: int, head_dim_v: int, has_rpb: bool) -> str | None:
    """Why the fused backward kernel (fused/backward.h: 16-bit, head-dim classes up to 128, no
    bias) does not take these inputs, or None: the one rule for the gradient and for `explain`."""
    why = []
    if dtype not in ("float16", "bfloat16"):
        why.append(f"dtype {dtype}")
    head_class = fused_plan.head_dim_class(head_dim, head_dim_v)
    if head_class is None or head_class > 128:
        why.append(f"head dim {max(head_dim, head_dim_v)}")
    if has_rpb:
        why.append("rpb")
    return ", ".join(why) or None


def fused_backward_runs(query, value, rpb) -> bool:
    """Whether the fused backward kernel takes these inputs; the others take the gemm operators' gradient."""
    return fused_backward_reason(jnp.dtype(query.dtype).name, query.shape[-1], value.shape[-1], rpb is not None) is None


def _attention_bwd(gemm, nbhd, scale, deterministic, residuals, cotangents):
    inputs, (out_window, lse_window) = residuals
    query, key, value, rpb, additional_keys, additional_values = inputs
    d_out, d_lse = cotangents
    d_lse = d_lse.astype(jnp.float32)
    if not fused_backward_runs(query, value, rpb):
        def unfused(query, key, value, rpb, additional_keys, additional_values):
            return gemm.attention(query, key, value, nbhd, scale, rpb, additional_keys, additional_values)

        _, vjp = jax.vjp(unfused, *inputs)
        return vjp((d_out, d_lse))
    d_extra = (None, None)
    d_query_extra = None
    if additional_keys is not None:
        # The merge's gradient reaches the window's out and lse (whose cotangent enters delta).
        _, merge_vjp = jax.vjp(lambda o, l, q, k, v: _merge_extra(o, l, q, k, v, scale),
                               out_window, lse_window, query, additional_keys, additional_values)
        d_out, d_lse, d_query_extra, *d_extra = merge_vjp((d_out, d_lse))
    delta = jnp.sum(d_out.astype(jnp.float32) * out_window.astype(jnp.float32), axis=-1) - d_lse
    d_query, d_key, d_value = gemm.kernels.fused_backward(query, key, value, d_out.astype(query.dtype), lse_window,
                                                          delta, nbhd, scale, deterministic)
    if d_query_extra is not None:
        d_query = d_query + d_query_extra.astype(jnp.float32)
    return (d_query.astype(query.dtype), d_key, d_value, None, *d_extra)


_attention.defvjp(_attention_fwd, _attention_bwd)


class FusedBackend:
    """The fused forward kernel of `gemm.kernels` (`primitives.Operators`) on the platform of its
    FFI targets (CUDA GPUs, or the CPU for the host emulation); gradients through `gemm` (an
    UnfusedBackend on the same targets)."""

    def __init__(self, gemm, name: str = "fused", explicit_only: bool = False):
        self.gemm = gemm
        self.name = name
        self.explicit_only = explicit_only

    def unsupported(self, request):
        if request.operator != "attention":
            return f"the fused kernel computes attention only, not {request.operator}"
        reason = self.gemm.kernels.shards.unavailable_reason(request.platform, request.compute_capability)
        if reason is not None:
            return reason
        if request.dtype not in fused_plan.DTYPES:
            return f"dtype {request.dtype}: the fused kernel takes {', '.join(fused_plan.DTYPES)}"
        if request.head_dim % 8 or request.head_dim_v % 8:
            return f"head_dim {request.head_dim} / head_dim_v {request.head_dim_v}: the fused kernel needs multiples of 8"
        head_class = fused_plan.head_dim_class(request.head_dim, request.head_dim_v)
        built = cuda.fused_head_dim_classes(self.gemm.kernels.shards.platform)
        if head_class is None or not any(c >= head_class for c in built):
            return (f"head_dim {request.head_dim} / head_dim_v {request.head_dim_v}: this build has the fused "
                    f"head-dim classes {built}")
        if request.has_rpb and (any(s != 1 for s in request.nbhd.stride) or request.nbhd.any_causal):
            return "rpb with stride > 1 or causal axes: NATTEN defines the bias for stride 1, non-causal only"
        return self.gemm.unsupported(request)

    def with_tiles(self, q_tile, kv_tile):
        """This backend with the fused forward's tile boxes fixed (the tuner's candidates)."""
        shards = dataclasses.replace(self.gemm.kernels.shards, tiles=(tuple(q_tile), tuple(kv_tile)))
        gemm = UnfusedBackend(self.gemm.name, Operators(shards), self.gemm.head_dim_multiple, self.gemm.explicit_only)
        return FusedBackend(gemm, self.name, self.explicit_only)

    def tiles(self, request):
        """The fused forward's plan for the request (`fused_plan.plan`: tuned or planned tiles)."""
        return fused_plan.plan(request.spatial_shape, request.nbhd, request.head_dim, request.head_dim_v,
                               heads=request.heads, dtype=request.dtype, group=request.heads // request.heads_kv,
                               platform=self.gemm.kernels.shards.platform)

    def backward(self, request):
        """Which backward the gradient of the request runs, and why."""
        why = fused_backward_reason(request.dtype, request.head_dim, request.head_dim_v, request.has_rpb)
        if why is None:
            return f"backward: the fused backward kernel (it covers {FUSED_BACKWARD_COVERS})"
        return (f"backward: {self.gemm.name} operators (PN/NN/IN), recomputing the attention from the inputs, "
                f"for {why} (the fused backward covers {FUSED_BACKWARD_COVERS})")

    def describe(self, request):
        p = self.tiles(request)
        tiles = f"Q tile {'x'.join(map(str, p.q_tile))}, KV tile {'x'.join(map(str, p.kv_tile))} ({p.source})"
        notes = (tiles, self.backward(request)) + ((TF32_NOTE,) if request.dtype == "float32" else ())
        return "; ".join(notes)

    def qk(self, query, key, nbhd, rpb=None):
        raise NotImplementedError("the fused backend computes attention only; qk runs on an unfused backend")

    def av(self, attn, value, nbhd):
        raise NotImplementedError("the fused backend computes attention only; av runs on an unfused backend")

    def attention(self, query, key, value, nbhd, scale, rpb=None, additional_keys=None, additional_values=None,
                  deterministic=False):
        """`deterministic`: the fused backward kernel's dQ without atomics (a Q-tile kernel that
        recomputes the scores), so that gradients keep their bits run after run."""
        return _attention(self.gemm, nbhd, scale, deterministic, query, key, value, rpb, additional_keys,
                          additional_values)
