"""The CUDA extension `jax_natten._cuda`: imported once, its FFI targets registered with XLA.
Also the host emulation `jax_natten._emulation` (built with JAX_NATTEN_EMULATION=ON): the same
CUDA kernels run on the CPU, registered under the same target names for the "cpu" platform.

A CPU-only install has no extension; everything here then reports why CUDA cannot run instead
of failing at import.
"""

from __future__ import annotations

import importlib
import re

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


def unavailable_reason(platform: str | None = None, capability: tuple[int, int] | None = None) -> str | None:
    """Why the CUDA kernels cannot run on `platform` (default: JAX's default backend) on a GPU of
    compute capability `capability` (default: the first device's), or None."""
    reason = _reason(_cuda, _import_error, "the CUDA extension jax_natten._cuda is not installed; install from "
                     "source on a machine with nvcc", platform, "gpu", "not on a CUDA GPU")
    if reason is not None:
        return reason
    capability = capability or device_capability()
    if capability is not None and device_code(embedded_archs(), capability) is None:
        return (f"the extension has no code for this sm_{capability[0]}{capability[1]} GPU (built for "
                f"{embedded_archs()}); rebuild it with a JAX_NATTEN_CUDA_ARCHS entry for this GPU")
    return None


def fused_extension(platform: str = "CUDA"):
    """The module whose fused forward runs on the XLA `platform`: jax_natten._cuda ("CUDA") or
    the host emulation jax_natten._emulation ("cpu"); None when not installed."""
    return _emulation if platform == "cpu" else _cuda


def fused_head_dim_classes(platform: str = "CUDA") -> tuple[int, ...]:
    """The head-dim classes the fused forward of `platform` (`fused_extension`) was built with
    (empty without it)."""
    module = fused_extension(platform)
    return () if module is None else tuple(module.fused_head_dim_classes())


def unfused_instances(platform: str = "CUDA") -> frozenset[str]:
    """The unfused kernel instantiations the extension of `platform` (`fused_extension`) was built
    with, named `<implementation>_<operator>_<dtype pair>` (e.g. "gemm_pn_float16_f32w": PN of the
    gemm kernels on float16 tensors with float32 attention weights; CMakeLists.txt's UNFUSED_DTYPES),
    empty without it. A CUDA build with JAX_NATTEN_CUDA_UNFUSED=minimal has one pair per operator."""
    module = fused_extension(platform)
    return frozenset() if module is None else frozenset(module.unfused_instances())


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


def emulation_unavailable_reason(platform: str | None = None) -> str | None:
    """Why the host emulation of the CUDA kernels cannot run on `platform`, or None."""
    return _reason(_emulation, _emulation_import_error, "the host emulation jax_natten._emulation is not "
                   "installed; install from source with JAX_NATTEN_EMULATION=ON", platform, "cpu",
                   "not on the CPU, where the emulated kernels are registered")
