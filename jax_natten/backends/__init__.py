"""Backends and the one place that chooses between them.

A backend is an object with a `name`, an `unsupported(request)` method that returns why it
cannot run a call (or None), and the operators `attention`, `qk` and `av`. `BACKENDS` lists
them from most to least preferred; `backend=None` takes the first that can run, except the
backends marked `explicit_only` (the CUDA kernels in the host emulation, for tests), which run
only when named.
"""

from __future__ import annotations

import dataclasses
import logging

import jax

from jax_natten import cuda
from jax_natten.backends import blocked, reference
from jax_natten.backends.fused import FusedBackend
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
    # (major, minor) of the CUDA device that runs the call; None on other platforms.
    compute_capability: tuple[int, int] | None = None


def make_request(operator, dtype, spatial_shape, heads, heads_kv, head_dim, head_dim_v, nbhd: Neighborhood,
                 has_rpb=False, has_extra_kv=False) -> Request:
    """The request of a call on JAX's default device."""
    platform = default_platform()
    capability = cuda.device_capability() if platform == "gpu" else None
    return Request(operator, platform, dtype, tuple(spatial_shape), heads, heads_kv, head_dim, head_dim_v, nbhd,
                   has_rpb, has_extra_kv, capability)


class ReferenceBackend:
    """Pure JAX (jnp/lax): every platform, every dtype, everything in SPEC."""

    name = "reference"

    def unsupported(self, request: Request):
        return None

    @staticmethod
    def attention(query, key, value, nbhd, scale, rpb=None, additional_keys=None, additional_values=None,
                  deterministic=False):  # no atomics here: always deterministic
        return reference.attention(query, key, value, nbhd, scale, rpb, additional_keys, additional_values)

    qk = staticmethod(reference.qk)
    av = staticmethod(reference.av)


def _blocked_plan(request: Request):
    return blocked.plan(request.spatial_shape, request.nbhd, request.heads // request.heads_kv)


class BlockedBackend:
    """Pure JAX, fused: dense tile matmuls with an online softmax (`blocked.py`)."""

    name = "blocked"

    def unsupported(self, request: Request):
        if request.operator != "attention":
            return "it computes fused attention only (qk and av run elsewhere)"
        return None

    def passed_over(self, request: Request):
        """Why `backend=None` prefers the next backend although this one can run (or None)."""
        rate = _blocked_plan(request).estimated_rate()
        if rate < blocked.MIN_RATE:
            return (f"estimated rate {rate:.3f} < {blocked.MIN_RATE} (tile efficiency x rows / (rows + "
                    f"{blocked.MATMUL_HALF_ROWS})): window too small for its tiles, the reference's per-slot "
                    "gathers waste less")
        return None

    def describe(self, request: Request):
        """The tiling of the call and its tile efficiency."""
        return str(_blocked_plan(request))

    @staticmethod
    def attention(query, key, value, nbhd, scale, rpb=None, additional_keys=None, additional_values=None,
                  deterministic=False):  # no atomics here: always deterministic
        return blocked.attention(query, key, value, nbhd, scale, rpb, additional_keys, additional_values)


# The naive kernels are the paper's baseline: slower than the reference backend's XLA gathers
# on the GPU (benchmarks/results/), so `backend=None` never prefers them.
# 16-byte row loads: head dims must be multiples of 8.
_GEMM = UnfusedBackend("gemm", Operators(FfiShards("gemm")), head_dim_multiple=8)
# The same kernels run on the CPU by the host emulation (JAX_NATTEN_EMULATION=ON builds): slow,
# for testing the CUDA source without a GPU.
_GEMM_EMULATED = UnfusedBackend("gemm-emulated", Operators(FfiShards("gemm", "cpu")), head_dim_multiple=8,
                                explicit_only=True)
BACKENDS = (
    FusedBackend(_GEMM),
    _GEMM,
    BlockedBackend(),
    ReferenceBackend(),
    UnfusedBackend("naive", Operators(FfiShards("naive"))),
    FusedBackend(_GEMM_EMULATED, name="fused-emulated", explicit_only=True),
    _GEMM_EMULATED,
    UnfusedBackend("naive-emulated", Operators(FfiShards("naive", "cpu")), explicit_only=True),
)


def names():
    return tuple(b.name for b in BACKENDS)


def by_name(name):
    """The backend called `name`, or None."""
    return next((b for b in BACKENDS if b.name == name), None)


def default_platform():
    return jax.default_backend()


def automatic_reason(candidate, request: Request):
    """Why `backend=None` does not take `candidate`: it runs only when named (and then also why it
    could not run when named), it cannot run, or it runs but slower."""
    reason = candidate.unsupported(request)
    if getattr(candidate, "explicit_only", False):
        named = f"runs only when named (backend={candidate.name!r})"
        return named if reason is None else f"{named}, and named cannot run: {reason}"
    if reason is None and hasattr(candidate, "passed_over"):
        reason = candidate.passed_over(request)
    return reason


def choose(request: Request, backend: str | None = None):
    """The backend that runs `request`: the named one (or an error saying why it cannot), or the
    most preferred one that can."""
    if backend is not None:
        named = by_name(backend) if isinstance(backend, str) else None
        if named is None:
            raise ValueError(f"backend={backend!r}: unknown backend; choose one of {names()} or None.")
        reason = named.unsupported(request)
        if reason is not None:
            raise NotImplementedError(f"backend={backend!r} cannot run this {request.operator} call: {reason}")
        return named
    for candidate in BACKENDS:
        reason = automatic_reason(candidate, request)
        if reason is None:
            return candidate
        logger.debug("jax_natten: backend %r skipped for %s: %s", candidate.name, request.operator, reason)
    raise AssertionError("the reference backend runs every request")


@dataclasses.dataclass(frozen=True)
class Explanation:
    """Which backend `backend=None` picks for a call, why each other one was passed over, and
    notes on how the chosen code runs (PTX JIT-compiled for a GPU the extension has no SASS for),
    and what the backends that can run (if only when named) say of their work (the blocked
    backend's tiles, the fused backend's tiles and which backward its gradient runs)."""

    chosen: str
    reasons: dict
    notes: tuple = ()  # how the chosen code runs (e.g. PTX JIT-compiled for this GPU)
    backend_notes: dict = dataclasses.field(default_factory=dict)

    def __str__(self):
        lines = [f"chosen backend: {self.chosen}"]
        for name, reason in self.reasons.items():
            lines.append(f"  {name}: {'can run' if reason is None else 'cannot run: ' + reason}")
            if name in self.backend_notes:
                lines.append(f"    note: {self.backend_notes[name]}")
        lines.extend(f"note: {note}" for note in self.notes)
        return "\n".join(lines)


def explain_request(request: Request) -> Explanation:
    reasons = {b.name: automatic_reason(b, request) for b in BACKENDS}
    jit_note = cuda.jit_note(request.platform)
    # Also the explicit-only backends that would run when named: the emulated fused backend says
    # which backward its gradient takes on the CPU as the fused one does on the GPU.
    backend_notes = {b.name: b.describe(request) for b in BACKENDS
                     if hasattr(b, "describe") and b.unsupported(request) is None}
    return Explanation(choose(request).name, reasons, () if jit_note is None else (jit_note,), backend_notes)
