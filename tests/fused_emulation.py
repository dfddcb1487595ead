"""Builds the C++ host-emulation programs of the fused forward (tests/cpp/fused_emu_test.cc) for
the tests: g++ over the kernel headers, CuTe (the nvidia-cutlass wheel) and the CUDA headers
(CuTe includes cuda_runtime_api.h). A build is cached by the hash of its sources and flags, so
the pytest workers share it. `mutate` builds from a copy of cuda/include with one edit.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import pathlib
import shutil
import subprocess
import tempfile

REPO = pathlib.Path(__file__).resolve().parent.parent
INCLUDE = REPO / "cuda" / "include"
TEST_SOURCE = REPO / "tests" / "cpp" / "fused_emu_test.cc"
SHADOW_RUNTIME = REPO / "cuda" / "emu" / "shadow_smem.cc"
CACHE = pathlib.Path(os.environ.get("JAX_NATTEN_EMU_CACHE", tempfile.gettempdir())) / "jax_natten_fused_emu"

# The smem race shadow: GCC's TSan instrumentation linked with shadow_smem.cc instead of libtsan.
SHADOW_FLAGS = ("-fsanitize=thread", "--param=tsan-instrument-func-entry-exit=0", "-DJAX_NATTEN_SHADOW_SMEM")
TSAN_FLAGS = ("-fsanitize=thread",)
ONE_CLASS = ("-DJAX_NATTEN_FUSED_ONE_CLASS",)


def cuda_include():
    """The CUDA toolkit's include directory, or None."""
    home = os.environ.get("CUDA_HOME")
    if home is None and shutil.which("nvcc"):
        dry = subprocess.run(["nvcc", "-dryrun", "-x", "cu", "/dev/null"], capture_output=True, text=True)
        home = next((line.split("=", 1)[1] for line in dry.stderr.splitlines() if line.startswith("#$ TOP=")), None)
    if home is None or not (pathlib.Path(home) / "include" / "cuda_runtime_api.h").exists():
        return None
    return pathlib.Path(home) / "include"


def cutlass_include():
    import cutlass_library
    return pathlib.Path(cutlass_library.__file__).parent / "source" / "include"


def unavailable_reason():
    if shutil.which("g++") is None:
        return "no g++"
    try:
        cutlass_include()
    except ImportError:
        return "no nvidia-cutlass (CuTe headers)"
    if cuda_include() is None:
        return "no CUDA headers (nvcc or CUDA_HOME)"
    return None


def _digest(include: pathlib.Path, flags) -> str:
    h = hashlib.sha256(" ".join(flags).encode())
    for path in sorted(include.rglob("*")) + [TEST_SOURCE, SHADOW_RUNTIME, pathlib.Path(__file__)]:
        if path.is_file():
            h.update(str(path.relative_to(path.parents[1] if path.is_relative_to(include) else REPO)).encode())
            h.update(path.read_bytes())
    return h.hexdigest()[:16]


def build(flags=(), include: pathlib.Path = INCLUDE, optimize="-O2") -> pathlib.Path:
    """The test program built with `flags` (cached)."""
    flags = (optimize, *flags)
    binary = CACHE / f"fused_emu_test-{_digest(include, flags)}"
    if binary.exists():
        return binary
    CACHE.mkdir(parents=True, exist_ok=True)
    # One build per binary: a pytest worker that wants it while another builds it waits (the build
    # of every class takes minutes of a core).
    with open(binary.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not binary.exists():
            _compile(binary, flags, include)
    return binary


def _compile(binary: pathlib.Path, flags, include: pathlib.Path):
    cuda = cuda_include()
    partial = binary.with_suffix(f".{os.getpid()}.partial")
    common = ["g++", "-std=c++20", "-Wno-deprecated-declarations", "-pthread", f"-I{include}",
              f"-I{cutlass_include()}", f"-I{cuda}", f"-I{cuda / 'cccl'}"]
    if "-DJAX_NATTEN_SHADOW_SMEM" in flags:
        # Instrumented by TSan's compiler pass, linked with the shadow runtime instead of libtsan.
        objects = [partial.with_suffix(".test.o"), partial.with_suffix(".shadow.o")]
        commands = [common + [*flags, "-c", str(TEST_SOURCE), "-o", str(objects[0])],
                    common + ["-O2", "-c", str(SHADOW_RUNTIME), "-o", str(objects[1])],
                    ["g++", "-pthread", *map(str, objects), "-o", str(partial)]]
    else:
        commands = [common + [*flags, str(TEST_SOURCE), "-o", str(partial)]]
    for command in commands:
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"build failed: {' '.join(command)}\n{done.stderr[-4000:]}")
    os.replace(partial, binary)  # atomic: a worker that checks without the lock sees the whole file or none


def mutate(edit_file: str, old: str, new: str, directory: pathlib.Path) -> pathlib.Path:
    """A copy of cuda/include under `directory` with `old` replaced by `new` (exactly once) in
    `edit_file` (relative to cuda/include/jax_natten)."""
    copy = directory / "include"
    shutil.copytree(INCLUDE, copy)
    target = copy / "jax_natten" / edit_file
    text = target.read_text()
    if text.count(old) != 1:
        raise AssertionError(f"mutant: {old!r} occurs {text.count(old)} times in {edit_file}")
    target.write_text(text.replace(old, new))
    return copy


def run(binary: pathlib.Path, cases: int, seed: int = 1, lanes: str = "fibers", timeout=1800, backward=False,
        deterministic=False):
    """Runs the program over `cases` random cases per dtype (with `backward`, the backward's float16
    cases over its head-dim classes, `deterministic`: in its deterministic mode); lanes "big" runs
    the >2^31-element case."""
    env = dict(os.environ, TSAN_OPTIONS="halt_on_error=1 exitcode=66")
    mode = ["backward-deterministic" if deterministic else "backward"] if backward else []
    command = [str(binary), "big"] if lanes == "big" else [str(binary), *mode, str(cases), str(seed), lanes]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
