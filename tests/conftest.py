"""Shared test setup: float64 enabled (every array in the tests has an explicit dtype), 8 virtual
CPU devices for the sharding tests (set before any backend starts; other tests use device 0),
the GPU gate used by the CUDA tests and the NATTEN gate used by the conversion tests."""

from __future__ import annotations

import math
import os
import re

import jax
import pytest

# XLA's CPU backend compiles with LLVM at optimization level 0 in the tests: they check numbers,
# not speed, and most of their time is compilation (a sweep configuration's programs compile in
# about 60 % of the default level's time). Tests that time something run a subprocess with the
# flags as they were (USER_XLA_FLAGS). Read when the CPU backend starts, which is after this.
USER_XLA_FLAGS = os.environ.get("XLA_FLAGS", "")
os.environ["XLA_FLAGS"] = f"{USER_XLA_FLAGS} --xla_backend_optimization_level=0".strip()

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_num_cpu_devices", 8)
# One source frame per operation in the compiled programs' locations, not the whole traceback:
# under jax 0.12.0.1, XLA's CPU call inlining (PropagateCallMetadata) prepends each call's stack
# frames to those of every instruction it inlines, at a cost that grows steeply with the depth of
# the Python stack at trace time. Under pytest's deep stack the sharded GQA gradient of
# test_sharding.py (scans inside custom_partitioning calls) compiled for more than 10 minutes
# (py-spy: StackFrames::IsPrefix); as a script it compiles in 2.3 s with one frame, 3.8 s with 2,
# over 150 s with 8. jax 0.12.1 compiles it in about a second with the full tracebacks.
jax.config.update("jax_include_full_tracebacks_in_locations", False)


def gpu_unavailable_reason():
    """Why the CUDA tests cannot run here, or None when they can."""
    if jax.default_backend() != "gpu":
        return f"JAX's default backend is {jax.default_backend()!r}, not 'gpu'"
    import jax_natten.cuda

    return jax_natten.cuda.unavailable_reason()


def require_gpu():
    """Skip the calling test without a usable GPU and CUDA extension; fail instead when
    `JAX_NATTEN_REQUIRE_GPU=1` (a GPU CI job must not pass by skipping)."""
    reason = gpu_unavailable_reason()
    if reason is None:
        return
    if os.environ.get("JAX_NATTEN_REQUIRE_GPU") == "1":
        pytest.fail(f"JAX_NATTEN_REQUIRE_GPU=1 but the GPU tests cannot run: {reason}")
    pytest.skip(reason)


@pytest.fixture
def gpu():
    """Use as a test argument to make a test GPU-only (see `require_gpu`)."""
    require_gpu()


def require_emulation():
    """Skip the calling test without the host emulation of the CUDA kernels
    (jax_natten._emulation); fail instead when `JAX_NATTEN_REQUIRE_EMULATION=1` (CI builds it)."""
    import jax_natten.cuda

    reason = jax_natten.cuda.emulation_unavailable_reason("cpu")
    if reason is None:
        return
    if os.environ.get("JAX_NATTEN_REQUIRE_EMULATION") == "1":
        pytest.fail(f"JAX_NATTEN_REQUIRE_EMULATION=1 but the emulated kernels cannot run: {reason}")
    pytest.skip(reason)


def import_natten():
    """NATTEN and torch (for comparisons with NATTEN's own modules): skips the calling test when
    they do not import; fails instead when `JAX_NATTEN_REQUIRE_NATTEN=1` (the CI installs them,
    so there the comparisons must run)."""
    try:
        import natten
        import torch
    except ImportError as error:
        if os.environ.get("JAX_NATTEN_REQUIRE_NATTEN") == "1":
            pytest.fail(f"JAX_NATTEN_REQUIRE_NATTEN=1 but NATTEN or torch does not import: {error}")
        pytest.skip(f"NATTEN or torch does not import: {error}")
    return natten, torch


# The C++ tests (the kernels' source compiled with g++ under the host emulation, sanitizers,
# mutants) do not depend on Python or jax; CI runs them in one of its environments and sets
# JAX_NATTEN_CPP_TESTS_ELSEWHERE=1 in the others.
CPP_TEST_FILES = ("test_emulation_cpp.py", "test_fused_emulated.py")


def pytest_collection_modifyitems(config, items):
    # The slow tests first (a stable sort keeps the order within each part). pytest-xdist deals
    # each worker a first chunk of consecutive tests, then the rest as workers free up: the long
    # tests are all dealt early and the run ends on short ones, not on one worker finishing a
    # two-minute test alone.
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
    if os.environ.get("JAX_NATTEN_CPP_TESTS_ELSEWHERE") != "1":
        return
    marker = pytest.mark.skip(reason="C++ tests: CI runs them in its py311 environment")
    for item in items:
        if item.path.name in CPP_TEST_FILES:
            item.add_marker(marker)


def largest_hlo_array(hlo: str) -> int:
    """Elements of the largest floating-point array that the HLO text `hlo` names (operands,
    results and temporaries alike): the check that a compiled program holds no tensor of size
    tokens x window."""
    shapes = re.findall(r"\b(?:f16|bf16|f32|f64)\[([\d,]*)\]", hlo)
    return max(math.prod(int(n) for n in dims.split(",") if n) for dims in shapes)
