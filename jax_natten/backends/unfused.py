"""Unfused kernel backends ("naive", "gemm", and "naive-emulated", "gemm-emulated": the same
kernels in the host emulation): attention as PN -> softmax in XLA -> NN over the operators of
`primitives.Operators`, each differentiable through a `jax.custom_vjp` built from the same three
kernels:

  logits = scale * PN(q, k) + rpb:  dq = scale * NN(dlogits, k),  dk = scale * IN(dlogits, q),
                                    drpb = the sum of dlogits over the slots that read each entry;
  out = NN(weights, v):             dweights = PN(dout, v),  dv = IN(weights, dout).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jax_natten import cuda
from jax_natten.backends import extra_kv, reference
from jax_natten.neighborhood import Neighborhood, token_slot_tables
from jax_natten.primitives import Operators

CUDA_DTYPES = ("float32", "float16", "bfloat16")


def needed_instances(implementation: str, operator: str, dtype: str) -> tuple[str, ...]:
    """The kernel instantiations (`cuda.unfused_instances`' names) that `operator` and its gradient
    may call on `dtype` tensors: PN, NN and IN with float32 attention weights (attention's logits
    and probabilities), and for qk/av also with weights in the tensors' dtype."""
    pairs = {"float32"} if dtype == "float32" else {f"{dtype}_f32w"} | ({dtype} if operator != "attention" else set())
    return tuple(f"{implementation}_{op}_{pair}" for op in ("pn", "nn", "in") for pair in sorted(pairs))


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2, 3))
def _pn(kernels: Operators, nbhd: Neighborhood, scale, out_dtype, query, key, rpb):
    return kernels.pn(query, key, rpb, nbhd, scale, -np.inf, out_dtype)


def _pn_fwd(kernels, nbhd, scale, out_dtype, query, key, rpb):
    return _pn(kernels, nbhd, scale, out_dtype, query, key, rpb), (query, key, rpb)


def _pn_bwd(kernels, nbhd, scale, out_dtype, residuals, d_logits):
    query, key, rpb = residuals
    d_query = kernels.nn(d_logits, key, nbhd, scale)
    d_key = kernels.inverse(d_logits, query, nbhd, key.shape[-2], scale)
    d_rpb = None if rpb is None else _rpb_gradient(d_logits, nbhd, rpb)
    return d_query, d_key, d_rpb


_pn.defvjp(_pn_fwd, _pn_bwd)


def _rpb_gradient(d_logits, nbhd: Neighborhood, rpb):
    """Each bias entry's gradient: the sum of the logit gradients of the slots that read it."""
    heads, window = d_logits.shape[-2:]
    # Computed in the traced backward pass from the window rule, not baked in as constants.
    _, valid, bias_index = token_slot_tables(d_logits.shape[1:-2], nbhd, xp=jnp)
    d = d_logits.reshape(d_logits.shape[0], -1, heads, window).astype(jnp.float32)
    d = jnp.where(valid[None, :, None, :], d, 0).sum(0)
    d = jnp.moveaxis(d, 1, 0).reshape(heads, -1)
    table = jnp.zeros((heads, rpb[0].size), jnp.float32).at[:, bias_index.reshape(-1)].add(d)
    return table.reshape(rpb.shape).astype(rpb.dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _nn(kernels: Operators, nbhd: Neighborhood, weights, value):
    return kernels.nn(weights, value, nbhd, 1.0)


def _nn_fwd(kernels, nbhd, weights, value):
    return _nn(kernels, nbhd, weights, value), (weights, value)


def _nn_bwd(kernels, nbhd, residuals, d_out):
    weights, value = residuals
    d_weights = kernels.pn(d_out, value, None, nbhd, 1.0, 0.0, weights.dtype)
    d_value = kernels.inverse(weights, d_out, nbhd, value.shape[-2], 1.0)
    return d_weights, d_value


_nn.defvjp(_nn_fwd, _nn_bwd)


class UnfusedBackend:
    """PN, NN and IN as kernels (`kernels.shards`); softmax, LSE and the additional tokens in XLA."""

    def __init__(self, name: str, kernels: Operators, head_dim_multiple: int = 1, explicit_only: bool = False):
        self.name = name
        self.kernels = kernels
        self.head_dim_multiple = head_dim_multiple
        self.explicit_only = explicit_only

    def unsupported(self, request):
        reason = self.kernels.shards.unavailable_reason(request.platform, request.compute_capability)
        if reason is not None:
            return reason
        if request.dtype not in CUDA_DTYPES:
            return f"dtype {request.dtype}: the CUDA kernels take {', '.join(CUDA_DTYPES)}"
        built = cuda.unfused_instances(self.kernels.shards.platform)
        missing = [name for name in needed_instances(self.kernels.shards.variant, request.operator, request.dtype)
                   if name not in built]
        if missing:
            return (f"this build lacks the kernel instantiations {', '.join(missing)} (JAX_NATTEN_CUDA_UNFUSED=minimal "
                    "builds one dtype pair per operator; rebuild with the default, all)")
        if request.head_dim % self.head_dim_multiple or request.head_dim_v % self.head_dim_multiple:
            return (f"head_dim {request.head_dim} / head_dim_v {request.head_dim_v}: the {self.name} kernels "
                    f"need multiples of {self.head_dim_multiple}")
        return None

    def qk(self, query, key, nbhd, rpb=None):
        return _pn(self.kernels, nbhd, 1.0, query.dtype, query, key, rpb)

    def av(self, attn, value, nbhd):
        return _nn(self.kernels, nbhd, attn, value)

    def attention(self, query, key, value, nbhd, scale, rpb=None, additional_keys=None, additional_values=None,
                  deterministic=False):  # no atomics here: always deterministic
        logits = _pn(self.kernels, nbhd, scale, jnp.dtype(jnp.float32), query, key, rpb)
        if additional_keys is not None:
            extra = extra_kv.extra_logits(query, additional_keys, scale).astype(jnp.float32)
            logits = jnp.concatenate([logits, extra.reshape(query.shape[:-1] + extra.shape[-1:])], axis=-1)
        lse, probs = reference.softmax_with_lse(logits)
        window = nbhd.window_size
        out = _nn(self.kernels, nbhd, probs[..., :window], value)
        if additional_values is not None:
            extra_probs = extra_kv.split_heads(probs[..., window:], additional_values.shape[-2])
            extra_out = extra_kv.extra_sum(extra_probs, additional_values.astype(jnp.float32))
            out = (out.astype(jnp.float32) + extra_out.reshape(out.shape)).astype(value.dtype)
        return out, lse
