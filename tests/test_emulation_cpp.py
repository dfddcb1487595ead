"""The C++ tests of the host emulation (tests/cpp/), built here with the host compiler: the
execution contexts (exec_test.cc) and the GEMM kernels against the naive ones (kernels_test.cc),
plain, under ThreadSanitizer (thread backend) and the smem race shadow (fiber backend), and the
mutants that must be caught: a dropped barrier (TSan, the shadow), a wrong MMA fragment layout and
a dropped cross-lane reduction (wrong results), a missing cp.async wait (poisoned shared memory);
and the one AddressSanitizer + UBSan build, the FFI layer's fuzz harness (ffi_fuzz_test.cc: the
host handlers called with random operands and attributes, mostly malformed, for
JAX_NATTEN_FFI_FUZZ_SECONDS, default 30; the valid calls run every naive and GEMM kernel on the
thread backend into buffers of exactly their size).

Needs g++, the CUDA headers (cuda_fp16.h; found next to nvcc or under CUDA_HOME) and the CUTLASS
headers of the nvidia-cutlass wheel. Without them the tests skip, unless
JAX_NATTEN_REQUIRE_EMULATION=1 (CI), which makes them fail instead.
"""

from __future__ import annotations

import fcntl
import os
import pathlib
import shutil
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
CPP = ROOT / "tests" / "cpp"


def _cuda_include():
    for home in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH")):
        if home and (pathlib.Path(home) / "include" / "cuda_fp16.h").exists():
            return pathlib.Path(home) / "include"
    nvcc = shutil.which("nvcc")
    if nvcc:
        top = subprocess.run([nvcc, "-dryrun", "-x", "cu", "/dev/null"], capture_output=True, text=True).stderr
        for line in top.splitlines():
            if line.startswith("#$ TOP="):
                include = pathlib.Path(line.split("=", 1)[1].strip()) / "include"
                if (include / "cuda_fp16.h").exists():
                    return include
    default = pathlib.Path("/usr/local/cuda/include")
    return default if (default / "cuda_fp16.h").exists() else None


def _flags():
    """Compiler flags, or the reason there are none."""
    if shutil.which("g++") is None:
        return None, "no g++"
    cuda = _cuda_include()
    if cuda is None:
        return None, "no CUDA headers (set CUDA_HOME)"
    try:
        import cutlass_library
    except ImportError:
        return None, "the nvidia-cutlass wheel is not installed"
    cutlass = pathlib.Path(cutlass_library.__file__).parent / "source" / "include"
    import jax.ffi

    return ["g++", "-std=c++17", "-Wall", "-Wno-unknown-pragmas", "-Werror", "-pthread", f"-I{ROOT / 'cuda' / 'include'}",
            f"-isystem{cutlass}", f"-isystem{cuda}", f"-isystem{cuda / 'cccl'}", f"-isystem{jax.ffi.include_dir()}"], None


