"""The CUDA extension `jax_natten._cuda`: imported once, its FFI targets registered with XLA.

A CPU-only install has no extension; everything here then reports why CUDA cannot run instead
of failing at import. `register_targets` also takes other platforms' handlers (e.g. "cpu").
"""

from __future__ import annotations

import importlib

import jax

TARGET_PREFIX = "jax_natten_"

# {XLA platform: names of the FFI targets registered for it}
_registered: dict[str, set[str]] = {}


def register_targets(registrations: dict, platform: str):
    """Registers `{name: handler capsule}` as the targets `TARGET_PREFIX + name` on `platform`."""
    for name, capsule in registrations.items():
        jax.ffi.register_ffi_target(TARGET_PREFIX + name, capsule, platform=platform)
        _registered.setdefault(platform, set()).add(TARGET_PREFIX + name)


try:
    _cuda = importlib.import_module("jax_natten._cuda")
except ImportError as error:
    _cuda = None
    _import_error = error
else:
    register_targets(_cuda.registrations(), "CUDA")


def target_names(platform: str = "CUDA") -> tuple[str, ...]:
    """The FFI targets registered for `platform` (for CUDA: empty without the extension)."""
    return tuple(sorted(_registered.get(platform, ())))


def unavailable_reason(platform: str | None = None) -> str | None:
    """Why the CUDA kernels cannot run on `platform` (default: JAX's default backend), or None."""
    if _cuda is None:
        return (f"the CUDA extension jax_natten._cuda is not installed ({_import_error}); "
                "install from source on a machine with nvcc")
    platform = platform or jax.default_backend()
    if platform != "gpu":
        return f"JAX runs on {platform!r}, not on a CUDA GPU"
    return None
