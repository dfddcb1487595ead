"""Which code of the extension a GPU runs (SASS or JIT-compiled PTX), what explain() says about
it, and, where the extension is built, that the architectures it reports are those in its binary."""

from __future__ import annotations

import importlib
import importlib.util
import os
import pathlib
import re
import shutil
import subprocess

import jax
import jax.numpy as jnp
import pytest

import jax_natten
from jax_natten import backends, cuda
from jax_natten.backends import unfused

DEFAULT_ARCHS = "80-real,90a-real,80-virtual"


@pytest.mark.parametrize("capability,expected", [
    ((8, 0), ("sass", "sm_80")),
    ((8, 6), ("sass", "sm_80")),       # sm_80 SASS runs on every 8.x
    ((8, 9), ("sass", "sm_80")),
    ((9, 0), ("sass", "sm_90a")),
    ((10, 0), ("ptx", "compute_80")),  # Blackwell: no SASS fits, the PTX is JIT-compiled
    ((10, 3), ("ptx", "compute_80")),
    ((12, 0), ("ptx", "compute_80")),
    ((7, 5), None),                    # older than every entry
])
def test_device_code_of_the_default_build(capability, expected):
    assert cuda.device_code(DEFAULT_ARCHS, capability) == expected


@pytest.mark.parametrize("archs,capability,expected", [
    ("80-real,90a-real", (10, 0), None),       # SASS only: nothing for a newer major version
    ("80-real,90a-real", (9, 0), ("sass", "sm_90a")),
    ("90a-real", (9, 1), None),                # "a" code runs on exactly 9.0
    ("90a-virtual", (10, 0), None),            # ... its PTX too
    ("80", (9, 0), ("ptx", "compute_80")),     # an entry without suffix embeds SASS and PTX
    ("80", (8, 7), ("sass", "sm_80")),
    ("100f-real", (10, 3), ("sass", "sm_100f")),
    ("100f-real", (12, 0), None),              # family code stays within its major version
    ("80-virtual,90-virtual", (10, 0), ("ptx", "compute_90")),  # the newest PTX that fits
    ("86-real", (8, 0), None),
])
def test_device_code_rules(archs, capability, expected):
    assert cuda.device_code(archs, capability) == expected


def test_device_code_rejects_unknown_entries():
    with pytest.raises(ValueError, match="'native'"):
        cuda.device_code("native", (9, 0))


class _FakeExtension:
    """Stands in for jax_natten._cuda on a machine without it: registers nothing."""

    def __init__(self, archs):
        self.archs = archs

    def cuda_archs(self):
        return self.archs

    def registrations(self):
        return {}

    def fused_head_dim_classes(self):
        return (32, 64, 128, 256)

    def unfused_instances(self):
        # The default build (CMake's JAX_NATTEN_CUDA_UNFUSED=all): every instantiation a backend calls.
        return {name for variant in ("naive", "gemm") for operator in ("attention", "qk", "av")
                for dtype in unfused.CUDA_DTYPES for name in unfused.needed_instances(variant, operator, dtype)}

    def fused_q_tile_rows(self):
        return 64

    def fused_kv_tile_rows(self, element_bytes):
        return (64, 64, 64, 32) if element_bytes == 2 else (64, 64, 32, 16)


def _explain_on_gpu(monkeypatch, archs, capability):
    monkeypatch.setattr(cuda, "_cuda", _FakeExtension(archs))
    monkeypatch.setattr(cuda, "device_capability", lambda device=None: capability)
    monkeypatch.setattr(backends, "default_platform", lambda: "gpu")
    q = jax.ShapeDtypeStruct((1, 16, 2, 8), jnp.float16)
    return jax_natten.explain(q, q, q, kernel_size=3)


def test_explain_notes_jit_compiled_ptx(monkeypatch):
    explanation = _explain_on_gpu(monkeypatch, DEFAULT_ARCHS, (10, 0))
    assert explanation.chosen == "fused"
    assert len(explanation.notes) == 1
    assert "compute_80 PTX" in explanation.notes[0] and "sm_100" in explanation.notes[0]
    assert "note: the CUDA kernels run from compute_80 PTX" in str(explanation)


def test_explain_has_no_note_when_sass_fits(monkeypatch):
    explanation = _explain_on_gpu(monkeypatch, DEFAULT_ARCHS, (9, 0))
    assert explanation.chosen == "fused" and explanation.notes == ()
    assert "PTX" not in str(explanation)


def test_gpu_without_fitting_code_is_a_reason(monkeypatch):
    explanation = _explain_on_gpu(monkeypatch, "80-real,90a-real", (12, 0))
    assert explanation.chosen == "reference"
    for name in ("fused", "gemm", "naive"):
        assert "no code for this sm_120 GPU" in explanation.reasons[name]
        assert "80-real,90a-real" in explanation.reasons[name]


def _cuobjdump():
    found = shutil.which("cuobjdump")
    if found:
        return found
    nvidia = importlib.util.find_spec("nvidia")
    for root in [] if nvidia is None else nvidia.submodule_search_locations:
        for candidate in pathlib.Path(root).glob("cu*/bin/cuobjdump"):
            return str(candidate)
    return None


def test_reported_archs_are_in_the_binary():
    """The extension's cuda_archs() against its fatbinary: the SASS (ELF) and PTX entries that
    cuobjdump lists. Runs wherever the extension is installed; CI builds it and then requires
    this test (JAX_NATTEN_REQUIRE_EXTENSION=1, with nvidia-cuda-cuobjdump installed)."""
    required = os.environ.get("JAX_NATTEN_REQUIRE_EXTENSION") == "1"
    try:
        module = importlib.import_module("jax_natten._cuda")
    except ImportError as error:
        if required:
            pytest.fail(f"JAX_NATTEN_REQUIRE_EXTENSION=1 but the extension does not import: {error}")
        pytest.skip(f"the extension is not installed: {error}")
    tool = _cuobjdump()
    if tool is None:
        if required:
            pytest.fail("JAX_NATTEN_REQUIRE_EXTENSION=1 but cuobjdump is not found (pip install nvidia-cuda-cuobjdump)")
        pytest.skip("cuobjdump is not found")
    listing = subprocess.run([tool, "--list-elf", "--list-ptx", module.__file__], capture_output=True, text=True,
                             check=True).stdout
    elf = set(re.findall(r"\.(sm_\d+[af]?)\.cubin", listing))
    ptx = set(re.findall(r"\.(sm_\d+[af]?)\.ptx", listing))
    want_elf, want_ptx = set(), set()
    for entry in module.cuda_archs().split(","):
        number, kind = re.fullmatch(r"(\d+[af]?)(-real|-virtual)?", entry).groups()
        if kind != "-virtual":
            want_elf.add(f"sm_{number}")
        if kind != "-real":
            want_ptx.add(f"sm_{number}")
    assert (elf, ptx) == (want_elf, want_ptx), listing


def test_gpu_capability_and_code(gpu):
    """On a GPU: JAX reports its compute capability, the extension has code for it (else the
    CUDA backends would not be usable), and explain's note agrees with that code's kind."""
    capability = cuda.device_capability()
    assert capability is not None and capability >= (8, 0)
    kind, _ = cuda.device_code(cuda.embedded_archs(), capability)
    note = cuda.jit_note("gpu")
    assert (note is not None) == (kind == "ptx")
