"""The CUDA extension `jax_natten._cuda`: imported once, its FFI targets registered with XLA.

A CPU-only install has no extension; everything here then reports why CUDA cannot run instead
of failing at import.
"""

from __future__ import annotations

import importlib

import jax

TARGET_PREFIX = "jax_natten_"

try:
    _cuda = importlib.import_module("jax_natten._cuda")
except ImportError as error:
    _cuda = None
    _import_error = error
else:
    for _name, _capsule in _cuda.registrations().items():
        jax.ffi.register_ffi_target(TARGET_PREFIX + _name, _capsule, platform="CUDA")


def extension():
    """The imported extension module, or None."""
    return _cuda


def target_names() -> tuple[str, ...]:
    """The registered FFI targets (empty without the extension)."""
    if _cuda is None:
        return ()
    return tuple(sorted(TARGET_PREFIX + name for name in _cuda.registrations()))


def unavailable_reason(platform: str | None = None) -> str | None:
    """Why the CUDA kernels cannot run on `platform` (default: JAX's default backend), or None."""
    if _cuda is None:
        return (f"the CUDA extension jax_natten._cuda is not installed ({_import_error}); "
                "install from source on a machine with nvcc")
    platform = platform or jax.default_backend()
    if platform != "gpu":
        return f"JAX runs on {platform!r}, not on a CUDA GPU"
    return None
