"""Backends and the one place that chooses between them.

A backend is an object with a `name`, an `unsupported(request)` method that returns why it
cannot run a call (or None), and the operators `attention`, `qk` and `av`. `BACKENDS` lists
them from most to least preferred; `backend=None` takes the first that can run.
"""

from __future__ import annotations

import dataclasses
import logging
import re

import jax

from jax_natten.backends import reference
from jax_natten.backends.unfused import UnfusedBackend
from jax_natten.neighborhood import Neighborhood
from jax_natten.primitives import FfiShards, Operators

logger = logging.getLogger("jax_natten")

OPERATORS = ("attention", "qk", "av")


@dataclasses.dataclass(frozen=True)
class Request:
    """What a backend needs to know to say whether it can run a call."""

    operator: str
    platform: str
    dtype: str
    spatial_shape: tuple[int, ...]
    heads: int
    heads_kv: int
    head_dim: int
    head_dim_v: int
    nbhd: Neighborhood
    has_rpb: bool = False
    has_extra_kv: bool = False
    # (major, minor) of the device that runs the call, on CUDA; None elsewhere.
    compute_capability: tuple[int, int] | None = None


def make_request(operator, dtype, spatial_shape, heads, heads_kv, head_dim, head_dim_v, nbhd: Neighborhood,
                 has_rpb=False, has_extra_kv=False) -> Request:
    """The request of a call on JAX's default device."""
    return Request(operator, default_platform(), dtype, tuple(spatial_shape), heads, heads_kv, head_dim,
                   head_dim_v, nbhd, has_rpb, has_extra_kv, default_compute_capability())


class ReferenceBackend:
    """Pure JAX (jnp/lax): every platform, every dtype, everything in SPEC."""

    name = "reference"

    def unsupported(self, request: Request):
        return None

    attention = staticmethod(reference.attention)
    qk = staticmethod(reference.qk)
    av = staticmethod(reference.av)


# The naive kernels are the paper's baseline: slower than the reference backend's XLA gathers
# on the GPU (benchmarks/results/), so `backend=None` never prefers them.
BACKENDS = (
    # 16-byte row loads: head dims must be multiples of 8.
    UnfusedBackend("gemm", Operators(FfiShards("gemm")), head_dim_multiple=8),
    ReferenceBackend(),
    UnfusedBackend("naive", Operators(FfiShards("naive"))),
)


def names():
    return tuple(b.name for b in BACKENDS)


def default_platform():
    return jax.default_backend()


def default_compute_capability():
    """`(major, minor)` of JAX's default device if it is a CUDA GPU, else None."""
    capability = getattr(jax.devices()[0], "compute_capability", None)
    if capability is None or not re.fullmatch(r"\d+\.\d+", str(capability)):
        return None
    major, minor = str(capability).split(".")
    return int(major), int(minor)


def choose(request: Request, backend: str | None = None):
    """The backend that runs `request`: the named one (or an error saying why it cannot), or the
    most preferred one that can."""
    if backend is not None:
        by_name = {b.name: b for b in BACKENDS}
        if backend not in by_name:
            raise ValueError(f"backend={backend!r}: unknown backend; choose one of {names()} or None.")
        reason = by_name[backend].unsupported(request)
        if reason is not None:
            raise NotImplementedError(f"backend={backend!r} cannot run this {request.operator} call: {reason}")
        return by_name[backend]
    for candidate in BACKENDS:
        reason = candidate.unsupported(request)
        if reason is None:
            return candidate
        logger.debug("jax_natten: backend %r skipped for %s: %s", candidate.name, request.operator, reason)
    raise AssertionError("the reference backend runs every request")


@dataclasses.dataclass(frozen=True)
class Explanation:
    """Which backend `backend=None` picks for a call, and why each other one was passed over."""

    chosen: str
    reasons: dict

    def __str__(self):
        lines = [f"chosen backend: {self.chosen}"]
        for name, reason in self.reasons.items():
            lines.append(f"  {name}: {'can run' if reason is None else 'cannot run: ' + reason}")
        return "\n".join(lines)


def explain_request(request: Request) -> Explanation:
    reasons = {b.name: b.unsupported(request) for b in BACKENDS}
    return Explanation(choose(request).name, reasons)
