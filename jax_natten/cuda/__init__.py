"""The CUDA extension `jax_natten._cuda`: imported once, its FFI targets registered with XLA.

A CPU-only install has no extension; everything here then reports why CUDA cannot run instead
of failing at import.
"""

from __future__ import annotations

import importlib
import re

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
    capability = device_capability()
    if capability is not None and device_code(embedded_archs(), capability) is None:
        return (f"the extension has no code for this sm_{capability[0]}{capability[1]} GPU (built for "
                f"{embedded_archs()}); rebuild it with a JAX_NATTEN_CUDA_ARCHS entry for this GPU")
    return None


def embedded_archs() -> str | None:
    """The CMake CUDA architectures the extension was built for, e.g. "80-real,90a-real,80-virtual"
    (None without the extension)."""
    return None if _cuda is None else _cuda.cuda_archs()


def device_capability(device=None) -> tuple[int, int] | None:
    """(major, minor) compute capability of a CUDA device (default: the first one), or None when
    JAX does not report one."""
    device = device or jax.devices()[0]
    capability = getattr(device, "compute_capability", None)
    if not capability:
        return None
    major, minor = str(capability).split(".")
    return int(major), int(minor)


_ARCH_ENTRY = re.compile(r"(\d+)([af]?)(-real|-virtual)?")


def device_code(archs: str, capability: tuple[int, int]) -> tuple[str, str] | None:
    """What a GPU of compute capability `capability` runs from a build for the CMake CUDA
    architectures `archs` (comma-separated): ("sass", "sm_90a") for compiled code it loads
    directly, ("ptx", "compute_80") for PTX the driver JIT-compiles, or None when neither fits.

    CUDA's rules: SASS for sm_XY runs on X.Z for Z >= Y (the "a" variants only on X.Y, the "f"
    family variants on X.Z, Z >= Y); PTX for compute_XY compiles on any later capability (the
    "a"/"f" variants under the same restrictions as their SASS). An entry without a suffix embeds both.
    """
    device = capability[0] * 10 + capability[1]
    sass, ptx = [], []
    for entry in archs.split(","):
        match = _ARCH_ENTRY.fullmatch(entry.strip())
        if match is None:
            raise ValueError(f"CUDA architecture entry {entry!r}: expected NN[a|f][-real|-virtual]")
        number, variant, kind = int(match[1]), match[2], match[3]
        same_family = number // 10 == capability[0] and number <= device
        if variant == "a":
            sass_fits = ptx_fits = number == device
        elif variant == "f":
            sass_fits = ptx_fits = same_family
        else:
            sass_fits, ptx_fits = same_family, number <= device
        if sass_fits and kind != "-virtual":
            sass.append((number, f"sm_{number}{variant}"))
        if ptx_fits and kind != "-real":
            ptx.append((number, f"compute_{number}{variant}"))
    if sass:
        return "sass", max(sass)[1]
    if ptx:
        return "ptx", max(ptx)[1]
    return None


def jit_note(platform: str | None = None) -> str | None:
    """A note when this GPU runs the kernels from JIT-compiled PTX (no SASS for it in the
    extension), else None."""
    if _cuda is None or (platform or jax.default_backend()) != "gpu":
        return None
    capability = device_capability()
    code = None if capability is None else device_code(embedded_archs(), capability)
    if code is None or code[0] != "ptx":
        return None
    return (f"the CUDA kernels run from {code[1]} PTX, JIT-compiled by the driver for this "
            f"sm_{capability[0]}{capability[1]} GPU (the extension was built for {embedded_archs()}; "
            "no SASS fits): the first call of each kernel compiles it")
