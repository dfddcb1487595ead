"""The CUDA extension `jax_natten._cuda`: imported once, its FFI targets registered with XLA.
Also the host emulation `jax_natten._emulation` (built with JAX_NATTEN_EMULATION=ON): the same
CUDA kernels run on the CPU, registered under the same target names for the "cpu" platform.

A CPU-only install has no extension; everything here then reports why CUDA cannot run instead
of failing at import.
"""

from __future__ import annotations

import importlib

import jax

TARGET_PREFIX = "jax_natten_"



def _import_and_register(module: str, platform: str):
    """The extension `module` with its targets registered for `platform`, and the import error."""
    try:
        extension = importlib.import_module(module)
    except ImportError as error:
        return None, error
    for name, capsule in extension.registrations().items():
        jax.ffi.register_ffi_target(TARGET_PREFIX + name, capsule, platform=platform)
    return extension, None


_cuda, _import_error = _import_and_register("jax_natten._cuda", "CUDA")
_emulation, _emulation_import_error = _import_and_register("jax_natten._emulation", "cpu")


def _names(extension) -> tuple[str, ...]:
    return () if extension is None else tuple(sorted(TARGET_PREFIX + name for name in extension.registrations()))


def _reason(extension, error, install_hint, platform, wanted, wanted_text):
    if extension is None:
        return f"{install_hint} ({error})"
    platform = platform or jax.default_backend()
    return None if platform == wanted else f"JAX runs on {platform!r}, {wanted_text}"


def extension():
    """The imported extension module, or None."""
    return _cuda


def target_names() -> tuple[str, ...]:
    """The registered CUDA FFI targets (empty without the extension)."""
    return _names(_cuda)


def emulated_target_names() -> tuple[str, ...]:
    """The FFI targets registered for the CPU platform by the host emulation (empty without it)."""
    return _names(_emulation)


def unavailable_reason(platform: str | None = None) -> str | None:
    """Why the CUDA kernels cannot run on `platform` (default: JAX's default backend), or None."""
    return _reason(_cuda, _import_error, "the CUDA extension jax_natten._cuda is not installed; install from "
                   "source on a machine with nvcc", platform, "gpu", "not on a CUDA GPU")


def emulation_unavailable_reason(platform: str | None = None) -> str | None:
    """Why the host emulation of the CUDA kernels cannot run on `platform`, or None."""
    return _reason(_emulation, _emulation_import_error, "the host emulation jax_natten._emulation is not "
                   "installed; install from source with JAX_NATTEN_EMULATION=ON", platform, "cpu",
                   "not on the CPU, where the emulated kernels are registered")