FLAGS, WHY_NOT = _flags()
# GCC's TSan instrumentation linked with the shadow runtime instead of libtsan (exec/shadow_smem.h).
SHADOW = ["-O2", "-fsanitize=thread", "--param=tsan-instrument-func-entry-exit=0", "-DJAX_NATTEN_SHADOW_SMEM"]
BUILDS = {
    "plain": ["-O2"],
    "tsan": ["-O1", "-g", "-fsanitize=thread"],
    "asan": ["-O1", "-g", "-fsanitize=address,undefined", "-fno-sanitize-recover=undefined"],
    "shadow": SHADOW,
}


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    """build(test, variant) -> tests/cpp/<test>.cc built as `variant`. Binaries go to a directory
    shared by the pytest-xdist workers, each built once under a file lock."""
    if FLAGS is None:
        if os.environ.get("JAX_NATTEN_REQUIRE_EMULATION") == "1":
            pytest.fail(f"JAX_NATTEN_REQUIRE_EMULATION=1 but the C++ emulation tests cannot build: {WHY_NOT}")
        pytest.skip(WHY_NOT)
    out = tmp_path_factory.getbasetemp().parent / "emulation_cpp"
    out.mkdir(exist_ok=True)

    def compile_once(binary, commands):
        with open(f"{binary}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not binary.exists():
                for command in commands:
                    subprocess.run(command, check=True)
        return binary

    def get(test, variant):
        binary = out / f"{test}_{variant}"
        source = str(CPP / f"{test}.cc")
        if variant != "shadow":
            return compile_once(binary, [[*FLAGS, *BUILDS[variant], source, "-o", str(binary)]])
        runtime = compile_once(out / "shadow_smem.o", [[*FLAGS, "-O2", "-c", str(ROOT / "cuda" / "emu" / "shadow_smem.cc"),
                                                         "-o", str(out / "shadow_smem.o")]])
        compiled = out / f"{test}_shadow.o"
        return compile_once(binary, [[*FLAGS, *SHADOW, "-c", source, "-o", str(compiled)],
                                     [*FLAGS, str(compiled), str(runtime), "-o", str(binary)]])

    return get


def run(binary, *args, env=None):
    return subprocess.run([str(binary), *args], capture_output=True, text=True, timeout=600,
                          env={**os.environ, **(env or {})})


@pytest.mark.slow
def test_exec_contexts(build):
    result = run(build("exec_test", "plain"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "all passed" in result.stdout


@pytest.mark.parametrize("mode,message", [
    ("returned", "lanes returned while others wait"),
    ("deadlock", "deadlock"),
    ("diverge", "at different warp instructions"),
])
def test_fiber_backend_reports_broken_ctas(build, mode, message):
    result = run(build("exec_test", "plain"), mode)
    assert result.returncode != 0 and message in result.stderr, result.stdout + result.stderr


@pytest.mark.slow
def test_gemm_kernels_match_naive_fibers(build):
    result = run(build("kernels_test", "plain"), "fibers")
    assert result.returncode == 0 and "all passed" in result.stdout, result.stdout + result.stderr


@pytest.mark.slow
def test_thread_backend_under_thread_sanitizer(build):
    for test in ("exec_test", "kernels_test"):
        result = run(build(test, "tsan"), "threads", env={"TSAN_OPTIONS": "halt_on_error=1"})
        assert result.returncode == 0 and "all passed" in result.stdout, result.stdout + result.stderr[-4000:]
        assert "ThreadSanitizer" not in result.stderr


@pytest.mark.slow
def test_shadow_is_clean_on_the_real_kernels(build):
    result = run(build("kernels_test", "shadow"), "fibers")
    assert result.returncode == 0 and "all passed" in result.stdout, result.stdout + result.stderr[-4000:]
    assert "smem race" not in result.stderr


def test_dropped_barrier_is_reported_by_the_shadow(build):
    result = run(build("kernels_test", "shadow"), "drop-barrier")
    assert result.returncode != 0 and "smem race" in result.stderr, result.stdout + result.stderr[-4000:]


@pytest.mark.slow
def test_dropped_barrier_is_reported_by_thread_sanitizer(build):
    result = run(build("kernels_test", "tsan"), "drop-barrier", "threads", env={"TSAN_OPTIONS": "halt_on_error=1"})
    assert result.returncode != 0 and "data race" in result.stderr, result.stdout + result.stderr[-4000:]


def test_wrong_fragment_layout_gives_wrong_results(build):
    result = run(build("kernels_test", "plain"), "wrong-layout")
    assert result.returncode == 1 and "wrong-layout: rel err" in result.stdout, result.stdout + result.stderr


FUZZ_SECONDS = os.environ.get("JAX_NATTEN_FFI_FUZZ_SECONDS", "30")


@pytest.mark.slow
def test_ffi_layer_fuzzed_under_address_sanitizer(build):
    result = run(build("ffi_fuzz_test", "asan"), FUZZ_SECONDS, "20261202", env={"JAX_NATTEN_EMULATION_LANES": "threads"})
    assert result.returncode == 0 and "all passed" in result.stdout, result.stdout + result.stderr[-4000:]
    counts = dict(line.rsplit(": ", 1) for line in result.stdout.splitlines() if ": " in line)
    for op in ("pn", "nn", "in"):
        for variant in ("naive", "gemm"):
            # Both outcomes reached for every handler: kernels ran on valid calls, bad ones were refused.
            assert int(counts.get(f"{op}_{variant} ran", 0)) > 0, result.stdout
            assert int(counts.get(f"{op}_{variant} rejected", 0)) > 0, result.stdout
    print(result.stdout)
