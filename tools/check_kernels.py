"""Static gate over the compiled CUDA kernels: registers, stack and spills, local memory and the
instruction classes of every kernel in the SASS, checked against the budgets in `BUDGETS`.

    python tools/check_kernels.py [--build DIR] [--archs "80-real;90a-real"] [--fused-head-dims 64]
                                  [--unfused minimal|all]
                                  [--built DIR | --binary FILE ...] [--ptxas-log BUILD_OUTPUT]
                                  [--markdown FILE] [--json FILE] [--compare OLD.json]

By default it builds the kernels library (`jax_natten_kernels`: cuda/ffi/*.cu and the generated
instantiation units; the fused forward for the given head-dim classes, by default one, which
compiles every template, and the unfused kernels' minimal set, each template in one dtype pair,
as CI builds them) with CMake in DIR (build/kernel-gate) for the given architectures with
`-Xptxas -v`, reads ptxas' spill report from the build output, then the resources and SASS of
every kernel from the objects with cuobjdump and nvdisasm (the nvidia-cuda-cuobjdump and
nvidia-cuda-nvdisasm wheels, or a CUDA toolkit). `--built DIR` inspects the kernel objects of an
existing CMake build instead (CI: the one `pip install` made with `-Xptxas -v`), `--binary` a
built file (an extension .so, an object or a cubin); `--ptxas-log` is then that build's output,
which must report every kernel (a build from clean); without it spills show only as stack and
local-memory instructions. Prints the table,
optionally writes it (Markdown) and the full per-kernel record with every opcode count (JSON);
`--compare` prints what changed against an earlier JSON record. Exit status 1 on any violation,
including a kernel that no row of `BUDGETS` covers.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import fnmatch
import json
import pathlib
import re
import shlex
import shutil
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent


@dataclasses.dataclass(frozen=True)
class Budget:
    """What every kernel whose demangled name matches `pattern` (fnmatch), compiled for an arch
    matching `arch`, must satisfy."""

    pattern: str
    registers: int  # at most this many registers per thread
    expect: tuple[str, ...] = ()  # SASS instruction classes (opcode prefixes) that must appear
    stack_bytes: int = 0  # stack frame allowed; with 0 no local-memory instruction either
    spill_bytes: int = 0  # ptxas' spill stores + loads allowed
    arch: str = "*"
    why: str = ""


# The first matching row applies: exceptions before the rule of their family. New kernels add a
# row; a row that allows a stack frame or spills records a known defect at its current size, so
# that it cannot grow unnoticed.
BUDGETS = (
    Budget("jax_natten::gemm::pn_kernel<float, float, *>", arch="sm_80", registers=168, stack_bytes=24,
           spill_bytes=76, expect=("HMMA",),
           why="KNOWN DEFECT: float32 PN (3xTF32 split operands) takes 168 registers and spills on sm_80 "
               "(122 registers, no spill on sm_90a); grew from 16 B stack / 56 spill bytes with the "
               "execution-context kernels (issue 10)"),
    Budget("jax_natten::gemm::*_kernel<*", registers=128, expect=("HMMA",),
           why="tensor-core tile GEMMs (mma.sync; fragments read with LDS, gathers with LDG + STS: "
               "no ldmatrix or cp.async in this design); 128 threads, <= 128 registers for 4 CTAs/SM"),
    Budget("jax_natten::naive::*_kernel<*", registers=64, stack_bytes=176,
           why="KNOWN DEFECT of the baseline: per-axis parameter arrays indexed at run time live on "
               "the stack (local memory, not spills)"),
    Budget("jax_natten::fused::forward_kernel<*", registers=255, expect=("HMMA", "LDSM", "LDGSTS"),
           why="fused forward (benchmarks/fused_static.py gates each instantiation too): mma.sync, Q/K "
               "fragments through ldmatrix (float32: on 32-bit elements), V^T through ldmatrix.trans in "
               "float16/bfloat16 and plain LDS in float32 (no 32-bit transpose), cp.async gathers; "
               "__launch_bounds__ allows the full file"),
    Budget("jax_natten::fused::backward_kernel<*", registers=255, expect=("HMMA", "LDSM", "LDGSTS"),
           why="fused backward: the KV-tile kernel on 8 warps, 4 x 2 over every product, so dK/dV take 64 "
               "float32 registers a thread at head dim 128, P and dS through shared memory (32-bit stores, "
               "ldmatrix and ldmatrix.trans reads); the deterministic mode's Q-tile dQ kernel on the "
               "forward's 4 warps: 0 spills at head dims 64 and 128 on sm_80 and sm_90a (CI's build: 64)"),
    Budget("jax_natten::*window_bounds_kernel", registers=32,
           why="test kernel: the C++ neighborhood rule per position"),
)

# Instruction classes shown in the table (opcode prefixes).
SHOWN_CLASSES = ("HMMA", "LDSM", "LDGSTS", "LDS", "STS", "LDG", "STG", "BAR", "SHFL")
LOCAL_MEMORY = ("LDL", "STL")


def tool(name):
    """A CUDA binary tool: from the nvidia wheels of this Python, else from PATH."""
    for wheel_dir in ("cu13", "cuda_cuobjdump", "cuda_nvdisasm"):
        for site in map(pathlib.Path, sys.path):
            candidate = site / "nvidia" / wheel_dir / "bin" / name
            if candidate.is_file():
                return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise SystemExit(f"{name} not found: pip install nvidia-cuda-cuobjdump nvidia-cuda-nvdisasm")
    return found


def run(command, **kwargs):
    return subprocess.run(command, check=True, capture_output=True, text=True, **kwargs).stdout


def build(build_dir: pathlib.Path, archs: str, fused_head_dims: str, unfused: str) -> str:
    """Builds the kernels library with ptxas' verbose report; returns the build's output."""
    nanobind_dir = run([sys.executable, "-m", "nanobind", "--cmake_dir"]).strip()
    configure = ["cmake", "-S", str(ROOT), "-B", str(build_dir), "-G", "Ninja", "-DCMAKE_BUILD_TYPE=Release",
                 "-DJAX_NATTEN_CUDA=ON", f"-DJAX_NATTEN_CUDA_ARCHS={archs}", "-DCMAKE_CUDA_FLAGS=-Xptxas=-v",
                 f"-DJAX_NATTEN_FUSED_HEAD_DIMS={fused_head_dims}", f"-DJAX_NATTEN_CUDA_UNFUSED={unfused}",
                 f"-DPython_EXECUTABLE={sys.executable}", f"-Dnanobind_DIR={nanobind_dir}"]
    run(configure)
    # Rebuild from scratch: ptxas reports only for what it compiles.
    run(["cmake", "--build", str(build_dir), "--target", "clean"])
    result = subprocess.run(["cmake", "--build", str(build_dir), "--target", "jax_natten_kernels"],
                            capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(f"kernel build failed:\n{result.stdout}\n{result.stderr}")
    return result.stdout + result.stderr


def kernel_objects(build_dir: pathlib.Path):
    """The objects of the kernels library in a CMake build directory."""
    objects = sorted(build_dir.glob("CMakeFiles/jax_natten_kernels.dir/**/*.o"))
    if not objects:
        raise SystemExit(f"no kernel objects under {build_dir}")
    return objects


def ptxas_spills(log: str) -> dict:
    """{(mangled name, arch): spill bytes (stores + loads)} from ptxas' `-v` report."""
    spills = {}
    pattern = re.compile(r"Compiling entry function '(\S+)' for '(sm_\w+)'\s*\n.*?Function properties for \S+\s*\n"
                         r"\s*\d+ bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
    for name, arch, stores, loads in pattern.findall(log):
        spills[(name, arch)] = int(stores) + int(loads)
    return spills


def demangle(names):
    names = list(names)
    if not names or shutil.which("c++filt") is None:
        return {n: n for n in names}
    out = run(["c++filt"], input="\n".join(names) + "\n").splitlines()
    return dict(zip(names, out))


def cubins(binaries, workdir: pathlib.Path):
    """Every cubin inside `binaries` (extracted with `cuobjdump -xelf all`), with its arch."""
    found = []
    for n, binary in enumerate(binaries):
        if binary.suffix == ".cubin":
            found.append(binary)
            continue
        target = workdir / str(n)
        target.mkdir()
        run([tool("cuobjdump"), "-xelf", "all", str(binary.resolve())], cwd=target)
        found += sorted(target.glob("*.cubin"))
    return [(c, re.search(r"sm_\w+?(?=\.|$)", c.name).group(0)) for c in found]


def parse_resources(usage: str, arch: str):
    """{mangled kernel: record} from `cuobjdump -res-usage` of one cubin."""
    return {name: {"arch": arch, "registers": int(regs), "stack": int(stack), "shared": int(shared),
                   "local": int(local), "opcodes": collections.Counter()}
            for name, regs, stack, shared, local in re.findall(
                r"Function (\S+?):\s*REG:(\d+) STACK:(\d+) SHARED:(\d+) LOCAL:(\d+)", usage)}


def count_opcodes(sass: str, records):
    """Adds the opcode counts of each kernel's `.text` section in `nvdisasm -c` output to `records`."""
    current = None
    for line in sass.splitlines():
        section = re.match(r"\s*\.section\s+\.text\.([^,\s]+)", line)
        if section:
            current = records.get(section.group(1))
            continue
        instruction = re.match(r"\s*/\*[0-9a-f]{4,}\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_]*)", line)
        if instruction and current is not None:
            current["opcodes"][instruction.group(1)] += 1


def kernel_records(cubin: pathlib.Path, arch: str):
    """Per kernel of one cubin: resources (cuobjdump -res-usage) and opcode counts (nvdisasm)."""
    records = parse_resources(run([tool("cuobjdump"), "-res-usage", str(cubin)]), arch)
    count_opcodes(run([tool("nvdisasm"), "-c", str(cubin)]), records)
    return records


def count(opcodes, prefix):
    return sum(n for op, n in opcodes.items() if op.startswith(prefix))


def check(kernel, record, spills):
    """The budget row that applies and the list of its violations; `spills` is ptxas' spill bytes,
    None where its report has no entry for the kernel."""
    name = short_name(kernel)
    budget = next((b for b in BUDGETS if fnmatch.fnmatchcase(name, b.pattern)
                   and fnmatch.fnmatchcase(record["arch"], b.arch)), None)
    if budget is None:
        return None, ["no row of BUDGETS covers this kernel"]
    bad = []
    if spills is None:
        bad.append("not in the ptxas report (the gate needs the output of a build from clean)")
    if record["registers"] > budget.registers:
        bad.append(f"{record['registers']} registers > {budget.registers}")
    if spills is not None and spills > budget.spill_bytes:
        bad.append(f"{spills} spill bytes > {budget.spill_bytes}")
    if record["stack"] > budget.stack_bytes:
        bad.append(f"{record['stack']} B stack > {budget.stack_bytes}")
    if record["local"]:
        bad.append(f"{record['local']} B local memory")
    local_ops = sum(count(record["opcodes"], op) for op in LOCAL_MEMORY)
    if budget.stack_bytes == 0 and local_ops:
        bad.append(f"{local_ops} local-memory instructions (LDL/STL)")
    for op in budget.expect:
        if not count(record["opcodes"], op):
            bad.append(f"no {op}")
    return budget, bad


def short_name(kernel):
    """`void jax_natten::gemm::pn_kernel<float, __half>(...)` without the return type and the
    parameter list (the last top-level parenthesized group: `(anonymous namespace)` may come
    earlier)."""
    kernel = kernel.removeprefix("void ")
    if not kernel.endswith(")"):
        return kernel
    depth = 0
    for i in range(len(kernel) - 1, -1, -1):
        depth += {")": 1, "(": -1}.get(kernel[i], 0)
        if depth == 0:
            return kernel[:i]
    return kernel


def gate(binaries, spill_log):
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        records = []
        for cubin, arch in cubins(binaries, pathlib.Path(workdir)):
            records += kernel_records(cubin, arch).items()
    names = demangle(sorted({name for name, _ in records}))
    for mangled, record in records:
        kernel = names[mangled]
        # Without a ptxas report spills show only as stack and local memory (checked below).
        spills = spill_log.get((mangled, record["arch"])) if spill_log is not None else 0
        budget, bad = check(kernel, record, spills)
        rows.append({"kernel": short_name(kernel), "mangled": mangled, **record,
                     "opcodes": dict(sorted(record["opcodes"].items())),
                     "instructions": sum(record["opcodes"].values()),
                     "spill_bytes": spills if spill_log is not None else None, "budget_registers": budget.registers if budget else None,
                     "budget_stack": budget.stack_bytes if budget else None,
                     "expect": list(budget.expect) if budget else [], "violations": bad})
    rows.sort(key=lambda r: (r["kernel"], r["arch"]))
    return rows


def provenance():
    """The commit (with `+dirty` for uncommitted changes) and the nvcc release measured."""
    commit = run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"]).strip()
    if run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"]).strip():
        commit += "+dirty"
    nvcc = shutil.which("nvcc")
    release = re.search(r"release [\d.]+", run([nvcc, "--version"])).group(0) if nvcc else "no nvcc"
    return f"commit {commit}, nvcc {release}"


def markdown(rows, source, command):
    head = (["kernel", "arch", "regs (budget)", "stack (budget)", "spill B", "LDL/STL", "instr"]
            + list(SHOWN_CLASSES) + ["status"])
    lines = [f"Kernel gate ({source}): `{command}`", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        local_ops = sum(count(r["opcodes"], op) for op in LOCAL_MEMORY)
        cells = [f"`{r['kernel']}`", r["arch"], f"{r['registers']} ({r['budget_registers']})",
                 f"{r['stack']} ({r['budget_stack']})", "-" if r["spill_bytes"] is None else r["spill_bytes"],
                 local_ops, r["instructions"]]
        cells += [count(r["opcodes"], op) for op in SHOWN_CLASSES]
        cells.append("ok" if not r["violations"] else "FAIL: " + "; ".join(r["violations"]))
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    lines += ["", "Budgets (`BUDGETS` in tools/check_kernels.py; the first matching row applies):", "",
              "| pattern | arch | registers | stack B | spill B | expect | why |", "|---|---|---|---|---|---|---|"]
    for b in BUDGETS:
        lines.append(f"| `{b.pattern}` | {b.arch} | {b.registers} | {b.stack_bytes} | {b.spill_bytes} | "
                     f"{', '.join(b.expect) or '-'} | {b.why} |")
    return "\n".join(lines) + "\n"


def compare(old_rows, rows):
    """Registers, stack and opcode counts that differ between two records, per (kernel, arch)."""
    old = {(r["kernel"], r["arch"]): r for r in old_rows}
    new = {(r["kernel"], r["arch"]): r for r in rows}
    lines = []
    for key in sorted(old.keys() | new.keys()):
        if key not in new or key not in old:
            lines.append(f"{key[0]} {key[1]}: {'removed' if key not in new else 'added'}")
            continue
        a, b = old[key], new[key]
        changes = [f"{field} {a[field]} -> {b[field]}" for field in ("registers", "stack", "shared", "instructions")
                   if a[field] != b[field]]
        ops = sorted(set(a["opcodes"]) | set(b["opcodes"]))
        changes += [f"{op} {a['opcodes'].get(op, 0)} -> {b['opcodes'].get(op, 0)}" for op in ops
                    if a["opcodes"].get(op, 0) != b["opcodes"].get(op, 0)]
        if changes:
            lines.append(f"{key[0]} {key[1]}: " + ", ".join(changes))
    return "\n".join(lines) or "no differences"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--build", type=pathlib.Path, default=ROOT / "build" / "kernel-gate",
                        help="CMake build directory for the kernels library (default build/kernel-gate)")
    parser.add_argument("--archs", default="80-real;90a-real", help="CUDA architectures (CMake syntax)")
    parser.add_argument("--fused-head-dims", default="64",
                        help="head-dim classes of the fused forward to build (CMake list; one compiles every template)")
    parser.add_argument("--unfused", choices=("minimal", "all"), default="minimal",
                        help="unfused kernels to build (CMake's JAX_NATTEN_CUDA_UNFUSED; minimal compiles every template)")
    parser.add_argument("--built", type=pathlib.Path,
                        help="inspect the kernel objects of this existing CMake build directory instead of building")
    parser.add_argument("--binary", type=pathlib.Path, action="append",
                        help="inspect this built file (.so, .o, .a or .cubin) instead of building")
    parser.add_argument("--ptxas-log", type=pathlib.Path,
                        help="with --built or --binary: the output of the build that made it with -Xptxas -v "
                             "(spill report)")
    parser.add_argument("--markdown", type=pathlib.Path, help="also write the table here")
    parser.add_argument("--json", type=pathlib.Path, help="also write the per-kernel record here")
    parser.add_argument("--compare", type=pathlib.Path, help="an earlier --json record to compare with")
    args = parser.parse_args(argv)

    if args.binary or args.built:
        binaries = args.binary or kernel_objects(args.built)
        spill_log = ptxas_spills(args.ptxas_log.read_text(errors="replace")) if args.ptxas_log else None
    else:
        spill_log = ptxas_spills(build(args.build, args.archs, args.fused_head_dims, args.unfused))
        binaries = kernel_objects(args.build)
    rows = gate(binaries, spill_log)
    if not rows:
        raise SystemExit("no kernels found")
    source = provenance()
    table = markdown(rows, source, shlex.join(["python", "tools/check_kernels.py", *sys.argv[1:]]))
    print(table, end="")
    if args.markdown:
        args.markdown.write_text(table)
    if args.compare:  # read before --json may overwrite the same file
        old = json.loads(args.compare.read_text())
        print(f"compared with {args.compare} ({old['source']}):")
        print(compare(old["kernels"], rows))
    if args.json:
        args.json.write_text(json.dumps({"source": source, "kernels": rows}, indent=1) + "\n")
    failed = [r for r in rows if r["violations"]]
    print(f"{len(rows)} kernels x archs, {len(failed)} failing")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
